"""Reading untrusted platform JSON: a field that should hold an object or a list of objects
may hold anything once the signature is checked (a client bug, a new shape), and reading it
must give a Skip or a 400, never an exception."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Skip:
    """A verified platform payload that is not a message for the bot (a bot's own message, an
    unhandled update kind, a guild message without a mention ...); `reason` is for the debug
    log. The one skip type of every normalizer."""

    reason: str


def obj(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else {}."""
    return value if isinstance(value, dict) else {}


def objs(value: Any) -> list[dict[str, Any]]:
    """The JSON objects in `value` if it is a list, else []."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
