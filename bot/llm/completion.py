"""What a model call returns: `Completion` and the `ToolCall`s in it (shared by the router
and its response cache, which neither imports the other's module for)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


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


def gen_ai_request(provider: str, model: str, base_url: str | None,
                   purpose: str) -> dict[str, Any]:
    """A model call's span attributes, per the GenAI semantic conventions
    (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/); never the messages."""
    parts = urlsplit(base_url or "https://api.openai.com/v1")
    return {"gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai" if base_url is None else provider,
            "gen_ai.request.model": model, "server.address": parts.hostname or "",
            "server.port": parts.port or (443 if parts.scheme == "https" else 80),
            "switchboard.llm.provider": provider, "switchboard.llm.purpose": purpose}


def gen_ai_usage(completion: Completion) -> dict[str, Any]:
    """A finished call's span attributes: the model that answered and the tokens used."""
    return {"gen_ai.response.model": completion.model,
            "gen_ai.usage.input_tokens": completion.tokens_in,
            "gen_ai.usage.output_tokens": completion.tokens_out}
