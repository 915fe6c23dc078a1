"""Conversation memory: the last `MEMORY_TURNS` exchanges of each conversation in a Redis list,
expiring `MEMORY_TTL_S` seconds after the last write. Postgres keeps the full transcript."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from bot.keys import Keys
from bot.protocols import Turn
from bot.redis_pool import Coalesced, call

# KEYS: memory list, once-marker ("" for none); ARGV: max items, ttl s, turn JSON...
_APPEND = """
if KEYS[2] ~= '' and not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[2]) then
  return 0
end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[1]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


class RedisMemory:
    """Implements `bot.protocols.Memory`.

    Args:
        turns: exchanges kept (one exchange = a user turn and an assistant turn); 0 disables.
        ttl_s: seconds of inactivity after which a conversation is forgotten.
        coalesced: the process's shared round trips (bot/redis_pool.py), for `load`.
    """

    def __init__(self, redis: Redis, prefix: str, *, turns: int, ttl_s: int,
                 coalesced: Coalesced | None = None) -> None:
        self._redis = redis
        self._coalesced = coalesced
        self._prefix = prefix
        self._keys = Keys(prefix)
        self._max_items = 2 * turns
        self._ttl_s = ttl_s
        self._append = redis.register_script(_APPEND)

    def _key(self, conversation_key: str) -> str:
        return self._keys.memory(conversation_key)

    async def load(self, conversation_key: str) -> list[Turn]:
        if self._max_items == 0:
            return []
        key, count = self._key(conversation_key), self._max_items
        raw = await call(self._redis, self._coalesced, lambda pipe: pipe.lrange(key, -count, -1))
        # one parse of the whole list, not one per turn (a full memory holds max_items)
        items = json.loads(b"[" + b",".join(_bytes(item) for item in raw) + b"]")
        return [Turn(role=data["role"], content=data["content"]) for data in items]

    async def append(self, conversation_key: str, turns: list[Turn], once_id: str = "") -> None:
        """Append turns atomically; with `once_id`, a second append with the same id (a retried
        message) changes nothing."""
        if self._max_items == 0 or not turns:
            return
        keys, args = self._append_call(conversation_key, turns, once_id)
        await self._append(keys=keys, args=args)

    def append_after_send(self, conversation_key: str, turns: list[Turn],
                          once_id: str) -> _AppendAfterSend | None:
        """`append` as a write the worker queues on its finishing transaction; None when
        there is nothing to write (memory off, no turns)."""
        if self._max_items == 0 or not turns:
            return None
        return _AppendAfterSend(self, conversation_key, turns, once_id)

    def _append_call(self, conversation_key: str, turns: list[Turn], once_id: str
                     ) -> tuple[list[str], list[str | int]]:
        once_key = self._keys.memory_once(once_id) if once_id else ""
        return [self._key(conversation_key), once_key], [
            self._max_items, self._ttl_s,
            *[json.dumps({"role": t.role, "content": t.content}) for t in turns]]

    async def forget(self, conversation_key: str) -> None:
        await self._redis.delete(self._key(conversation_key))


@dataclass(frozen=True)
class _AppendAfterSend:
    """`RedisMemory.append` queued on another pipeline (`bot.protocols.AfterSend`)."""

    memory: RedisMemory
    conversation_key: str
    turns: list[Turn]
    once_id: str

    def queue(self, pipe: Pipeline) -> None:
        keys, args = self.memory._append_call(self.conversation_key, self.turns, self.once_id)
        # EVAL with the script's text, not EVALSHA: a server that lost its scripts (a restart,
        # a failover) cannot answer NOSCRIPT, whose fallback would append only after the
        # transaction acknowledged the message and moved its conversation on
        pipe.eval(_APPEND, len(keys), *keys, *args)

    async def settle(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            raise reply

    async def run(self) -> None:
        await self.memory.append(self.conversation_key, self.turns, self.once_id)


def _bytes(item: bytes | str) -> bytes:
    return item if isinstance(item, bytes) else item.encode()
