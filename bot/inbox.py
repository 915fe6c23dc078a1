"""The durable inbox: a Redis Stream read through a consumer group.

Ingress calls `enqueue`, which in one Lua script sets the message's dedupe key (SET NX EX) and
appends it to the stream (XADD), so a platform retry of a message we already accepted is
recognized, and a message is never marked seen without being stored. Workers read new entries
with XREADGROUP, acknowledge them with XACK once the reply is sent, and claim entries that
another consumer left pending longer than `claim_idle_s` with XAUTOCLAIM (that consumer
crashed). An entry delivered `max_deliveries` times moves to the dead-letter stream.

Keys (all under the configured prefix): `<p>:inbox` (stream), `<p>:seen:<message id>`
(dedupe), `<p>:attempts` (hash: entry id -> deliveries), `<p>:dlq` (dead-letter stream).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from bot import tracing
from bot.errors import BacklogFull
from bot.keys import Keys
from bot.messages import Message
from bot.redis_pool import Coalesced, run_script

GROUP = "engine"

# KEYS: dedupe key, stream, reply-wait marker ("" for none), conversation FIFO
# ARGV: dedupe TTL s, message JSON, marker TTL s, max backlog (0: unlimited)
_ENQUEUE = """
if tonumber(ARGV[4]) > 0 and redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[4]) then
  return -1
end
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  if KEYS[3] ~= '' then
    redis.call('SET', KEYS[3], '1', 'EX', ARGV[3])
  end
  local id
  if ARGV[5] ~= '' then
    id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[2], 'tp', ARGV[5])
  else
    id = redis.call('XADD', KEYS[2], '*', 'm', ARGV[2])
  end
  redis.call('RPUSH', KEYS[4], id)
  return id
end
return false
"""


# KEYS: stream, attempts hash; ARGV: group, consumer, entry id -> {} when the entry is gone,
# else {id, fields, attempt}: the entry taken over by the consumer and its run counted
_FETCH = """
local rows = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if #rows == 0 then return {} end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return {rows[1][1], rows[1][2], redis.call('HINCRBY', KEYS[2], ARGV[3], 1)}
"""


@dataclass(frozen=True)
class DeadLetter:
    """A message moved to the dead-letter stream, with why and after how many attempts."""

    id: str
    message: Message | None
    raw: str
    error: str
    attempts: int


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to a worker. `attempt` counts the runs started, this one
    included (from 1); 0 while the delivery is not counted yet (read or claimed, not run)."""

    entry_id: str
    message: Message | None  # None when the entry is not a valid message
    attempt: int
    raw: str
    traceparent: str = ""  # W3C trace context of the ingress that stored it (tracing on)


class Inbox:
    """Producer and consumer side of the inbox stream.

    Args:
        dedupe_ttl_s: how long a message id is remembered; longer than any platform retries.
        coalesced: the process's shared round trips (bot/redis_pool.py), for `enqueue` and
            `fetch`.
    """

    def __init__(self, redis: Redis, prefix: str, *, dedupe_ttl_s: int,
                 max_backlog: int = 0, coalesced: Coalesced | None = None) -> None:
        self._redis = redis
        self._coalesced = coalesced
        self._prefix = prefix
        self._keys = Keys(prefix)
        self.stream = self._keys.inbox()
        self.dlq = self._keys.dead_letters()
        self._attempts = self._keys.attempts()
        self._dedupe_ttl_s = dedupe_ttl_s
        self._max_backlog = max_backlog
        self._enqueue_script = redis.register_script(_ENQUEUE)
        self._fetch_script = redis.register_script(_FETCH)

    async def ensure_group(self) -> None:
        """Create the stream and consumer group if missing (idempotent)."""
        try:
            await self._redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, message: Message, *, wait_marker: str = "",
                      wait_ttl_s: float = 0) -> str | None:
        """Store a message; return its entry id, or None if its id was seen before.

        Args:
            wait_marker: a key set (for `wait_ttl_s` seconds) together with the append, and
                only then, for a caller that will wait for the reply (see `ReplyRendezvous`).

        Raises:
            BacklogFull: the inbox holds `max_backlog` entries already (nothing was stored).
            redis.exceptions.RedisError: Redis is unreachable or refused the write (nothing
                was stored).
        """
        with tracing.span(f"publish {self.stream}", "producer", {
                "messaging.system": "redis", "messaging.operation.type": "send",
                "messaging.destination.name": self.stream,
                "switchboard.message.id": message.id}) as span:
            entry = await run_script(
                self._enqueue_script,
                [self._keys.seen(message.id), self.stream, wait_marker,
                 self._keys.conversation_fifo(message.conversation.key)],
                [self._dedupe_ttl_s, message.to_json(), max(int(wait_ttl_s), 1),
                 self._max_backlog, tracing.traceparent()], self._coalesced)
            if entry and entry != -1:
                tracing.set_attributes(span, {"messaging.message.id": _text(entry)})
        if entry == -1:
            raise BacklogFull(f"inbox backlog reached BOT_MAX_BACKLOG={self._max_backlog}")
        return _text(entry) if entry else None

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """New entries for `consumer` (blocks up to `block_ms`, 0: does not block; empty list on
        timeout), not yet counted as attempts (`attempt` 0: see `count_attempt`)."""
        response: Any = await self._redis.xreadgroup(GROUP, consumer, {self.stream: ">"},
                                                     count=count, block=block_ms or None)
        return self.read_reply(response)

    async def claim_stale(self, consumer: str, min_idle_ms: int, count: int,
                          cursor: str = "0-0") -> tuple[str, list[Delivery]]:
        """Take over entries pending on any consumer for at least `min_idle_ms`.

        XAUTOCLAIM scans a bounded part of the pending list per call; pass the returned cursor
        to the next call to go on scanning ("0-0" when the scan wrapped around). The deliveries
        are not counted as attempts (`attempt` 0: see `count_attempt`).
        """
        result: Any = await self._redis.xautoclaim(self.stream, GROUP, consumer,
                                                   min_idle_time=min_idle_ms, start_id=cursor,
                                                   count=count)
        if not result:
            return "0-0", []
        deliveries = [_delivery(_text(entry_id), fields, 0)
                      for entry_id, fields in result[1] if fields is not None]
        return _text(result[0]), deliveries

    async def keep(self, consumer: str, entry_id: str) -> None:
        """Reset an entry's idle time while its consumer still works on it, so that no other
        worker claims it (XCLAIM ... JUSTID does not count as a delivery)."""
        await self._redis.xclaim(self.stream, GROUP, consumer, min_idle_time=0,
                                 message_ids=[entry_id], justid=True)

    async def count_attempt(self, entry_id: str) -> int:
        """Count one run of the entry, just before it starts; return the runs so far (from 1).

        Only runs count, not deliveries: an entry read or claimed by a worker that then leaves
        it to the conversation's current holder was not tried, and a count taken at delivery
        would show another worker's untried delivery as an attempt."""
        return int(await self._redis.hincrby(self._attempts, entry_id, 1))

    def queue_count_attempt(self, pipe: Pipeline, entry_id: str) -> None:
        """Queue `count_attempt` on `pipe`; its reply is the runs so far."""
        pipe.hincrby(self._attempts, entry_id, 1)

    async def uncount(self, entry_id: str) -> None:
        """Do not count the current run against `max_deliveries` (a transient failure of
        an outside service, not of the message)."""
        await self._redis.hincrby(self._attempts, entry_id, -1)

    async def ack(self, entry_id: str) -> None:
        """Acknowledge and delete a processed entry."""
        async with self._redis.pipeline(transaction=True) as pipe:
            self.queue_ack(pipe, entry_id)
            await pipe.execute()

    def queue_ack(self, pipe: Pipeline, entry_id: str) -> None:
        """Queue `ack` on `pipe` (a transaction, to keep it atomic): three commands."""
        pipe.xack(self.stream, GROUP, entry_id)
        pipe.xdel(self.stream, entry_id)
        pipe.hdel(self._attempts, entry_id)

    def queue_read(self, pipe: Pipeline, consumer: str, count: int) -> None:
        """Queue a `read` that does not block on `pipe`; pass its reply to `read_reply`."""
        pipe.xreadgroup(GROUP, consumer, {self.stream: ">"}, count=count)

    def read_reply(self, response: Any) -> list[Delivery]:
        """The deliveries of a queued `read`, from its reply."""
        entries = response[0][1] if response else []
        return [_delivery(_text(entry_id), fields, 0) for entry_id, fields in entries]

    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        """Move an entry to the dead-letter stream with the error, and acknowledge it."""
        await self._redis.xadd(self.dlq, {"m": delivery.raw, "error": error[:2000],
                                          "entry_id": delivery.entry_id,
                                          "attempts": str(delivery.attempt)})
        await self.ack(delivery.entry_id)

    async def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        """The oldest `count` dead-lettered messages."""
        rows: Any = await self._redis.xrange(self.dlq, count=count)
        out = []
        for entry_id, fields in rows:
            raw = _text(fields.get(b"m", b""))
            try:
                message: Message | None = Message.from_json(raw)
            except (ValueError, KeyError, TypeError):
                message = None
            out.append(DeadLetter(_text(entry_id), message, raw,
                                  _text(fields.get(b"error", b"")),
                                  int(fields.get(b"attempts", b"0") or 0)))
        return out

    async def requeue(self, dead_letter_id: str) -> bool:
        """Put a dead-lettered message back on the inbox (its dedupe key stays: this is the
        same message, retried on purpose) and remove it from the dead-letter stream. False if
        there is no such dead letter."""
        rows: Any = await self._redis.xrange(self.dlq, dead_letter_id, dead_letter_id)
        if not rows:
            return False
        raw = rows[0][1].get(b"m", b"")
        try:
            conversation = Message.from_json(raw).conversation.key
        except (ValueError, KeyError, TypeError):
            conversation = "-"
        entry_id = await self._redis.xadd(self.stream, {"m": raw})
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self._keys.conversation_fifo(conversation), entry_id)
            pipe.xdel(self.dlq, dead_letter_id)
            await pipe.execute()
        return True

    async def retry_dead_letters(self, ids: Sequence[str] | None = None
                                 ) -> tuple[int, list[str]]:
        """Requeue the named dead letters, or every one when `ids` is None (`bot dlq retry`
        and the admin console). Returns (how many were requeued, the ids that were not
        found)."""
        wanted = [d.id for d in await self.dead_letters(1_000_000)] if ids is None else ids
        missing = [i for i in wanted if not await self.requeue(i)]
        return len(wanted) - len(missing), missing

    async def dead_letter_count(self) -> int:
        """How many messages are on the dead-letter stream."""
        return int(await self._redis.xlen(self.dlq))

    async def exists(self, entry_id: str) -> bool:
        """True while the entry is in the stream (not yet finished)."""
        return bool(await self._redis.xrange(self.stream, entry_id, entry_id))

    async def fetch(self, consumer: str, entry_id: str) -> Delivery | None:
        """Take an entry over for `consumer` (the worker holding its conversation, about to run
        it) and count the run (`count_attempt`), in one round trip; None if the entry no longer
        exists (already finished)."""
        got: Any = await run_script(self._fetch_script, [self.stream, self._attempts],
                                    [GROUP, consumer, entry_id], self._coalesced)
        return _parse(got[0], got[1], got[2]) if got else None

    async def backlog(self) -> int:
        """Entries in the stream not yet acknowledged (pending or unread)."""
        return int(await self._redis.xlen(self.stream))


def _delivery(entry_id: str, fields: dict[Any, Any], attempt: int) -> Delivery:
    raw = _field(fields, "m")
    try:
        message: Message | None = Message.from_json(raw)
    except (ValueError, KeyError, TypeError):
        message = None
    return Delivery(entry_id, message, attempt, raw, _field(fields, "tp"))


def _parse(entry_id: bytes | str, fields: list[bytes | str], attempt: int) -> Delivery:
    """A delivery from a script's reply: the entry's flat field list [name, value, ...]."""
    return _delivery(_text(entry_id), dict(zip(fields[::2], fields[1::2], strict=True)),
                     int(attempt))


def _field(fields: dict[Any, Any], name: str) -> str:
    """One field of an entry ("" when absent): `m` the message JSON, `tp` its traceparent."""
    return _text(fields.get(name.encode()) or fields.get(name) or b"")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
