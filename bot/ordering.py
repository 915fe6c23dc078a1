"""Per-conversation ordering across any number of workers (docs/adr/0002-conversation-order.md).

Each conversation has a FIFO of inbox entry ids in Redis (`<p>:conv:<conversation key>`),
appended by the enqueue script in the same atomic step as the XADD, so its order is the
arrival order. A worker handles a conversation only while it holds the conversation's lock
(`<p>:lock:<conversation key>`, SET NX PX with a random token, refreshed while it works), and
then always processes the conversation's head first, whichever entry woke it. Every change to
the FIFO is fenced by the token: a worker whose lock expired (it stalled or died) can no longer
pop, and the next holder starts again from the head. Releasing the lock is atomic with checking
that the FIFO is empty, so an entry appended meanwhile is never orphaned.

A holder keeps a conversation for a bounded turn only (a number of messages or a time slice,
bot/worker.py): when its turn ends with work left, it releases the lock and appends the
conversation to the ready list (`<p>:ready`) in one atomic step; workers take conversations
from that list between reads of new inbox entries, so a conversation whose senders answer
every reply at once cannot keep the workers from everyone else's messages.
"""

from __future__ import annotations

import uuid
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

from bot.keys import Keys
from bot.redis_pool import Coalesced, run_script

# KEYS: lock, fifo; ARGV: token, ttl ms -> {1, head id or ''} if the caller now holds the
# lock, else {0}
_ACQUIRE = """
local held = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
if not held and redis.call('GET', KEYS[1]) == ARGV[1] then
  held = redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not held then return {0} end
return {1, redis.call('LINDEX', KEYS[2], 0) or ''}
"""

# KEYS: lock; ARGV: token, ttl ms -> 1 if still held (and extended)
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lock, fifo; ARGV: token, entry id, release when empty (0/1) -> {status, new head id
# or ''}: status -1 not the holder, 0 the head was another entry, 1 removed, 2 removed and the
# lock released (the fifo is empty and the caller asked for it)
_POP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, ''} end
local status = 0
if redis.call('LINDEX', KEYS[2], 0) == ARGV[2] then
  redis.call('LPOP', KEYS[2])
  status = 1
end
local head = redis.call('LINDEX', KEYS[2], 0)
if not head and status == 1 and ARGV[3] == '1' then
  redis.call('DEL', KEYS[1])
  status = 2
end
return {status, head or ''}
"""

# KEYS: lock, fifo; ARGV: token -> 1 released (fifo empty), 0 work left, -1 not the holder
_RELEASE_IF_EMPTY = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('LLEN', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: lock, fifo, ready; ARGV: token, conversation key -> 1 released (fifo empty),
# 0 released and queued on the ready list (work left), -1 not the holder
_YIELD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
if redis.call('LLEN', KEYS[2]) > 0 then
  redis.call('RPUSH', KEYS[3], ARGV[2])
  return 0
end
return 1
"""

# KEYS: lock; ARGV: token -> release regardless of the fifo (after a failure)
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class _Unknown:
    """The type of `UNKNOWN`: a lease that has not read its conversation's head."""


UNKNOWN = _Unknown()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ConversationLease:
    """One worker's hold on one conversation. Create with `ConversationOrder.acquire`."""

    def __init__(self, order: ConversationOrder, conversation_key: str, token: str,
                 head: str | _Unknown | None = UNKNOWN) -> None:
        self._order = order
        self.conversation_key = conversation_key
        self.token = token
        #: the head as of the last script that read it (acquire, pop), while no other writer can
        #: change it: only the holder removes entries, and appends change no non-empty head
        self._head = head
        #: True once `pop` released the lease (the conversation had nothing left)
        self.released = False

    async def head(self) -> str | None:
        """The oldest entry id of the conversation not yet finished, or None.

        Served from the last acquire or pop when they saw one (no round trip); an empty FIFO
        seen then is reported once, and read again afterwards (an entry may have arrived)."""
        known, self._head = self._head, UNKNOWN
        if isinstance(known, str):
            self._head = known
            return known
        if known is None:
            return None
        value = await self._order.redis.lindex(self._order.fifo_key(self.conversation_key), 0)
        return value.decode() if isinstance(value, bytes) else value

    async def refresh(self) -> bool:
        """Extend the lease; False if it was lost (expired and possibly taken over)."""
        return bool(await run_script(self._order.refresh_script,
                                     [self._order.lock_key(self.conversation_key)],
                                     [self.token, self._order.ttl_ms]))

    async def pop(self, entry_id: str, *, release_when_empty: bool = False) -> bool:
        """Remove `entry_id` from the head once it is finished, and learn the next head in the
        same round trip. With `release_when_empty`, a FIFO left empty also releases the lease
        (`released` turns True): nothing is left to do. Raises LeaseLost if the lease is no
        longer ours; False if the head was already another entry."""
        return self._popped(await run_script(self._order.pop_script, self._pop_keys(),
                                             self._pop_args(entry_id, release_when_empty)))

    def queue_pop(self, pipe: Pipeline, entry_id: str, *, release_when_empty: bool) -> None:
        """Queue `pop` on `pipe`, to go in one round trip with the caller's other commands;
        pass its reply to `popped`."""
        pipe.evalsha(self._order.pop_script.sha, 2, *self._pop_keys(),
                     *self._pop_args(entry_id, release_when_empty))

    async def popped(self, reply: Any, entry_id: str, *, release_when_empty: bool) -> bool:
        """The result of a queued `pop`, from its reply in the pipeline's results (run with
        `raise_on_error=False`); a script the server does not have (NOSCRIPT: it restarted
        empty) is run again on its own. Raises as `pop` does, or the reply's error."""
        if isinstance(reply, NoScriptError):
            return await self.pop(entry_id, release_when_empty=release_when_empty)
        if isinstance(reply, Exception):
            raise reply
        return self._popped(reply)

    def _pop_keys(self) -> list[str]:
        return [self._order.lock_key(self.conversation_key),
                self._order.fifo_key(self.conversation_key)]

    def _pop_args(self, entry_id: str, release_when_empty: bool) -> list[str]:
        return [self.token, entry_id, "1" if release_when_empty else "0"]

    def _popped(self, reply: Any) -> bool:
        status, head = int(reply[0]), reply[1]
        if status == -1:
            raise LeaseLost(self.conversation_key)
        self._head = _text(head) or None
        self.released = status == 2
        return status >= 1

    async def release_if_done(self) -> bool:
        """Release the lease if the conversation has nothing left; False if work remains.
        Raises LeaseLost if the lease is no longer ours."""
        result = int(await run_script(
            self._order.release_if_empty_script,
            [self._order.lock_key(self.conversation_key),
             self._order.fifo_key(self.conversation_key)], [self.token]))
        if result == -1:
            raise LeaseLost(self.conversation_key)
        return result == 1

    async def end_turn(self) -> bool:
        """Release the lease at the end of a turn; if work is left, queue the conversation on
        the ready list for the next free worker. True if nothing was left. Raises LeaseLost if
        the lease is no longer ours."""
        result = int(await run_script(
            self._order.yield_script,
            [self._order.lock_key(self.conversation_key),
             self._order.fifo_key(self.conversation_key), self._order.ready_key],
            [self.token, self.conversation_key]))
        if result == -1:
            raise LeaseLost(self.conversation_key)
        return result == 1

    async def release(self) -> None:
        """Give the conversation up (after a failure: the head stays for the next holder)."""
        await run_script(self._order.release_script,
                         [self._order.lock_key(self.conversation_key)], [self.token])


class LeaseLost(Exception):
    """The conversation lock expired and may belong to another worker now."""


class ConversationOrder:
    """Keys and scripts of the per-conversation FIFOs and locks.

    Args:
        ttl_ms: lock lifetime without refresh; a dead holder blocks its conversation at most
            this long.
        coalesced: the process's shared round trips (bot/redis_pool.py), for `acquire`.
    """

    def __init__(self, redis: Redis, prefix: str, *, ttl_ms: int,
                 coalesced: Coalesced | None = None) -> None:
        self.redis = redis
        self._coalesced = coalesced
        self._prefix = prefix
        self.ttl_ms = ttl_ms
        self.acquire_script = redis.register_script(_ACQUIRE)
        self.refresh_script = redis.register_script(_REFRESH)
        self.pop_script = redis.register_script(_POP)
        self.release_if_empty_script = redis.register_script(_RELEASE_IF_EMPTY)
        self.release_script = redis.register_script(_RELEASE)
        self.yield_script = redis.register_script(_YIELD)
        self._keys = Keys(prefix)
        self.ready_key = self._keys.ready()

    def fifo_key(self, conversation_key: str) -> str:
        """The Redis list holding a conversation's unfinished inbox entry ids, oldest first."""
        return self._keys.conversation_fifo(conversation_key)

    def lock_key(self, conversation_key: str) -> str:
        return self._keys.conversation_lock(conversation_key)

    async def next_ready(self) -> str | None:
        """A conversation whose holder ended its turn with work left (oldest first), or None.
        The caller then tries `acquire`; a stale entry (drained meanwhile) is harmless."""
        value: bytes | str | None = await self.redis.lpop(self.ready_key)  # type: ignore[assignment]
        return value.decode() if isinstance(value, bytes) else value

    def queue_next_ready(self, pipe: Pipeline) -> None:
        """Queue `next_ready` on `pipe`; its reply is the conversation key (bytes) or None."""
        pipe.lpop(self.ready_key)

    async def acquire(self, conversation_key: str) -> ConversationLease | None:
        """The conversation's lease, or None while another worker holds it."""
        token = uuid.uuid4().hex
        got = await run_script(
            self.acquire_script,
            [self.lock_key(conversation_key), self.fifo_key(conversation_key)],
            [token, self.ttl_ms], self._coalesced)
        if not int(got[0]):
            return None
        return ConversationLease(self, conversation_key, token, _text(got[1]) or None)
