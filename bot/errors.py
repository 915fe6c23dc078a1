"""The error tree of Switchboard. Every error the CLI or HTTP layer may show derives from
`BotError` and carries a message fit for a user (no secrets, no tracebacks)."""

from __future__ import annotations


class BotError(Exception):
    """Base of every error Switchboard raises on purpose."""


class ConfigError(BotError):
    """A setting is missing or invalid; the message names the variable."""


class ServiceUnavailable(BotError):
    """Postgres or Redis cannot be reached (or an embedded server failed to start)."""


class PayloadError(BotError):
    """An inbound payload is well-formed JSON but not the shape the adapter expects."""


class KnowledgeError(BotError):
    """A source could not be loaded, chunked or stored."""


class MigrationError(BotError):
    """The schema could not be brought up to date."""


class TransientError(BotError):
    """An outside service failed in a way worth retrying later (connection lost, timeout,
    overload). Adapters raise it for their platform's transient errors; the worker does not
    count such failures against BOT_MAX_DELIVERIES."""


class BacklogFull(ServiceUnavailable):
    """The inbox already holds BOT_MAX_BACKLOG entries; ingress answers 503 + Retry-After."""
