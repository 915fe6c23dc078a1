"""The LLM router against real OpenAI-compatible servers on loopback: retries, Retry-After,
failover, circuit breaker, timeouts, streaming, structured outputs and the apology."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from bot.llm import ChatGenerator, LLMRouter, LLMUnavailable
from bot.llm.providers import ProviderConfig
from bot.metrics import LLM_BREAKER_OPEN, LLM_CALLS
from tests.fakes.openai_server import FakeOpenAI

QUESTION: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "How do I reset my password?"}]


@pytest.fixture
async def primary() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI(answer=lambda body: "primary says hi").start()
    yield server
    await server.stop()


@pytest.fixture
async def backup() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI(answer=lambda body: "backup says hi").start()
    yield server
    await server.stop()


def provider(name: str, server: FakeOpenAI, timeout_s: float = 10.0, priority: int = 0
             ) -> ProviderConfig:
    return ProviderConfig(name=name, base_url=server.base_url, model=f"{name}-model",
                          timeout_s=timeout_s, priority=priority)


class Sleeps:
    """Records the waits the router asks for, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_retries_5xx_with_backoff_then_answers(primary: FakeOpenAI,
                                                     backup: FakeOpenAI) -> None:
    primary.fail_next(500, count=1)
    primary.fail_next(503, count=1)
    sleeps = Sleeps()
    router = LLMRouter([provider("a", primary), provider("b", backup)], retries=2,
                       backoff_initial_s=0.5, sleep=sleeps)
    result = await router.complete(QUESTION, temperature=0.2, max_tokens=50)
    assert (result.text, result.provider, result.model) == ("primary says hi", "a", "a-model")
    assert len(primary.requests) == 3 and not backup.requests
    assert len(sleeps.waits) == 2 and all(0 < w <= 8.0 for w in sleeps.waits)
    await router.aclose()


async def test_retry_after_is_honoured_and_a_long_one_moves_on(primary: FakeOpenAI,
                                                               backup: FakeOpenAI) -> None:
    sleeps = Sleeps()
    router = LLMRouter([provider("a", primary), provider("b", backup)], retries=2,
                       retry_after_max_s=30, sleep=sleeps)
    primary.fail_next(429, retry_after="7")
    assert (await router.complete(QUESTION, temperature=0, max_tokens=50)).provider == "a"
    assert sleeps.waits == [7.0]  # the server's hint, not the exponential backoff

    primary.fail_next(429, retry_after="120")  # longer than we wait: the next provider now
    result = await router.complete(QUESTION, temperature=0, max_tokens=50)
    assert result.provider == "b" and sleeps.waits == [7.0]
    assert len(backup.requests) == 1
    await router.aclose()


async def test_client_errors_fail_over_without_retrying(primary: FakeOpenAI,
                                                        backup: FakeOpenAI) -> None:
    sleeps = Sleeps()
    router = LLMRouter([provider("a", primary), provider("b", backup)], retries=3, sleep=sleeps)
    primary.fail_next(401)
    result = await router.complete(QUESTION, temperature=0, max_tokens=50)
    assert result.text == "backup says hi"
    assert len(primary.requests) == 1 and sleeps.waits == []
    await router.aclose()


async def test_priority_orders_providers(primary: FakeOpenAI, backup: FakeOpenAI) -> None:
    router = LLMRouter([provider("b", backup, priority=2), provider("a", primary, priority=1)])
    # the router keeps the order it is given; settings sort by priority
    from bot.llm.providers import parse_providers

    configs = parse_providers(
        f'[{{"name": "b", "base_url": "{backup.base_url}", "model": "m", "priority": 2}},'
        f' {{"name": "a", "base_url": "{primary.base_url}", "model": "m", "priority": 1}}]')
    sorted_router = LLMRouter(configs)
    assert (await sorted_router.complete(QUESTION, temperature=0, max_tokens=5)).provider == "a"
    assert (await router.complete(QUESTION, temperature=0, max_tokens=5)).provider == "b"
    await router.aclose()
    await sorted_router.aclose()


async def test_circuit_breaker_skips_a_failing_provider_until_cooldown(
        primary: FakeOpenAI, backup: FakeOpenAI) -> None:
    clock = Clock()
    router = LLMRouter([provider("brk", primary), provider("ok", backup)], retries=0,
                       breaker_failures=2, breaker_cooldown_s=60, clock=clock, sleep=Sleeps())
    primary.fail_next(500, count=2)
    for _ in range(2):
        assert (await router.complete(QUESTION, temperature=0, max_tokens=5)).provider == "ok"
    assert LLM_BREAKER_OPEN.labels("brk")._value.get() == 1
    skipped_before = LLM_CALLS.labels("brk", "skipped")._value.get()

    assert (await router.complete(QUESTION, temperature=0, max_tokens=5)).provider == "ok"
    assert len(primary.requests) == 2  # skipped while open: no third request
    assert LLM_CALLS.labels("brk", "skipped")._value.get() == skipped_before + 1

    clock.now += 61  # cooldown over: one trial call, which succeeds and closes the breaker
    assert (await router.complete(QUESTION, temperature=0, max_tokens=5)).provider == "brk"
    assert LLM_BREAKER_OPEN.labels("brk")._value.get() == 0
    await router.aclose()


async def test_a_slow_provider_times_out_and_the_next_answers(backup: FakeOpenAI) -> None:
    slow = await FakeOpenAI(answer=lambda body: "too late", delay_s=5).start()
    try:
        router = LLMRouter([provider("slow", slow, timeout_s=0.3), provider("b", backup)],
                           retries=0)
        result = await router.complete(QUESTION, temperature=0, max_tokens=5)
        assert result.provider == "b" and len(slow.requests) == 1
        await router.aclose()
    finally:
        await slow.stop()


async def test_every_provider_failing_gives_an_apology_with_a_trace_id(
        primary: FakeOpenAI, backup: FakeOpenAI) -> None:
    primary.fail_next(500, count=5)
    backup.fail_next(502, count=5)
    router = LLMRouter([provider("a", primary), provider("b", backup)], retries=1,
                       sleep=Sleeps())
    with pytest.raises(LLMUnavailable) as caught:
        await router.complete(QUESTION, temperature=0, max_tokens=5)
    assert caught.value.failures == ["a: HTTP 500", "b: HTTP 502"]
    assert len(caught.value.trace_id) == 12

    generated = await ChatGenerator(router, temperature=0.2, max_tokens=50).generate(
        "How do I reset my password?", [], [])
    assert generated.trace_id and generated.trace_id in generated.text
    assert generated.text.startswith("Sorry") and "HTTP 500" in generated.error
    await router.aclose()


async def test_streaming_forwards_text_as_it_arrives(primary: FakeOpenAI) -> None:
    primary.answer = lambda body: "one two three four"
    seen: list[str] = []

    async def on_delta(text: str) -> None:
        seen.append(text)

    router = LLMRouter([provider("a", primary)])
    result = await router.complete(QUESTION, temperature=0.2, max_tokens=50, on_delta=on_delta)
    assert seen == ["one ", "one two ", "one two three ", "one two three four"]
    assert result.text == "one two three four" and result.tokens_out == 4
    assert primary.requests[0]["stream"] is True
    await router.aclose()


async def test_streaming_fails_over_before_the_first_token(primary: FakeOpenAI,
                                                           backup: FakeOpenAI) -> None:
    primary.fail_next(500, count=3)
    seen: list[str] = []

    async def on_delta(text: str) -> None:
        seen.append(text)

    router = LLMRouter([provider("a", primary), provider("b", backup)], retries=0)
    result = await router.complete(QUESTION, temperature=0, max_tokens=5, on_delta=on_delta)
    assert result.provider == "b" and seen[-1] == "backup says hi"
    await router.aclose()


class Verdict(BaseModel):
    supported: bool
    reason: str


async def test_structured_output_through_instructor_with_failover(
        primary: FakeOpenAI, backup: FakeOpenAI) -> None:
    backup.tool_arguments = lambda body: {"supported": False, "reason": "no passage says so"}
    primary.fail_next(500, count=1)
    router = LLMRouter([provider("a", primary), provider("b", backup)], retries=0)
    verdict = await router.structured(QUESTION, Verdict)
    assert verdict.model_dump() == {"supported": False, "reason": "no passage says so"}
    request = backup.requests[-1]
    assert request["tools"][0]["function"]["name"] == "Verdict"
    assert request["temperature"] == 0
    await router.aclose()


async def test_after_cooldown_only_one_trial_call_goes_through(backup: FakeOpenAI) -> None:
    slow = await FakeOpenAI(answer=lambda body: "slow ok", delay_s=0.5).start()
    try:
        clock = Clock()
        router = LLMRouter([provider("slow", slow), provider("b", backup)], retries=0,
                           breaker_failures=1, breaker_cooldown_s=60, clock=clock,
                           sleep=Sleeps())
        slow.fail_next(500)
        assert (await router.complete(QUESTION, temperature=0, max_tokens=5)).provider == "b"
        clock.now += 61  # half-open: five callers at once, one trial
        results = await asyncio.gather(*[
            router.complete(QUESTION, temperature=0, max_tokens=5) for _ in range(5)])
        assert sorted(r.provider for r in results) == ["b"] * 4 + ["slow"]
        assert len(slow.requests) == 2
        await router.aclose()
    finally:
        await slow.stop()


async def test_request_errors_do_not_open_the_breaker(primary: FakeOpenAI,
                                                      backup: FakeOpenAI) -> None:
    router = LLMRouter([provider("p400", primary), provider("b", backup)], retries=0,
                       breaker_failures=2, sleep=Sleeps())
    primary.fail_next(400, count=3)  # e.g. one prompt over the context window, three times
    for _ in range(3):
        assert (await router.complete(QUESTION, temperature=0, max_tokens=5)).provider == "b"
    assert (await router.complete(QUESTION, temperature=0, max_tokens=5)).provider == "p400"
    await router.aclose()
