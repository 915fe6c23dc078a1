"""Language models: the provider router, prompt building and answer generators.

- `providers`: `LLM_PROVIDERS` parsing (any OpenAI-compatible endpoint).
- `router`: retries, Retry-After, failover, circuit breaker, streaming, structured outputs.
- `cache`: the Redis response cache for deterministic calls.
- `prompt`: the answer prompt and its trimming to the context window (tiktoken).
- `generators`: `ChatGenerator` (router) and `ExtractiveGenerator` (no model).
"""

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
from bot.llm.router import Completion, LLMRouter, LLMUnavailable

__all__ = ["NO_LLM_NOTE", "SYSTEM_PROMPT", "ChatGenerator", "Completion", "ExtractiveGenerator",
           "LLMRouter", "LLMUnavailable", "PromptBudget", "apology", "build_prompt",
           "count_tokens", "heading", "number_sources", "passages_block"]
