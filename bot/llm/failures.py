"""How the router reads a provider's failures: which are retried, which count against the
provider, what `Retry-After` asks for, a secret-free description; and the per-provider circuit
breaker. Errors are the `openai` SDK's types (bot/llm/transport.py raises them too)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import openai

RETRY_STATUSES = frozenset({408, 409, 429})


@dataclass
class CircuitBreaker:
    """Opens after `failures_to_open` failed calls in a row; while open (for `cooldown_s`
    seconds, monotonic clock) the provider is skipped; afterwards one trial call decides."""

    failures_to_open: int
    cooldown_s: float
    failures: int = 0
    opened_at: float | None = None
    clock: Callable[[], float] = field(default=time.monotonic)

    trial_in_flight: bool = False

    def acquire(self) -> bool:
        """May a call go to this provider now? While open: no. After the cooldown: exactly one
        caller (the half-open trial) until it reports back; the others keep skipping."""
        if self.opened_at is None:
            return True
        if self.trial_in_flight or self.clock() - self.opened_at < self.cooldown_s:
            return False
        self.trial_in_flight = True
        return True

    def release(self) -> None:
        """The admitted call ended without a verdict on the provider (cancelled, or an error
        that says nothing about its health): let another trial through."""
        self.trial_in_flight = False

    def record_success(self) -> bool:
        """Close the breaker; True when it was open (half-open trial succeeded)."""
        was_open = self.opened_at is not None
        self.failures = 0
        self.opened_at = None
        self.trial_in_flight = False
        return was_open

    def record_failure(self) -> bool:
        """Count a failed call; True when this failure opens (or re-opens) the breaker."""
        self.trial_in_flight = False
        self.failures += 1
        if self.failures >= self.failures_to_open:
            self.opened_at = self.clock()
            return True
        return False


def retry_after_s(exc: BaseException) -> float | None:
    """The server's `Retry-After` on an HTTP error, in seconds, or None.

    Accepts delay-seconds and HTTP-date forms (RFC 9110 §10.2.3) and OpenAI's
    `retry-after-ms`."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def unwrap(exc: BaseException) -> BaseException:
    """The API error inside instructor's wrapper, if any."""
    cause = exc.__cause__
    if type(exc).__name__ == "InstructorRetryException" and cause is not None:
        return cause
    return exc


def is_retryable(exc: BaseException) -> bool:
    """True for timeouts, lost connections, 408/409/429 and 5xx answers."""
    exc = unwrap(exc)
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in RETRY_STATUSES or exc.status_code >= 500
    return False


def counts_against_provider(exc: BaseException) -> bool:
    """True for errors that say the provider is unhealthy or misconfigured (retryable errors,
    401, 403), not that this one request was bad."""
    root = unwrap(exc)
    if is_retryable(root):
        return True
    return isinstance(root, openai.APIStatusError) and root.status_code in (401, 403)


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a provider error (no response bodies)."""
    exc = unwrap(exc)
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection failed"
    return type(exc).__name__
