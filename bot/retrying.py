"""Retries with tenacity, whose bookkeeping is paid only once a call has failed.

`retried(call, ...)` awaits `call()` once; only when that raises something `retry_if` accepts
does a tenacity `AsyncRetrying` take over, for the attempts and the time left, after the wait
tenacity would have made between the first and second attempts. Nearly every call succeeds the
first time, and an `AsyncRetrying` loop costs about 20 us of CPU even then: with three retried
calls on a message's path (the worker's finishing transaction, the webhook callback, an
action) that was 3% of the worker's CPU.

The waits are exponential with up to `jitter_s` (1 s) of random jitter: `initial_s`,
`2 * initial_s`, `4 * initial_s` ... plus jitter, each capped at `max_s` (tenacity's
`wait_exponential_jitter`). With `within_s`, tenacity's `stop_after_delay` rule holds from the
first try on: no retry once the time is up (a first try that failed too late for its wait
included).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
)
from tenacity.stop import stop_base

T = TypeVar("T")


def retry_on(*types: type[BaseException]) -> Callable[[BaseException], bool]:
    """A `retry_if` for `retried`: the exception is one of `types`."""
    return lambda exc: isinstance(exc, types)


async def retried(call: Callable[[], Awaitable[T]], *,
                  retry_if: Callable[[BaseException], bool], initial_s: float, max_s: float,
                  attempts: int | None = None, within_s: float | None = None,
                  jitter_s: float = 1.0) -> T:
    """`call()`, retried while it raises what `retry_if` accepts, at most `attempts` times in
    all and no later than `within_s` seconds after the first try (at least one of the two);
    each wait gets up to `jitter_s` seconds of random jitter.

    Raises:
        Whatever the last try raised (as tenacity's `reraise=True`).
    """
    if attempts is None and within_s is None:
        raise ValueError("retried needs attempts or within_s")
    started = time.monotonic()
    try:
        return await call()
    except Exception as exc:
        if attempts == 1 or not retry_if(exc):
            raise
        first_wait_s = min(initial_s + random.uniform(0, jitter_s), max_s)
        if within_s is not None and time.monotonic() - started + first_wait_s >= within_s:
            raise  # no time left for another try
    await asyncio.sleep(first_wait_s)
    stops: list[stop_base] = []
    if attempts is not None:
        stops.append(stop_after_attempt(attempts - 1))
    if within_s is not None:
        stops.append(stop_after_delay(max(within_s - (time.monotonic() - started), 0.0)))

    def wait_s(state: RetryCallState) -> float:
        # tenacity's wait_exponential_jitter, continued from the second wait: capped at max_s
        # jitter included
        exponent = state.attempt_number  # 1 after the second try: 2 * initial_s
        return min(initial_s * 2.0 ** exponent + random.uniform(0, jitter_s), max_s)

    async for attempt in AsyncRetrying(
            stop=stop_any(*stops), wait=wait_s,
            retry=retry_if_exception(retry_if), reraise=True):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity returns or reraises")  # pragma: no cover


async def back_off(stop: asyncio.Event, backoff_s: float, *, cap_s: float) -> float:
    """Wait about `backoff_s` seconds (jittered between half and one and a half times it;
    less if `stop` is set), for a loop that must outlive any failure; return the next wait,
    doubled up to `cap_s`."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), backoff_s * (0.5 + random.random()))
    return min(backoff_s * 2, cap_s)
