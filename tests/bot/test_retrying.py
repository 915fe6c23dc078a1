"""bot.retrying.retried: the first try outside tenacity, the rest through it, with the same
limits (attempts, time) and the same notion of what is retried."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.retrying import retried, retry_on


class Flaky:
    """Fails with `error` the first `failures` calls, then returns the call count."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.calls = 0
        self.failures = failures
        self.error = error

    async def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.calls


async def test_a_call_that_succeeds_runs_once() -> None:
    call = Flaky(0, OSError())
    assert await retried(call, retry_if=retry_on(OSError), attempts=3, initial_s=0.01,
                         max_s=0.01, jitter_s=0) == 1


async def test_failures_are_retried_up_to_the_attempts() -> None:
    call = Flaky(2, OSError("down"))
    assert await retried(call, retry_if=retry_on(OSError), attempts=3, initial_s=0.01,
                         max_s=0.02, jitter_s=0) == 3
    call = Flaky(3, OSError("down"))
    with pytest.raises(OSError, match="down"):
        await retried(call, retry_if=retry_on(OSError), attempts=3, initial_s=0.01,
                      max_s=0.02, jitter_s=0)
    assert call.calls == 3


async def test_what_retry_if_refuses_is_raised_at_once() -> None:
    call = Flaky(5, ValueError("bad"))
    with pytest.raises(ValueError):
        await retried(call, retry_if=retry_on(OSError), attempts=3, initial_s=0.01,
                      max_s=0.01, jitter_s=0)
    assert call.calls == 1
    call = Flaky(5, OSError("gone"))
    with pytest.raises(OSError):
        await retried(call, retry_if=lambda exc: "down" in str(exc), attempts=3,
                      initial_s=0.01, max_s=0.01, jitter_s=0)
    assert call.calls == 1


async def test_within_s_bounds_the_time_spent_retrying() -> None:
    call = Flaky(1000, OSError())
    started = time.monotonic()
    with pytest.raises(OSError):
        await retried(call, retry_if=retry_on(OSError), within_s=0.3, initial_s=0.05,
                      max_s=0.05, jitter_s=0)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 5.0
    assert 3 <= call.calls <= 10  # waits of 0.05 s within 0.3 s


async def test_waits_grow_exponentially_to_the_cap() -> None:
    call = Flaky(4, OSError())
    started = time.monotonic()
    assert await retried(call, retry_if=retry_on(OSError), attempts=5, initial_s=0.05,
                         max_s=0.15, jitter_s=0) == 5
    # 0.05 + 0.1 + 0.15 + 0.15 (capped)
    assert time.monotonic() - started >= 0.45


async def test_limits_are_required() -> None:
    with pytest.raises(ValueError):
        await retried(Flaky(0, OSError()), retry_if=retry_on(OSError), initial_s=0.1, max_s=1)


async def test_a_first_try_that_failed_too_late_is_not_retried() -> None:
    calls = 0

    async def slow_failure() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.3)
        raise OSError("hung, then failed")

    with pytest.raises(OSError):
        await retried(slow_failure, retry_if=retry_on(OSError), within_s=0.25, initial_s=0.05,
                      max_s=0.05, jitter_s=0)
    assert calls == 1


async def test_jitter_stays_under_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def record(delay: float, *args: object) -> None:
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", record)
    call = Flaky(5, OSError())
    assert await retried(call, retry_if=retry_on(OSError), attempts=6, initial_s=0.5,
                         max_s=2.0, jitter_s=1.0) == 6
    assert len(waits) == 5 and max(waits) <= 2.0 and min(waits) >= 0.5
