"""The Redis response cache: only temperature 0, only without memory; hits and misses."""

from __future__ import annotations

import uuid

from openai.types.chat import ChatCompletionMessageParam
from redis.asyncio import Redis

from bot.llm import ChatGenerator, LLMRouter
from bot.llm.cache import ResponseCache, cache_key
from bot.llm.providers import ProviderConfig
from bot.metrics import LLM_CACHE
from bot.protocols import Turn
from tests.fakes.openai_server import FakeOpenAI


async def test_deterministic_calls_without_memory_are_cached(redis: Redis,
                                                             fake_llm: FakeOpenAI) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    cache = ResponseCache(redis, prefix, ttl_s=60)
    router = LLMRouter([ProviderConfig(name="a", base_url=fake_llm.base_url, model="m")],
                       cache=cache)
    hits, misses = LLM_CACHE.labels("hit")._value.get(), LLM_CACHE.labels("miss")._value.get()
    cold = ChatGenerator(router, temperature=0, max_tokens=50)
    first = await cold.generate("What is the refund policy?", [], [])
    second = await cold.generate("What is the refund policy?", [], [])
    assert first.text == second.text and len(fake_llm.requests) == 1
    assert LLM_CACHE.labels("hit")._value.get() == hits + 1
    assert LLM_CACHE.labels("miss")._value.get() == misses + 1
    keys = await redis.keys(f"{prefix}:llmcache:*")
    assert len(keys) == 1 and 0 < await redis.ttl(keys[0]) <= 60

    # a different question misses
    await cold.generate("What is the shipping policy?", [], [])
    assert len(fake_llm.requests) == 2
    # memory in the prompt: never cached (another user's conversation must not leak)
    history = [Turn("user", "hi"), Turn("assistant", "hello")]
    for _ in range(2):
        await cold.generate("What is the refund policy?", history, [])
    assert len(fake_llm.requests) == 4
    # temperature above 0: never cached
    warm = ChatGenerator(router, temperature=0.7, max_tokens=50)
    for _ in range(2):
        await warm.generate("What is the refund policy?", [], [])
    assert len(fake_llm.requests) == 6
    await router.aclose()


def test_key_covers_messages_model_and_temperature() -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x"}]
    base = cache_key(messages, "m", 0)
    assert base == cache_key([{"content": "x", "role": "user"}], "m", 0)
    assert base != cache_key(messages, "n", 0)
    assert base != cache_key(messages, "m", 0.5)
    assert base != cache_key([{"role": "user", "content": "y"}], "m", 0)
