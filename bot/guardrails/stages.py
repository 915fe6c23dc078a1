"""Pipeline stages that apply the guardrails (docs/architecture.md): input rails before
retrieval and generation, the passage check after retrieval, output rails before the reply is
sent."""

from __future__ import annotations

from dataclasses import replace

from bot.answers import AnswerStore
from bot.guardrails.base import RailContext, run_rails
from bot.guardrails.policy import Guardrails
from bot.guardrails.rails import kept_passage
from bot.log import get_logger
from bot.messages import Filtered, Reply
from bot.metrics import RAIL_VERDICTS
from bot.pipeline import Context, keep_answer

log = get_logger("bot.guardrails")


class InputRails:
    """Runs the input rails on the user's text. A block answers with the rail's message (no
    retrieval, no model, nothing remembered); a redaction replaces the message text for
    everything after it, the model and the transcript included."""

    def __init__(self, guardrails: Guardrails) -> None:
        self._rails = guardrails

    async def __call__(self, ctx: Context) -> None:
        if not self._rails.input_rails or ctx.answered_by:  # an action answered
            return
        rail_ctx = RailContext()
        outcome = await run_rails(self._rails.input_rails, ctx.message.text, rail_ctx,
                                  stage="input")
        ctx.verdicts.extend(v.record() for v in outcome.verdicts)
        ctx.knowledge_base_only = ctx.knowledge_base_only or rail_ctx.knowledge_base_only
        if outcome.blocked is not None:
            ctx.answered_by = "rail"
            ctx.reply = Reply(message_id=ctx.message.id, conversation=ctx.message.conversation,
                              text=outcome.blocked.message, meta=dict(ctx.message.meta))
        elif outcome.text != ctx.message.text:
            ctx.message = replace(ctx.message, text=outcome.text)


class CheckPassages:
    """Removes prompt injections from the retrieved passages (indirect injection): the units
    that carry one are cut and replaced by a marker, the rest of the passage is kept; a
    passage that is mostly adversarial is dropped (`InjectionRail.filter_passages`).

    Every removal is recorded, never silent: a `Filtered` entry on `ctx.filtered` (it goes on
    the reply, hence the transcript and `bot ask`), a verdict on `ctx.verdicts` (redact for a
    cut, block for a drop), `switchboard_rail_verdicts_total{rail, action}`, and an info log
    line with the document's URI (never the text). Not a warning: on a terminal, `bot ask`
    shows the removals with the answer instead of interleaving log lines with it.
    """

    def __init__(self, guardrails: Guardrails) -> None:
        self._rails = guardrails

    async def __call__(self, ctx: Context) -> None:
        injection = self._rails.injection
        if injection is None or not self._rails.passage_injection or not ctx.passages:
            return
        checks = await injection.filter_passages(ctx.passages)
        kept = []
        for passage, check in zip(ctx.passages, checks, strict=True):
            if (shown := kept_passage(passage, check)) is not None:
                kept.append(shown)
            verdict = injection.passage_verdict(passage, check) if check.cuts else None
            RAIL_VERDICTS.labels(injection.name, str(verdict.action if verdict else "allow")
                                 ).inc()
            if verdict is None:
                continue
            ctx.verdicts.append(verdict.record())
            ctx.filtered.append(Filtered(uri=passage.uri, reason=check.describe(),
                                         score=check.score, removed_chars=check.removed_chars))
            log.info("rail verdict", stage="passages", rail=verdict.rail,
                     action=str(verdict.action), reason=check.describe(), uri=passage.uri,
                     score=check.score, removed_chars=check.removed_chars)
        ctx.passages = kept


class OutputRails:
    """Runs the output rails on the answer: a redaction rewrites it, a block (no grounding)
    replaces it with the rail's message and drops its sources. The railed reply replaces the
    kept answer (`AnswerStore`), so a retry sends exactly what the first attempt began to
    send, even where a rail is not deterministic (an LLM judge). An action's reply (no model
    wrote it, nothing to ground) is only redacted, and not kept again: the redaction is a
    pure function of the kept text, so a retry redacts it the same way."""

    def __init__(self, guardrails: Guardrails, answers: AnswerStore | None = None) -> None:
        self._rails = guardrails
        self._answers = answers

    async def __call__(self, ctx: Context) -> None:
        # a rail's refusal and the apology for a model outage are ours, not the model's
        if ctx.answered_by not in ("action", "model") or ctx.railed \
                or not self._rails.output_rails or ctx.reply is None:
            return
        if ctx.answered_by == "action":
            ctx.reply = replace(ctx.reply, text=self._rails.redact_draft(ctx.reply.text))
            ctx.railed = True
            return
        rail_ctx = RailContext(passages=ctx.passages,
                               knowledge_base_only=ctx.knowledge_base_only)
        outcome = await run_rails(self._rails.output_rails, ctx.reply.text, rail_ctx,
                                  stage="output")
        ctx.verdicts.extend(v.record() for v in outcome.verdicts)
        if outcome.blocked is not None:
            ctx.reply = replace(ctx.reply, text=outcome.blocked.message, sources=())
        elif outcome.text != ctx.reply.text:
            ctx.reply = replace(ctx.reply, text=outcome.text)
        ctx.railed = True
        if self._answers is not None and ctx.generated is not None:
            await keep_answer(ctx, self._answers)
