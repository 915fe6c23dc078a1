"""What a model call returns: `Completion` and the `ToolCall`s in it (shared by the router
and its response cache, which neither imports the other's module for)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ToolCall:
    """A function call the model asked for: `arguments` is its JSON text, unparsed."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Completion:
    """A model's answer. `provider` is the provider's name ("cache" for a cached answer);
    `tool_calls` are the tools the model wants called before it answers (then `text` is
    usually empty)."""

    text: str
    model: str
    provider: str
    tokens_in: int = 0
    tokens_out: int = 0
    cached: bool = False
    tool_calls: tuple[ToolCall, ...] = ()
