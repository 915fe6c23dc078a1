"""Optional error tracking with Sentry (https://docs.sentry.io/platforms/python/), on when
`SENTRY_DSN` is set, for the long-running processes (`bot run`, `bot worker`).

Every error-level log line is an event (Sentry's logging integration; the exception it carries
included), scrubbed by the same redaction as the logs (bot/log.py: secret settings wherever
they appear, and the values of secret-named keys). No local variables, request bodies or
default PII are sent; no performance tracing (that is OpenTelemetry's, bot/tracing.py). Off,
the Sentry SDK is not imported.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.config import Settings
from bot.log import SecretRedactor

#: The longest an exit waits for queued events, seconds.
FLUSH_S = 2.0

_on = False


def start(settings: Settings) -> bool:
    """Initialize the Sentry SDK when SENTRY_DSN is set; True if it is now on."""
    global _on
    if settings.sentry_dsn is None:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    redactor = SecretRedactor(settings.secret_values())

    def scrub(event: Any, _hint: Any) -> Any:
        return redactor.scrub(event)

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(), before_send=scrub, send_default_pii=False,
        include_local_variables=False, max_request_body_size="never", traces_sample_rate=None,
        shutdown_timeout=FLUSH_S,
        integrations=[LoggingIntegration(level=None, event_level=logging.ERROR)])
    _on = True
    return True


def stop() -> None:
    """Send what is queued (at most FLUSH_S) and stop."""
    global _on
    if not _on:
        return
    import sentry_sdk

    sentry_sdk.get_client().close(timeout=FLUSH_S)
    _on = False
