"""Pipeline stages are idempotent under redelivery: one generation, one memory append."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import pytest

from adapters.webhook.send import CallbackError
from bot.answers import AnswerStore, Kept
from bot.config import Settings
from bot.guardrails.policy import GuardrailPolicy, build_guardrails
from bot.guardrails.stages import OutputRails
from bot.messages import Conversation, Message, Passage
from bot.pipeline import Generate, Pipeline, SaveMemory
from bot.protocols import Generated, Toolbox, Turn
from bot.runtime import Runtime
from tests.fakes.openai_server import CallbackRecorder, FakeOpenAI


class CountingGenerator:
    def __init__(self) -> None:
        self.calls = 0

    async def generate(self, question: str, history: list[Turn], passages: list[Passage],
                       on_delta: Callable[[str], Awaitable[None]] | None = None,
                       tools: Toolbox | None = None) -> Generated:
        self.calls += 1
        return Generated(text=f"answer #{self.calls}", model="counting", tokens_in=3)


class FailingSend:
    """Fails the first `failures` sends."""

    def __init__(self, failures: int = 2) -> None:
        self.seen: list[str] = []
        self.failures = failures

    async def __call__(self, ctx) -> None:  # type: ignore[no-untyped-def]
        self.seen.append(ctx.reply.text)
        if len(self.seen) <= self.failures:
            raise ConnectionResetError("platform down")


async def test_a_retried_message_reuses_its_answer_and_memory(runtime: Runtime) -> None:
    generator = CountingGenerator()
    send = FailingSend()
    prefix = runtime.settings.bot_key_prefix
    answers = AnswerStore(runtime.redis, prefix, ttl_s=60, answered_ttl_s=60)
    pipeline = Pipeline([Generate(generator, answers, runtime.redis, prefix), send,
                         SaveMemory(runtime.memory)])
    msg = Message(id="retry-me", conversation=Conversation("webhook", "c", "w"), user="u",
                  text="question")
    for _ in range(4):  # two failed sends, one that went out, and a redelivery after it
        try:
            await pipeline.run(msg)
        except ConnectionResetError:
            assert await runtime.memory.load(msg.conversation.key) == []  # not sent: not kept
    assert generator.calls == 1
    assert send.seen == ["answer #1"] * 4
    turns = await runtime.memory.load(msg.conversation.key)
    assert [(t.role, t.content) for t in turns] == [("user", "question"),
                                                   ("assistant", "answer #1")]


async def test_an_answer_that_could_not_be_sent_is_not_remembered(
        make_settings: Callable[..., Settings], fake_llm: FakeOpenAI,
        callback: CallbackRecorder) -> None:
    # finding 3: a failed exchange was written into memory before the send failed, so the
    # next question was answered in the context of an answer its author never saw
    callback.status = 503
    settings = make_settings(llm_base_url=fake_llm.base_url, llm_stream=False,
                             webhook_callback_url=callback.url)
    msg = Message(id="webhook:support:m1", conversation=Conversation("webhook", "c1"),
                  user="u1", text="What is zlib's CHUNK?", meta={"id": "m1"})
    async with Runtime(settings) as rt:
        with pytest.raises(CallbackError):
            await rt.pipeline.run(msg)
        assert await rt.memory.load(msg.conversation.key) == []
        callback.status = 200
        await rt.pipeline.run(msg)
        turns = await rt.memory.load(msg.conversation.key)
    assert [t.role for t in turns] == ["user", "assistant"]
    assert turns[1].content.startswith("ANSWER to: What is zlib's CHUNK?")


async def test_top_k_zero_turns_retrieval_off() -> None:
    from bot.pipeline import Context, Retrieve

    class Exploding:
        async def retrieve(self, query: str, top_k: int) -> list[Passage]:
            raise AssertionError("retrieval should be off")

    class Counting:
        calls = 0

        async def retrieve(self, query: str, top_k: int) -> list[Passage]:
            self.calls += 1
            return []

    msg = Message(id="m", conversation=Conversation("webhook", "c", "w"), user="u", text="q")
    await Retrieve(Exploding(), 0)(Context(msg))
    counting = Counting()
    await Retrieve(counting, 3)(Context(msg))
    assert counting.calls == 1


async def test_text_that_shows_nothing_is_not_sent_to_the_model(
        make_settings: Callable[..., Settings], fake_llm: FakeOpenAI) -> None:
    async with Runtime(make_settings(llm_base_url=fake_llm.base_url)) as rt:
        for i, text in enumerate(["\u200b\u200e\u2066", " \t\u00a0", "\ufeff\u2069"]):
            ctx = await rt.pipeline.run(Message(
                id=f"webhook:w:blank-{i}", user="u", text=text,
                conversation=Conversation("webhook", "blank", "w")))
            assert ctx.reply is None and ctx.skipped_reason == "nothing to answer"
        ctx = await rt.pipeline.run(Message(
            id="webhook:w:seen", user="u", text="\u200bhello",
            conversation=Conversation("webhook", "blank", "w")))
        assert ctx.reply is not None
    assert len(fake_llm.requests) == 1


async def test_with_deterministic_output_rails_the_railed_answer_is_kept_once(
        runtime: Runtime) -> None:
    """`keep_before_rails=False`: the output rails keep the railed answer (one SET, not two);
    a retry after a failed send reuses it (one generation). A failure between generation and
    the rails' keep would pay for the model again: nothing was sent, so no reply doubles."""
    generator = CountingGenerator()
    send = FailingSend()
    prefix = runtime.settings.bot_key_prefix
    answers = AnswerStore(runtime.redis, prefix, ttl_s=60, answered_ttl_s=60)
    rails = build_guardrails(GuardrailPolicy.model_validate({"input": {"injection": False}}))
    assert rails.output_rails and not rails.output_calls_model
    kept: list[str] = []
    keep = answers.keep

    async def counted_keep(message_id: str, answer: Kept) -> None:
        kept.append(answer.reply.text)
        await keep(message_id, answer)

    answers.keep = counted_keep  # type: ignore[method-assign, assignment]
    pipeline = Pipeline([Generate(generator, answers, runtime.redis, prefix,
                                  keep_before_rails=False),
                         OutputRails(rails, answers), send])
    msg = Message(id="railed-once", conversation=Conversation("webhook", "c", "w"), user="u",
                  text="question")
    for _ in range(3):
        with contextlib.suppress(ConnectionResetError):
            await pipeline.run(msg)
    assert generator.calls == 1
    assert kept == ["answer #1"]  # kept once, by the output rails
    assert (await answers.load(msg.id)).railed  # type: ignore[union-attr]
    assert send.seen == ["answer #1"] * 3
