"""The pipeline: a list of small stages run in order on one message's `Context`.

Default chain (docs/architecture.md): already-answered check -> inbound rate limit -> action
routing -> blank check -> memory load -> typing indicator -> input rails -> retrieve -> passage
check -> generate -> output rails -> transcript row -> send -> memory save. A stage
stops the chain by setting `ctx.done`. Stages are classes with one async method, composed by
the runtime.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from redis.asyncio import Redis

from bot import tracing
from bot.answers import AnswerStore, Kept, Lookup
from bot.errors import TransientError
from bot.llm import number_sources
from bot.log import get_logger
from bot.messages import Filtered, Message, Passage, Reply, is_blank
from bot.metrics import STAGE_LATENCY
from bot.protocols import (
    AfterSend,
    DraftEditor,
    Generated,
    Generator,
    Memory,
    Retriever,
    Sender,
    Toolbox,
    Turn,
    TypingIndicator,
)
from bot.streaming import DraftStream
from bot.transcript import Transcript

log = get_logger("bot.pipeline")


#: Who wrote `Context.reply`: nobody yet (""), an action, a rail (an input rail refused the
#: message), the model, or ourselves for a model outage (the apology). The stages after the
#: first answer read this one field to know what is left: retrieval and generation only while
#: nobody answered; output rails on a model's answer (an action's only redacted); memory only
#: for a model's answer.
AnsweredBy = Literal["", "action", "rail", "model", "outage"]


@dataclass
class Context:
    """Per-message state handed from stage to stage. `answered_by` is the message's state:
    who answered (see `AnsweredBy`); `railed` whether the output rails have run on that
    answer; `done` stops the chain (`skipped_reason` says why, for the log)."""

    message: Message
    started: float = field(default_factory=time.perf_counter)
    history: list[Turn] = field(default_factory=list)
    passages: list[Passage] = field(default_factory=list)
    generated: Generated | None = None
    reply: Reply | None = None
    verdicts: list[dict[str, object]] = field(default_factory=list)
    # what the passage rails removed from `passages`, one entry per passage cut or dropped
    filtered: list[Filtered] = field(default_factory=list)
    answered_by: AnsweredBy = ""
    knowledge_base_only: bool = False  # answer from the knowledge base only (grounding)
    railed: bool = False  # the output rails have run on `reply` (kept for retries)
    action: str = ""  # the name of the action that wrote `reply`, when one did
    done: bool = False
    skipped_reason: str = ""
    stage: str = ""  # the stage running now (named in a timeout's log line)
    # milliseconds each stage took so far, by stage class name (the transcript row keeps them)
    stage_ms: dict[str, int] = field(default_factory=dict)
    # the message's kept answer and answered mark as `AlreadyAnswered` read them
    lookup: Lookup | None = None
    # writes that follow the sent reply (answered mark, memory), for the worker's finishing
    # transaction (or run by `Pipeline.run` itself when not deferred)
    after_send: list[AfterSend] = field(default_factory=list)

    @property
    def latency_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


class Stage(Protocol):
    async def __call__(self, ctx: Context) -> None: ...


class AlreadyAnswered:
    """Stops the chain for a message whose reply was already sent (a redelivery after a crash
    between send and acknowledge; the mark is set by `SendReply`). Reads the message's kept
    answer in the same round trip (`ctx.lookup`), for the stages that restore it."""

    def __init__(self, answers: AnswerStore) -> None:
        self._answers = answers

    async def __call__(self, ctx: Context) -> None:
        if ctx.lookup is None:
            ctx.lookup = await self._answers.lookup(ctx.message.id)
        if ctx.lookup.answered:
            ctx.done = True
            ctx.skipped_reason = "already answered"


class SkipBlank:
    """Stops the chain for a message whose text shows nothing (only spaces, zero-width or bidi
    characters): there is nothing to answer, and a model would only guess. Runs after action
    routing, so buttons and platform commands without text still work."""

    async def __call__(self, ctx: Context) -> None:
        if not ctx.answered_by and is_blank(ctx.message.text):
            ctx.done = True
            ctx.skipped_reason = "nothing to answer"


class LoadMemory:
    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    async def __call__(self, ctx: Context) -> None:
        if not ctx.answered_by:
            ctx.history = await self._memory.load(ctx.message.conversation.key)


class ShowTyping:
    """Shows the platform's typing/"thinking" state where its sender can (`TypingIndicator`).
    Best effort: a failure or a slow platform (over `timeout_s`) never delays the answer much
    and never fails the message."""

    def __init__(self, senders: Mapping[str, Sender], timeout_s: float = 2.0) -> None:
        self._senders = senders
        self._timeout_s = timeout_s

    async def __call__(self, ctx: Context) -> None:
        sender = self._senders.get(ctx.message.conversation.platform)
        if not ctx.answered_by and isinstance(sender, TypingIndicator):
            try:
                await asyncio.wait_for(sender.typing(ctx.message), self._timeout_s)
            except Exception as exc:
                log.debug("typing indicator failed", error=type(exc).__name__)


class Retrieve:
    def __init__(self, retriever: Retriever, top_k: int) -> None:
        self._retriever = retriever
        self._top_k = top_k

    async def __call__(self, ctx: Context) -> None:
        if self._top_k > 0 and not ctx.answered_by:
            ctx.passages = await self._retriever.retrieve(ctx.message.text, self._top_k)


class Generate:
    """Writes the answer and builds the `Reply` with the retrieved documents as its sources.

    The reply is kept (`AnswerStore.keep`) before anything else happens, so a retry of the
    message (a failed send, a crash) sends the same answer, and memory, transcript and
    platform all agree, without paying for the model twice.

    Streaming: when `stream_interval_s` is set and the platform's sender can edit messages
    (`DraftEditor`), the answer is shown as it arrives in one message edited at most once per
    `stream_interval_s` (`bot.streaming.DraftStream`); the reply then finishes that message
    (`reply.draft`). `draft_transform` is applied to drafts (output redaction).

    Tools: `tools(message)` gives the tools the model may call for this message (the actions
    its author may run), or None.

    `keep_before_rails=False` (the output rails that follow keep the answer themselves, and
    make no call that could fail or take long): the answer is kept once, railed, instead of
    twice; it is still kept here when a draft was shown, tools were offered (an action may
    have run) or it is the apology for a model outage (the output rails skip it).
    """

    def __init__(self, generator: Generator, answers: AnswerStore, redis: Redis, prefix: str, *,
                 senders: Mapping[str, Sender] | None = None,
                 stream_interval_s: float | None = None,
                 draft_transform: Callable[[str], str] | None = None,
                 tools: Callable[[Message], Awaitable[Toolbox | None]] | None = None,
                 keep_before_rails: bool = True) -> None:
        self._generator = generator
        self._keep_before_rails = keep_before_rails
        self._tools = tools
        self._answers = answers
        self._redis = redis
        self._prefix = prefix
        self._senders = senders or {}
        self._stream_interval_s = stream_interval_s
        self._draft_transform = draft_transform

    def _draft_stream(self, message: Message) -> DraftStream | None:
        sender = self._senders.get(message.conversation.platform)
        if self._stream_interval_s is None or not isinstance(sender, DraftEditor):
            return None
        return DraftStream(sender, message, self._redis, self._prefix,
                           interval_s=self._stream_interval_s, transform=self._draft_transform)

    async def __call__(self, ctx: Context) -> None:
        if ctx.answered_by:  # an action or a rail answered
            return
        if await restore_answer(ctx, self._answers):
            return
        toolbox = await self._tools(ctx.message) if self._tools is not None else None
        draft = self._draft_stream(ctx.message)
        try:
            if toolbox is None:  # (generators without tools keep their old signature)
                ctx.generated = await self._generator.generate(
                    ctx.message.text, ctx.history, ctx.passages, on_delta=draft)
            else:
                ctx.generated = await self._generator.generate(
                    ctx.message.text, ctx.history, ctx.passages, on_delta=draft, tools=toolbox)
        except BaseException:
            if draft is not None:
                draft.cancel()
            raise
        handle = await draft.finish() if draft is not None else None
        sources, _ = number_sources(ctx.passages)
        ctx.reply = Reply(message_id=ctx.message.id, conversation=ctx.message.conversation,
                          text=ctx.generated.text, sources=tuple(sources),
                          meta=dict(ctx.message.meta), buttons=ctx.generated.buttons,
                          filtered=tuple(ctx.filtered), draft=handle)
        ctx.answered_by = "outage" if ctx.generated.error else "model"
        if self._keep_before_rails or handle is not None or toolbox is not None \
                or ctx.answered_by == "outage":
            await keep_answer(ctx, self._answers)


async def restore_answer(ctx: Context, answers: AnswerStore) -> bool:
    """Restore the message's kept answer into `ctx` (from `ctx.lookup` when the run read it,
    else with one GET); False when there is none."""
    kept = ctx.lookup.kept if ctx.lookup is not None else await answers.load(ctx.message.id)
    if kept is None:
        return False
    ctx.reply = kept.reply
    ctx.generated = kept.generated
    ctx.railed = kept.railed
    ctx.action = kept.action
    ctx.answered_by = kept.answered_by
    ctx.verdicts.extend(kept.verdicts)
    return True


async def keep_answer(ctx: Context, answers: AnswerStore) -> None:
    """Keep the reply (and, once the output rails ran, their verdicts) for retries."""
    assert ctx.reply is not None and ctx.generated is not None
    assert ctx.answered_by in ("action", "model", "outage"), ctx.answered_by
    kept = Kept(ctx.reply, ctx.generated, ctx.railed, ctx.action, list(ctx.verdicts),
                ctx.answered_by)
    await answers.keep(ctx.message.id, kept)
    ctx.lookup = Lookup(ctx.lookup.answered if ctx.lookup else False, kept)


class SaveMemory:
    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    async def __call__(self, ctx: Context) -> None:
        # neither a refused message, an action's reply nor the apology for a model outage is
        # worth remembering
        if ctx.reply is not None and ctx.answered_by == "model":
            write = self._memory.append_after_send(
                ctx.message.conversation.key,
                [Turn("user", ctx.message.text), Turn("assistant", ctx.reply.text)],
                once_id=ctx.message.id)
            if write is not None:
                ctx.after_send.append(write)


class RecordTranscript:
    def __init__(self, transcript: Transcript) -> None:
        self._transcript = transcript

    async def __call__(self, ctx: Context) -> None:
        if ctx.reply is not None:
            await self._transcript.record(ctx.message, ctx.reply, ctx.generated,
                                          ctx.latency_ms, ctx.verdicts,
                                          action=ctx.action or None,
                                          filtered=ctx.reply.filtered,
                                          stage_ms=ctx.stage_ms)


class SendReply:
    """Sends through the sender registered for the message's platform, then marks the message
    answered (for `AlreadyAnswered`): the mark is an after-send write (`Context.after_send`).
    Stages after this one do no I/O of their own: they only queue after-send writes, so nothing
    can fail between the send and the mark but the worker's one finishing transaction."""

    def __init__(self, senders: Mapping[str, Sender], answers: AnswerStore) -> None:
        self._senders = senders
        self._answers = answers

    async def __call__(self, ctx: Context) -> None:
        if ctx.reply is None:
            return
        platform = ctx.message.conversation.platform
        sender = self._senders.get(platform)
        if sender is None:
            raise LookupError(f"no sender for platform {platform!r}")
        with tracing.span(f"send {platform}", "client", {"switchboard.platform": platform}):
            await sender.send(ctx.reply)
        ctx.after_send.append(self._answers.mark_answered_after_send(ctx.message.id))


class StageTimeout(TransientError):
    """A message took longer than BOT_MESSAGE_TIMEOUT_S; it is retried, and its conversation
    is not held up forever by one stuck call."""


class Pipeline:
    """Runs stages in order until one sets `ctx.done`; exceptions propagate to the worker.

    Args:
        timeout_s: the longest one message may take through all stages (BOT_MESSAGE_TIMEOUT_S);
            past it the run is cancelled and raises StageTimeout naming the stage.
    """

    def __init__(self, stages: Sequence[Stage], timeout_s: float = 300.0) -> None:
        self.stages = list(stages)
        self.timeout_s = timeout_s
        # each stage's latency histogram, its label looked up once
        self._timers = [STAGE_LATENCY.labels(type(stage).__name__) for stage in self.stages]

    async def run(self, message: Message, lookup: Lookup | None = None, *,
                  defer_after_send: bool = False) -> Context:
        """Run the stages on `message`; `lookup` is its answer state when the caller read it
        already (the worker, in the round trip that counts the attempt). The after-send writes
        (`Context.after_send`) are run here, one by one, unless `defer_after_send`: then the
        caller runs them (the worker, on the transaction that acknowledges the message)."""
        ctx = Context(message, lookup=lookup)
        try:
            async with asyncio.timeout(self.timeout_s):
                traced = tracing.enabled()
                for stage, timer in zip(self.stages, self._timers, strict=True):
                    ctx.stage = type(stage).__name__
                    started = time.perf_counter()
                    if traced:
                        with tracing.span(f"stage {ctx.stage}"):
                            await stage(ctx)
                    else:
                        await stage(ctx)
                    took_s = time.perf_counter() - started
                    timer.observe(took_s)
                    ctx.stage_ms[ctx.stage] = round(took_s * 1000)
                    if ctx.done:
                        break
        except TimeoutError as exc:
            raise StageTimeout(f"message {message.id} took over {self.timeout_s:g} s in "
                               f"stage {ctx.stage}") from exc
        if not defer_after_send:
            for write in ctx.after_send:
                await write.run()
        return ctx
