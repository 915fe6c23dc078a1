"""Answer generators: an LLM through the router, or extractive answers without one."""

from __future__ import annotations

from typing import Any

from openai.types.chat import ChatCompletionMessageParam

from bot.llm.completion import Completion
from bot.llm.prompt import NO_LLM_NOTE, PromptBudget, build_prompt, heading, number_sources
from bot.llm.router import DeltaSink, LLMRouter, LLMUnavailable
from bot.log import get_logger
from bot.messages import Button, Passage
from bot.protocols import Generated, Toolbox, Turn

log = get_logger("bot.llm")

#: Model turns per answer when tools are offered: each but the last may call several tools;
#: the last may call none (`tool_choice` "none"), so the model answers from the results.
MAX_TOOL_ROUNDS = 4
TOOLS_NOTE = ("You may call the tools provided to act for the user. Call a tool only when the "
              "user asks for what it does. Tools run as the user who wrote the message; you "
              "cannot act for anybody else. When a tool result says it was not run yet, tell "
              "the user to press Confirm under your answer.")


def apology(trace_id: str) -> str:
    """What the user reads when no model answered."""
    return ("Sorry, I can't reach a language model right now, so I can't answer this. "
            f"Please try again in a few minutes. (trace id: {trace_id})")


class ChatGenerator:
    """Implements `bot.protocols.Generator` with the LLM router.

    The prompt (`bot.llm.prompt.build_prompt`) is trimmed to the smallest context window among
    the providers, minus `max_tokens` for the completion. The response cache is offered only
    when the prompt holds no conversation memory. When every provider fails, the answer is an
    apology with a trace id, and `Generated.error` says why (for the transcript).

    Args:
        router: the providers.
        temperature: sampling temperature, 0-2.
        max_tokens: completion length limit, tokens.
    """

    def __init__(self, router: LLMRouter, *, temperature: float, max_tokens: int) -> None:
        self.router = router
        self.model = router.model
        self._temperature = temperature
        self._max_tokens = max_tokens
        context = min(p.config.context_tokens for p in router.providers)
        self.budget = PromptBudget(context_tokens=context, max_tokens=max_tokens)

    async def generate(self, question: str, history: list[Turn], passages: list[Passage],
                       on_delta: DeltaSink | None = None,
                       tools: Toolbox | None = None) -> Generated:
        prompt = build_prompt(question, history, passages, self.budget)
        if prompt.dropped_turns or prompt.dropped_passages:
            log.info("prompt trimmed to the context window", tokens=prompt.tokens,
                     dropped_turns=prompt.dropped_turns,
                     dropped_passages=prompt.dropped_passages)
        if tools is not None and tools.schemas():
            try:
                return await self._with_tools(list(prompt.messages), tools)
            except LLMUnavailable as exc:
                return Generated(text=apology(exc.trace_id), model="none", error=str(exc),
                                 trace_id=exc.trace_id)
        try:
            completion = await self.router.complete(
                prompt.messages, temperature=self._temperature, max_tokens=self._max_tokens,
                on_delta=on_delta, cacheable=not history)
        except LLMUnavailable as exc:
            return Generated(text=apology(exc.trace_id), model="none", error=str(exc),
                             trace_id=exc.trace_id)
        return Generated(text=completion.text or "(the model returned an empty answer)",
                         model=completion.model, tokens_in=completion.tokens_in,
                         tokens_out=completion.tokens_out)

    async def _with_tools(self, messages: list[ChatCompletionMessageParam], tools: Toolbox
                          ) -> Generated:
        """Let the model call tools, feeding each result back, then return its answer: up to
        MAX_TOOL_ROUNDS turns, the last with `tool_choice` "none", so that it must answer and
        every tool that runs has its result read. Not streamed."""
        messages.insert(1, {"role": "system", "content": TOOLS_NOTE})
        buttons: list[Button] = []
        tokens_in = tokens_out = calls = 0
        completion: Completion | None = None
        for round_ in range(MAX_TOOL_ROUNDS):
            last = round_ == MAX_TOOL_ROUNDS - 1
            completion = await self.router.complete(
                messages, temperature=self._temperature, max_tokens=self._max_tokens,
                tools=tools.schemas(), tool_choice="none" if last else None)
            tokens_in += completion.tokens_in
            tokens_out += completion.tokens_out
            if last or not completion.tool_calls:
                break  # (calls a model makes unasked in the last turn are never run)
            assistant: dict[str, Any] = {
                "role": "assistant", "content": completion.text or None,
                "tool_calls": [{"id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": c.arguments}}
                               for c in completion.tool_calls]}
            messages.append(assistant)  # type: ignore[arg-type]
            for call in completion.tool_calls:
                output = await tools.call(call.name, call.arguments, calls)
                calls += 1
                buttons.extend(output.buttons)
                messages.append({"role": "tool", "tool_call_id": call.id,
                                 "content": output.content})
        assert completion is not None
        text = completion.text
        if not text:
            text = ("Please confirm below." if buttons
                    else "(the model returned an empty answer)")
        return Generated(text=text, model=completion.model, tokens_in=tokens_in,
                         tokens_out=tokens_out, buttons=tuple(buttons))

    async def close(self) -> None:
        await self.router.aclose()


class ExtractiveGenerator:
    """Implements `bot.protocols.Generator` without a language model: quotes the best passages
    (at most `max_quotes`, each cut to `max_chars`) with their source numbers."""

    model = "extractive"

    def __init__(self, max_quotes: int = 3, max_chars: int = 600) -> None:
        self._max_quotes = max_quotes
        self._max_chars = max_chars

    async def generate(self, question: str, history: list[Turn], passages: list[Passage],
                       on_delta: DeltaSink | None = None,
                       tools: Toolbox | None = None) -> Generated:
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
