"""Reading untrusted platform JSON: a field that should hold an object or a list of objects
may hold anything once the signature is checked (a client bug, a new shape), and reading it
must give a Skip or a 400, never an exception."""

from __future__ import annotations

from typing import Any


def obj(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else {}."""
    return value if isinstance(value, dict) else {}


def objs(value: Any) -> list[dict[str, Any]]:
    """The JSON objects in `value` if it is a list, else []."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
