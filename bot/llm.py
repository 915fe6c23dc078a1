"""Answer generation: an OpenAI-compatible chat endpoint, or extractive answers without one.

The prompt is: a system message with the rules (answer from the numbered passages, cite them as
[n], say so when they do not contain the answer), a system message with the passages, the
remembered turns, then the question. Passage numbers are document numbers, the same numbers
the reply's sources list uses.
"""

from __future__ import annotations

from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam

from bot.messages import Passage, Source
from bot.protocols import Generated, Turn

SYSTEM_PROMPT = (
    "You are a helpful assistant that answers questions from a knowledge base.\n"
    "Answer from the numbered passages when they are relevant, and cite them inline as [1], "
    "[2] by their numbers. If the passages do not contain the answer, say that the knowledge "
    "base does not cover it, then answer briefly from general knowledge only if you are sure. "
    "Be concise. Use the conversation so far to resolve follow-up questions."
)

NO_LLM_NOTE = "(No language model is configured, so this answer quotes the knowledge base.)"


def number_sources(passages: list[Passage]) -> tuple[list[Source], dict[str, int]]:
    """Sources in order of first appearance (one per document) and each URI's number (1-based).
    A document's score is its best passage's score."""
    sources: list[Source] = []
    numbers: dict[str, int] = {}
    for p in passages:
        if p.uri not in numbers:
            numbers[p.uri] = len(sources) + 1
            sources.append(Source(uri=p.uri, title=p.title, score=round(p.score, 4),
                                  section=p.section, page=p.page))
    return sources, numbers


def heading(title: str, section: str) -> str:
    """"Title > Section", without repeating a title that the section path starts with."""
    if not section or section == title:
        return title
    return section if section.startswith(title + " > ") else f"{title} > {section}"


def passages_block(passages: list[Passage]) -> str:
    _, numbers = number_sources(passages)
    parts = []
    for p in passages:
        where = heading(p.title, p.section)
        page = f" (page {p.page})" if p.page else ""
        parts.append(f"[{numbers[p.uri]}] {where}{page}\n{p.text}")
    return "Passages from the knowledge base:\n\n" + "\n\n".join(parts) if parts else \
        "The knowledge base returned no passages for this question."


class ChatGenerator:
    """Implements `bot.protocols.Generator` with the `openai` SDK (retries: 2, SDK default
    backoff on 408/409/429/5xx).

    Args:
        base_url: the endpoint, e.g. "http://127.0.0.1:11434/v1"; None for api.openai.com.
        timeout_s: per request.
        max_tokens: completion length limit.
    """

    def __init__(self, *, base_url: str | None, api_key: str | None, model: str,
                 timeout_s: float, temperature: float, max_tokens: int) -> None:
        self._client = AsyncOpenAI(base_url=base_url, api_key=api_key or "unused",
                                   timeout=timeout_s, max_retries=2)
        self.model = model
        self._temperature = temperature
        self._max_tokens = max_tokens

    async def generate(self, question: str, history: list[Turn], passages: list[Passage]
                       ) -> Generated:
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "system", "content": passages_block(passages)},
        ]
        for turn in history:
            if turn.role == "user":
                messages.append({"role": "user", "content": turn.content})
            else:
                messages.append({"role": "assistant", "content": turn.content})
        messages.append({"role": "user", "content": question})
        completion = await self._client.chat.completions.create(
            model=self.model, messages=messages, temperature=self._temperature,
            max_tokens=self._max_tokens)
        text = (completion.choices[0].message.content or "").strip() if completion.choices else ""
        usage = completion.usage
        return Generated(text=text or "(the model returned an empty answer)", model=self.model,
                         tokens_in=usage.prompt_tokens if usage else 0,
                         tokens_out=usage.completion_tokens if usage else 0)

    async def close(self) -> None:
        await self._client.close()


class ExtractiveGenerator:
    """Implements `bot.protocols.Generator` without a language model: quotes the best passages
    (at most `max_quotes`, each cut to `max_chars`) with their source numbers."""

    model = "extractive"

    def __init__(self, max_quotes: int = 3, max_chars: int = 600) -> None:
        self._max_quotes = max_quotes
        self._max_chars = max_chars

    async def generate(self, question: str, history: list[Turn], passages: list[Passage]
                       ) -> Generated:
        if not passages:
            return Generated(text="I found nothing about that in the knowledge base.\n"
                             + NO_LLM_NOTE, model=self.model)
        _, numbers = number_sources(passages)
        quotes = []
        for p in passages[: self._max_quotes]:
            text = " ".join(p.text.split())
            if len(text) > self._max_chars:
                text = text[: self._max_chars].rsplit(" ", 1)[0] + " …"
            quotes.append(f"[{numbers[p.uri]}] {heading(p.title, p.section)}:\n> {text}")
        return Generated(text="\n\n".join([*quotes, NO_LLM_NOTE]), model=self.model)
