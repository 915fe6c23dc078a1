"""A response cache in Redis for deterministic chat calls.

Key: `<prefix>:llmcache:<sha256 of the canonical JSON of (messages, model, temperature)>`.
The router uses it only for temperature 0 and the generator only when no conversation memory
is in the prompt, so a cached answer is one the model would give again and never leaks one
user's conversation into another's. Hits and misses are counted in
`switchboard_llm_cache_total{result}`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from openai.types.chat import ChatCompletionMessageParam
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.keys import Keys
from bot.llm.completion import Completion
from bot.log import get_logger
from bot.metrics import LLM_CACHE

log = get_logger("bot.llm.cache")


def cache_key(messages: Sequence[ChatCompletionMessageParam], model: str,
              temperature: float) -> str:
    """sha256 hex of the canonical JSON of (messages, model, temperature)."""
    canonical = json.dumps({"messages": list(messages), "model": model,
                            "temperature": temperature},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    """Args: ttl_s: how long an answer is kept, seconds."""

    def __init__(self, redis: Redis, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._keys = Keys(prefix)
        self.ttl_s = ttl_s

    def _key(self, messages: Sequence[ChatCompletionMessageParam], model: str,
             temperature: float) -> str:
        return self._keys.llm_cache(cache_key(messages, model, temperature))

    async def get(self, messages: Sequence[ChatCompletionMessageParam], models: list[str],
                  temperature: float) -> Completion | None:
        """The cached answer for the first of `models` that has one, or None. A Redis error
        counts as a miss (the cache never fails a call)."""
        keys = [self._key(messages, m, temperature) for m in models]
        try:
            values = await self._redis.mget(keys)
        except RedisError as exc:
            log.warning("llm cache read failed", error=type(exc).__name__)
            values = [None] * len(keys)
        for value in values:
            if value is not None:
                LLM_CACHE.labels("hit").inc()
                data = json.loads(value)
                return Completion(text=data["text"], model=data["model"], provider="cache",
                                  cached=True)
        LLM_CACHE.labels("miss").inc()
        return None

    async def put(self, messages: Sequence[ChatCompletionMessageParam], temperature: float,
                  completion: Completion) -> None:
        """Keep `completion` for `ttl_s` under the model that produced it (best effort)."""
        value = json.dumps({"text": completion.text, "model": completion.model})
        try:
            await self._redis.set(self._key(messages, completion.model, temperature), value,
                                  ex=self.ttl_s)
        except RedisError as exc:
            log.warning("llm cache write failed", error=type(exc).__name__)
