"""Progress of multi-piece replies, so a retried send does not post the pieces that already
went out (a long answer split in three whose third piece hit an outage)."""

from __future__ import annotations

from redis.asyncio import Redis

from bot.keys import Keys

PROGRESS_TTL_S = 24 * 3600


class SendProgress:
    """`<p>:sent:<message id>` holds how many pieces of the reply were delivered."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._keys = Keys(prefix)

    def _key(self, message_id: str) -> str:
        return self._keys.sent_pieces(message_id)

    async def delivered(self, message_id: str) -> int:
        """Pieces already delivered (0 for a first attempt)."""
        value = await self._redis.get(self._key(message_id))
        return int(value) if value else 0

    async def record(self, message_id: str, pieces: int) -> None:
        await self._redis.set(self._key(message_id), pieces, ex=PROGRESS_TTL_S)
