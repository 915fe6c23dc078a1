"""Language models: the provider router, prompt building and answer generators.

- `providers`: `LLM_PROVIDERS` parsing (any OpenAI-compatible endpoint).
- `router`: retries, Retry-After, failover, circuit breaker, streaming, structured outputs.
- `cache`: the Redis response cache for deterministic calls.
- `prompt`: the answer prompt and its trimming to the context window (tiktoken).
- `generators`: `ChatGenerator` (router) and `ExtractiveGenerator` (no model).

Names are imported on first use (PEP 562), so that `bot.config`, which needs `providers`
only, does not load the OpenAI SDK, instructor and tiktoken for every command (`bot --help`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.llm.completion import Completion
    from bot.llm.generators import ChatGenerator, ExtractiveGenerator, apology
    from bot.llm.prompt import (
        NO_LLM_NOTE,
        SYSTEM_PROMPT,
        PromptBudget,
        build_prompt,
        count_tokens,
        heading,
        number_sources,
        passages_block,
    )
    from bot.llm.router import LLMRouter, LLMUnavailable

_HOMES = {
    "ChatGenerator": "generators", "ExtractiveGenerator": "generators", "apology": "generators",
    "NO_LLM_NOTE": "prompt", "SYSTEM_PROMPT": "prompt", "PromptBudget": "prompt",
    "build_prompt": "prompt", "count_tokens": "prompt", "heading": "prompt",
    "number_sources": "prompt", "passages_block": "prompt",
    "Completion": "completion", "LLMRouter": "router", "LLMUnavailable": "router",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'bot.llm' has no attribute {name!r}")
    return getattr(importlib.import_module(f"bot.llm.{home}"), name)


__all__ = ["NO_LLM_NOTE", "SYSTEM_PROMPT", "ChatGenerator", "Completion", "ExtractiveGenerator",
           "LLMRouter", "LLMUnavailable", "PromptBudget", "apology", "build_prompt",
           "count_tokens", "heading", "number_sources", "passages_block"]
