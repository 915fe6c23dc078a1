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

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bot.messages import Message

GROUP = "engine"

_ENQUEUE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], '*', 'm', ARGV[2])
end
return false
"""


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to a worker. `attempt` counts deliveries, from 1."""

    entry_id: str
    message: Message | None  # None when the entry is not a valid message
    attempt: int
    raw: str


class Inbox:
    """Producer and consumer side of the inbox stream.

    Args:
        dedupe_ttl_s: how long a message id is remembered; longer than any platform retries.
    """

    def __init__(self, redis: Redis, prefix: str, *, dedupe_ttl_s: int) -> None:
        self._redis = redis
        self.stream = f"{prefix}:inbox"
        self.dlq = f"{prefix}:dlq"
        self._seen = f"{prefix}:seen:"
        self._attempts = f"{prefix}:attempts"
        self._dedupe_ttl_s = dedupe_ttl_s
        self._enqueue_script = redis.register_script(_ENQUEUE)

    async def ensure_group(self) -> None:
        """Create the stream and consumer group if missing (idempotent)."""
        try:
            await self._redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, message: Message) -> str | None:
        """Store a message; return its entry id, or None if its id was seen before.

        Raises:
            redis.exceptions.ConnectionError: Redis is unreachable (nothing was stored).
        """
        entry = await self._enqueue_script(
            keys=[self._seen + message.id, self.stream],
            args=[self._dedupe_ttl_s, message.to_json()])
        return _text(entry) if entry else None

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Delivery]:
        """New entries for `consumer` (blocks up to `block_ms`; empty list on timeout)."""
        response: Any = await self._redis.xreadgroup(GROUP, consumer, {self.stream: ">"},
                                                     count=count, block=block_ms)
        entries = response[0][1] if response else []
        return [await self._delivery(entry_id, fields) for entry_id, fields in entries]

    async def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[Delivery]:
        """Take over entries pending on any consumer for at least `min_idle_ms`."""
        result: Any = await self._redis.xautoclaim(self.stream, GROUP, consumer,
                                              min_idle_time=min_idle_ms, start_id="0-0",
                                              count=count)
        entries = result[1] if result else []
        return [await self._delivery(entry_id, fields) for entry_id, fields in entries
                if fields is not None]

    async def _delivery(self, entry_id: bytes | str, fields: dict[Any, Any]) -> Delivery:
        eid = _text(entry_id)
        raw = _text(fields.get(b"m") or fields.get("m") or b"")
        attempt = int(await self._redis.hincrby(self._attempts, eid, 1))
        try:
            message: Message | None = Message.from_json(raw)
        except (ValueError, KeyError, TypeError):
            message = None
        return Delivery(eid, message, attempt, raw)

    async def ack(self, entry_id: str) -> None:
        """Acknowledge and delete a processed entry."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            pipe.hdel(self._attempts, entry_id)
            await pipe.execute()

    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        """Move an entry to the dead-letter stream with the error, and acknowledge it."""
        await self._redis.xadd(self.dlq, {"m": delivery.raw, "error": error[:2000],
                                          "entry_id": delivery.entry_id,
                                          "attempts": str(delivery.attempt)})
        await self.ack(delivery.entry_id)

    async def backlog(self) -> int:
        """Entries in the stream not yet acknowledged (pending or unread)."""
        return int(await self._redis.xlen(self.stream))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
