"""Hand a reply to a caller that waits for it, across processes, through Redis.

Used by the console adapter (`bot ask`, `bot chat`) and by `POST /webhooks/{name}?wait=true`.
The rule: a reply goes to a waiting caller only while that caller is really there; otherwise
the sender uses its fallback (the webhook callback URL), and a caller that asks again for the
same message gets the kept reply.

- The caller's interest marker (`<p>:wait:<id>`) is set by the inbox in the same atomic step
  that stores the message (or by `attach` for a repeated message). It is a lease of `lease_s`
  seconds that the waiting caller renews while it waits, so the marker of a caller that hung
  up or whose process died (SIGKILL) expires on its own.
- `wait` blocks in short `BLPOP` steps (`step_s`, well under the Redis client's socket
  timeout), renewing the lease and asking `gone()` (did the HTTP caller hang up?) between
  steps. Giving up (timeout, hang-up, cancellation) withdraws the marker.
- `deliver` keeps the reply (`<p>:result:<id>`, for `result_ttl_s`), and, in the same atomic
  step, consumes the marker and pushes the reply onto `<p>:reply:<id>`. The waiter that takes
  it answers on `<p>:taken:<id>`: "1" when its caller is still there, "0" when the caller hung
  up in that very moment (it hands the reply back). `deliver` returns True only on "1"; on "0",
  or when nobody answered within `pickup_timeout_s` (the waiter died between renewing and
  taking, or is stalled), it returns False, so the sender's fallback runs where a failure is
  retried, in the worker, not in a request handler that has lost its caller. Giving up is
  atomic: it takes the reply back from the box, or, if a waiter took it without answering yet,
  marks the hand-off abandoned (`<p>:abandoned:<id>`) so that waiter's late "1" is refused and
  its caller gets no second copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.keys import Keys
from bot.messages import Reply
from bot.redis_pool import Coalesced, run_script

# KEYS: result, marker, box, taken, abandoned; ARGV: reply JSON, result ttl s, box ttl s,
# "1" to replace a kept reply -> 1 handed to a waiter
_DELIVER = """
if ARGV[4] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2], 'NX')
end
if redis.call('DEL', KEYS[2]) == 1 then
  redis.call('DEL', KEYS[4], KEYS[5])
  redis.call('RPUSH', KEYS[3], ARGV[1])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  return 1
end
return 0
"""

# the waiter's answer. KEYS: taken, abandoned; ARGV: "1" (caller there) or "0", ttl s
# -> 1 recorded; 0 the deliverer gave up on this hand-off already
_ANSWER = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# the deliverer gives up waiting. KEYS: box, taken, abandoned; ARGV: ttl s
# -> "back" (taken back from the box), the waiter's late answer, or "abandoned"
_RECLAIM = """
if redis.call('LPOP', KEYS[1]) then return 'back' end
local answer = redis.call('LPOP', KEYS[2])
if answer then return answer end
redis.call('SET', KEYS[3], '1', 'EX', ARGV[1])
return 'abandoned'
"""

#: How long a pickup answer (`<p>:taken:<id>`) and an untaken reply box live, seconds.
_HANDOFF_TTL_S = 300

# KEYS: result, marker; ARGV: lease ms -> the kept reply, or nil after setting the marker
_ATTACH = """
local kept = redis.call('GET', KEYS[1])
if kept then return kept end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
return false
"""


class ReplyRendezvous:
    """Per-message reply hand-off. Keys: `<p>:wait:<id>` (marker), `<p>:reply:<id>` (list
    holding the reply JSON for the waiter), `<p>:taken:<id>` (list: the waiter's pickup answer),
    `<p>:result:<id>` (the reply, kept for repeats).

    Args:
        result_ttl_s: how long a delivered reply is kept for a caller that asks again.
        lease_s: lifetime of a waiter's marker without renewal.
        step_s: longest single blocking call; must stay below the client's socket timeout.
        pickup_timeout_s: how long `deliver` gives a waiter to take a handed-over reply.
        coalesced: the process's shared round trips (bot/redis_pool.py), for `deliver`.
    """

    def __init__(self, redis: Redis, prefix: str, *, result_ttl_s: int = 24 * 3600,
                 lease_s: float = 10.0, step_s: float = 1.0,
                 pickup_timeout_s: float = 3.0, coalesced: Coalesced | None = None) -> None:
        self._redis = redis
        self._coalesced = coalesced
        self._prefix = prefix
        self._keys = Keys(prefix)
        self.result_ttl_s = result_ttl_s
        self.lease_s = lease_s
        self._step_s = step_s
        self._pickup_timeout_s = pickup_timeout_s
        self._deliver = redis.register_script(_DELIVER)
        self._attach = redis.register_script(_ATTACH)
        self._answer = redis.register_script(_ANSWER)
        self._reclaim = redis.register_script(_RECLAIM)

    def marker_key(self, message_id: str) -> str:
        """The key that says a caller waits for this message's reply (set by the inbox with a
        lifetime of `lease_s`)."""
        return self._keys.reply_wait(message_id)

    def _box(self, message_id: str) -> str:
        return self._keys.reply_handoff(message_id)

    def _result(self, message_id: str) -> str:
        return self._keys.reply_result(message_id)

    def _taken(self, message_id: str) -> str:
        return self._keys.reply_taken(message_id)

    def _abandoned(self, message_id: str) -> str:
        return self._keys.reply_abandoned(message_id)

    async def result(self, message_id: str) -> Reply | None:
        """The reply delivered for this message, if it is still kept."""
        kept = await self._redis.get(self._result(message_id))
        return Reply.from_json(kept) if kept is not None else None

    async def attach(self, message_id: str) -> Reply | None:
        """For a repeated message: its kept reply, or None after registering as its waiter
        (then call `wait`)."""
        kept = await self._attach(keys=[self._result(message_id), self.marker_key(message_id)],
                                  args=[int(self.lease_s * 1000)])
        return Reply.from_json(kept) if kept is not None else None

    async def wait(self, message_id: str, timeout_s: float,
                   gone: Callable[[], bool] | None = None) -> Reply | None:
        """Wait up to `timeout_s` for the reply; None if it did not come, or the caller is
        `gone()` (its marker is then withdrawn, or a reply taken in that moment is handed
        back, so the reply takes the fallback).

        Raises:
            redis.exceptions.RedisError: Redis failed (the marker then lapses by itself).
        """
        box, marker = self._box(message_id), self.marker_key(message_id)
        deadline = time.monotonic() + timeout_s
        lease_ms = int(self.lease_s * 1000)
        try:
            while True:
                remaining = deadline - time.monotonic()
                step = min(self._step_s, remaining)
                # BLPOP's timeout has a resolution of 10 ms in Redis 6+; at least that
                item = await self._redis.blpop([box], timeout=max(step, 0.01))
                if item is not None:
                    return await self._picked_up(message_id, item[1], gone)
                if remaining <= self._step_s or (gone is not None and gone()):
                    return await self._give_up(message_id, gone)
                await self._redis.pexpire(marker, lease_ms, xx=True)
        except asyncio.CancelledError:
            with contextlib.suppress(RedisError, OSError):
                await asyncio.shield(self._redis.delete(marker))
            raise

    async def _give_up(self, message_id: str, gone: Callable[[], bool] | None
                       ) -> Reply | None:
        if await self._redis.delete(self.marker_key(message_id)):
            return None  # withdrawn: the sender will use its fallback
        # deliver() consumed the marker just now: the reply is in the box (or was taken back)
        item: bytes | str | None = await self._redis.lpop(  # type: ignore[assignment]
            self._box(message_id))
        return await self._picked_up(message_id, item, gone) if item is not None else None

    async def _picked_up(self, message_id: str, item: bytes | str,
                         gone: Callable[[], bool] | None) -> Reply | None:
        """Tell `deliver` whether the caller is still there to be given the reply taken."""
        here = gone is None or not gone()
        recorded = await self._answer(
            keys=[self._taken(message_id), self._abandoned(message_id)],
            args=["1" if here else "0", _HANDOFF_TTL_S])
        if not int(recorded):  # too late: the sender has given it to the fallback already
            return None
        return Reply.from_json(item) if here else None

    async def deliver(self, reply: Reply, *, replace: bool = True) -> bool:
        """Keep the reply and give it to its waiting caller; True only when a waiter took it
        for a caller still there. False if nobody waits, the waiter's caller hung up as it
        took it, or nobody took it within `pickup_timeout_s`: the sender's fallback runs.

        Args:
            replace: False keeps a reply already kept for this message (a notice about the
                message must not replace its answer).

        Raises:
            redis.exceptions.RedisError: Redis failed; nothing was handed over.
        """
        message_id = reply.message_id
        box, taken = self._box(message_id), self._taken(message_id)
        abandoned = self._abandoned(message_id)
        handed = await run_script(
            self._deliver,
            [self._result(message_id), self.marker_key(message_id), box, taken, abandoned],
            [reply.to_json(), self.result_ttl_s, _HANDOFF_TTL_S, "1" if replace else "0"],
            self._coalesced)
        if not int(handed):
            return False
        # BLPOP's timeout stays below the client's socket timeout (pickup_timeout_s: 3 s)
        answer = await self._redis.blpop([taken], timeout=self._pickup_timeout_s)
        if answer is not None:
            return _text(answer[1]) == "1"
        # no answer in time: take the reply back, or take the late answer, or abandon it
        outcome = await self._reclaim(keys=[box, taken, abandoned], args=[_HANDOFF_TTL_S])
        return _text(outcome) == "1"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
