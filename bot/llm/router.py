"""The LLM router: one call, many OpenAI-compatible providers, in priority order.

Per call and provider: a timeout (`timeout_s`), then retries with exponential backoff and
jitter on 408, 409, 429 and 5xx answers, timeouts and lost connections, honouring `Retry-After`
(RFC 9110 §10.2.3, seconds or HTTP date; a longer wait than `retry_after_max_s` moves on to the
next provider at once). Other errors (400, 401, 404 ...) move on without retrying. A provider
that fails `breaker_failures` calls in a row is skipped for `breaker_cooldown_s` (a circuit
breaker, per process), then gets one trial call (half-open). When every provider fails,
`LLMUnavailable` carries a trace id that the user sees and the logs and transcript record.

Chat requests go over aiohttp (bot/llm/transport.py: a fifth of the SDK client's CPU per
request), with the SDK's error types; the messages are plain JSON dicts already (the SDK's
`chat.completions.create` re-transforms every message through its TypedDicts, which was half the
worker's CPU for a 20-turn history). Structured replies go through `instructor` on the SDK
client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential_jitter,
)

from bot import tracing
from bot.errors import BotError
from bot.llm.cache import ResponseCache
from bot.llm.completion import Completion, ToolCall, gen_ai_request, gen_ai_usage
from bot.llm.failures import (
    CircuitBreaker,
    counts_against_provider,
    describe,
    is_retryable,
    retry_after_s,
    unwrap,
)
from bot.llm.providers import ProviderConfig
from bot.llm.transport import ChatTransport
from bot.log import get_logger
from bot.metrics import LLM_BREAKER_OPEN, LLM_CALLS, LLM_TIME_TO_FIRST_TOKEN, observe_llm

log = get_logger("bot.llm")

T = TypeVar("T", bound=BaseModel)
#: Called with the whole text so far each time a streamed chunk arrives.
DeltaSink = Callable[[str], Awaitable[None]]

class LLMUnavailable(BotError):
    """Every provider failed (or is cooling down). `trace_id` names this failure in the logs,
    the transcript and the apology the user sees; `failures` is one line per provider."""

    def __init__(self, trace_id: str, failures: list[str]) -> None:
        self.trace_id = trace_id
        self.failures = failures
        super().__init__(f"no language model answered (trace id {trace_id}): "
                         + "; ".join(failures))


class Provider:
    """A configured endpoint with its client and circuit breaker."""

    def __init__(self, config: ProviderConfig, breaker: CircuitBreaker,
                 api_key: str | None = None) -> None:
        self.config = config
        self.name = config.name
        self.model = config.model
        self.breaker = breaker
        key = api_key or config.api_key() or "unused"
        #: chat requests (see bot/llm/transport.py)
        self.chat = ChatTransport(config.base_url, key, config.timeout_s)
        #: structured replies (instructor) and model listing; retries are the router's (with
        #: Retry-After and failover), not the SDK's
        self.client = AsyncOpenAI(base_url=config.base_url, api_key=key,
                                  timeout=config.timeout_s, max_retries=0)


class LLMRouter:
    """Sends chat requests to the first provider that answers.

    Args:
        providers: in the order to try them (sorted by priority).
        retries: extra attempts per provider on a retryable error.
        backoff_initial_s, backoff_max_s: exponential backoff with jitter between attempts.
        retry_after_max_s: the longest `Retry-After` honoured; longer moves on to the next
            provider.
        breaker_failures, breaker_cooldown_s: the circuit breaker (see module docstring).
        cache: optional response cache (used only where the caller allows it).
        api_keys: keys by provider name, overriding `api_key_env` (the single-provider
            settings pass OPENAI_API_KEY this way).

    Raises:
        ConfigError: a provider's `api_key_env` is unset.
    """

    def __init__(self, providers: list[ProviderConfig], *, retries: int = 2,
                 backoff_initial_s: float = 0.5, backoff_max_s: float = 8.0,
                 retry_after_max_s: float = 30.0, breaker_failures: int = 3,
                 breaker_cooldown_s: float = 60.0, cache: ResponseCache | None = None,
                 api_keys: dict[str, str] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        keys = api_keys or {}
        self.providers = [Provider(p, CircuitBreaker(breaker_failures, breaker_cooldown_s,
                                                     clock=clock),
                                   keys.get(p.name)) for p in providers]
        self._sleep = sleep
        self.retries = retries
        self._wait = wait_exponential_jitter(initial=backoff_initial_s, max=backoff_max_s,
                                             jitter=backoff_initial_s)
        self.retry_after_max_s = retry_after_max_s
        self.cache = cache

    @property
    def model(self) -> str:
        """The first provider's model (what a healthy deployment answers with)."""
        return self.providers[0].model

    # retry policy -------------------------------------------------------------------------------

    def _wait_s(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = retry_after_s(unwrap(exc)) if exc is not None else None
        return hinted if hinted is not None else self._wait(state)

    def _should_stop(self, state: RetryCallState) -> bool:
        if state.attempt_number > self.retries:
            return True
        exc = state.outcome.exception() if state.outcome else None
        hinted = retry_after_s(unwrap(exc)) if exc is not None else None
        return hinted is not None and hinted > self.retry_after_max_s

    @staticmethod
    def _log_retry(provider: Provider) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("llm call failed, retrying", provider=provider.name,
                        attempt=state.attempt_number, wait_s=round(state.upcoming_sleep, 3),
                        error=describe(exc) if exc is not None else "")
        return before_sleep

    async def _with_failover(self, call: Callable[[Provider], Awaitable[T | Completion]],
                             what: str) -> T | Completion:
        failures: list[str] = []
        for provider in self.providers:
            if not provider.breaker.acquire():
                failures.append(f"{provider.name}: cooling down")
                LLM_CALLS.labels(provider.name, "skipped").inc()
                continue
            try:
                async for attempt in AsyncRetrying(
                        stop=self._should_stop, wait=self._wait_s,
                        retry=retry_if_exception(is_retryable), reraise=True,
                        sleep=self._sleep,
                        before_sleep=self._log_retry(provider)):
                    with attempt, tracing.span(f"chat {provider.model}", "client", gen_ai_request(
                            provider.name, provider.model, provider.config.base_url,
                            what)) as span:
                        started = time.perf_counter()
                        result = await call(provider)
                        if isinstance(result, Completion):
                            observe_llm(provider.name, result.model,
                                        time.perf_counter() - started, result.tokens_in,
                                        result.tokens_out)
                            tracing.set_attributes(span, gen_ai_usage(result))
            except BaseException as exc:
                if not isinstance(exc, Exception):  # cancelled: no verdict on the provider
                    provider.breaker.release()
                    raise
                failures.append(f"{provider.name}: {describe(exc)}")
                LLM_CALLS.labels(provider.name, "failed").inc()
                if not counts_against_provider(exc):
                    # this request's fault (a 400, a prompt over the context window, a reply
                    # that failed validation): try the next provider, the breaker stays closed
                    provider.breaker.release()
                    log.warning("llm request refused, trying the next provider",
                                provider=provider.name, error=describe(exc), what=what)
                elif provider.breaker.record_failure():
                    LLM_BREAKER_OPEN.labels(provider.name).set(1)
                    log.warning("llm provider circuit opened", provider=provider.name,
                                cooldown_s=provider.breaker.cooldown_s, error=describe(exc))
                else:
                    log.warning("llm provider failed, trying the next", provider=provider.name,
                                error=describe(exc), what=what)
                continue
            LLM_CALLS.labels(provider.name, "ok").inc()
            if provider.breaker.record_success():
                LLM_BREAKER_OPEN.labels(provider.name).set(0)
                log.info("llm provider circuit closed", provider=provider.name)
            return result
        trace_id = uuid.uuid4().hex[:12]
        log.error("no llm provider answered", trace_id=trace_id, failures=failures, what=what)
        raise LLMUnavailable(trace_id, failures)

    # calls ----------------------------------------------------------------------------------------

    async def complete(self, messages: list[ChatCompletionMessageParam], *, temperature: float,
                       max_tokens: int, on_delta: DeltaSink | None = None,
                       cacheable: bool = False,
                       tools: list[dict[str, Any]] | None = None,
                       tool_choice: str | None = None) -> Completion:
        """One chat completion from the first provider that answers.

        Args:
            messages: the chat messages (OpenAI format).
            temperature, max_tokens: sampling settings; `max_tokens` limits the completion.
            on_delta: when given, the answer is streamed (SSE) and `on_delta` is awaited with
                the text so far at each chunk; a retry after a broken stream starts the text
                again from the beginning.
            cacheable: the caller allows the response cache (the router further requires
                temperature 0).
            tools: OpenAI function-tool schemas the model may call; with tools the call is
                neither streamed nor cached, and `Completion.tool_calls` holds the calls.
            tool_choice: with tools, OpenAI's `tool_choice` ("none": the model must answer
                and may call nothing; the tools are still declared, since the messages may
                hold earlier tool calls).

        Raises:
            LLMUnavailable: every provider failed or is cooling down.
        """
        if tools:
            async def call_with_tools(provider: Provider) -> Completion:
                return await self._complete_once(provider, messages, temperature, max_tokens,
                                                 tools, tool_choice)

            with_tools = await self._with_failover(call_with_tools, "chat")
            assert isinstance(with_tools, Completion)
            return with_tools
        use_cache = self.cache is not None and cacheable and temperature == 0
        if use_cache and self.cache is not None:
            hit = await self.cache.get(messages, [p.model for p in self.providers], temperature)
            if hit is not None:
                if on_delta is not None:
                    await on_delta(hit.text)
                return hit

        async def call(provider: Provider) -> Completion:
            if on_delta is None:
                return await self._complete_once(provider, messages, temperature, max_tokens)
            return await self._stream_once(provider, messages, temperature, max_tokens, on_delta)

        result = await self._with_failover(call, "chat")
        assert isinstance(result, Completion)
        if use_cache and self.cache is not None:
            await self.cache.put(messages, temperature, result)
        return result

    async def _complete_once(self, provider: Provider, messages: list[ChatCompletionMessageParam],
                             temperature: float, max_tokens: int,
                             tools: list[dict[str, Any]] | None = None,
                             tool_choice: str | None = None) -> Completion:
        extra: dict[str, Any] = {"tools": tools} if tools else {}
        if tools and tool_choice:
            extra["tool_choice"] = tool_choice
        data = await provider.chat.complete(
            {"model": provider.model, "messages": messages, "temperature": temperature,
             "max_tokens": max_tokens, **extra})
        choices = data.get("choices") or [{}]
        message = _object(_object(choices[0]).get("message"))
        calls = tuple(_tool_call(c) for c in map(_object, message.get("tool_calls") or ())
                      if c.get("type", "function") == "function")
        usage = _object(data.get("usage"))
        return Completion(text=str(message.get("content") or "").strip(),
                          model=provider.model, provider=provider.name,
                          tokens_in=int(usage.get("prompt_tokens") or 0),
                          tokens_out=int(usage.get("completion_tokens") or 0),
                          tool_calls=calls)

    async def _stream_once(self, provider: Provider, messages: list[ChatCompletionMessageParam],
                           temperature: float, max_tokens: int, on_delta: DeltaSink
                           ) -> Completion:
        parts: list[str] = []
        tokens_in = tokens_out = 0
        started = time.perf_counter()
        async with contextlib.aclosing(provider.chat.stream(
                {"model": provider.model, "messages": messages, "temperature": temperature,
                 "max_tokens": max_tokens, "stream": True,
                 "stream_options": {"include_usage": True}})) as chunks:
            async for chunk in chunks:
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    tokens_in = int(usage.get("prompt_tokens") or 0)
                    tokens_out = int(usage.get("completion_tokens") or 0)
                for choice in map(_object, chunk.get("choices") or ()):
                    content = _object(choice.get("delta")).get("content")
                    if content:
                        if not parts:
                            LLM_TIME_TO_FIRST_TOKEN.labels(provider.name, provider.model) \
                                .observe(time.perf_counter() - started)
                        parts.append(str(content))
                        await on_delta("".join(parts))
        return Completion(text="".join(parts).strip(), model=provider.model,
                          provider=provider.name, tokens_in=tokens_in, tokens_out=tokens_out)

    async def structured(self, messages: list[ChatCompletionMessageParam], response_model: type[T],
                         *, max_tokens: int = 512, validation_retries: int = 1) -> T:
        """A reply parsed into `response_model` with `instructor` (tool-call mode), with the
        same retries and failover as `complete`; temperature 0.

        Raises:
            LLMUnavailable: every provider failed, or none produced a valid object.
        """
        import instructor

        async def call(provider: Provider) -> T:
            client = instructor.from_openai(provider.client, mode=instructor.Mode.TOOLS)
            result: T = await client.chat.completions.create(
                model=provider.model, messages=messages, response_model=response_model,
                temperature=0, max_tokens=max_tokens, max_retries=validation_retries)
            return result

        result = await self._with_failover(call, "structured")
        assert isinstance(result, response_model)
        return result

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.chat.aclose()
            await provider.client.close()


def _object(value: object) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (a field some server left out or
    sent as null)."""
    return value if isinstance(value, dict) else {}


def _tool_call(call: dict[str, Any]) -> ToolCall:
    """A function call of the model's message (`tool_calls[i]`)."""
    function = _object(call.get("function"))
    return ToolCall(id=str(call.get("id", "")), name=str(function.get("name")),
                    arguments=function.get("arguments") or "{}")
