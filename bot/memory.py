"""Conversation memory: the last `MEMORY_TURNS` exchanges of each conversation in a Redis list,
expiring `MEMORY_TTL_S` seconds after the last write. Postgres keeps the full transcript."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from bot.protocols import Turn


class RedisMemory:
    """Implements `bot.protocols.Memory`.

    Args:
        turns: exchanges kept (one exchange = a user turn and an assistant turn); 0 disables.
        ttl_s: seconds of inactivity after which a conversation is forgotten.
    """

    def __init__(self, redis: Redis, prefix: str, *, turns: int, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._max_items = 2 * turns
        self._ttl_s = ttl_s

    def _key(self, conversation_key: str) -> str:
        return f"{self._prefix}:mem:{conversation_key}"

    async def load(self, conversation_key: str) -> list[Turn]:
        if self._max_items == 0:
            return []
        raw = await self._redis.lrange(self._key(conversation_key), -self._max_items, -1)
        turns = []
        for item in raw:
            data = json.loads(item)
            turns.append(Turn(role=data["role"], content=data["content"]))
        return turns

    async def append(self, conversation_key: str, turns: list[Turn]) -> None:
        if self._max_items == 0 or not turns:
            return
        key = self._key(conversation_key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *[json.dumps({"role": t.role, "content": t.content}) for t in turns])
            pipe.ltrim(key, -self._max_items, -1)
            pipe.expire(key, self._ttl_s)
            await pipe.execute()

    async def forget(self, conversation_key: str) -> None:
        await self._redis.delete(self._key(conversation_key))
