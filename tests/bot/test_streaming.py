"""DraftStream: the first draft waits one interval, edits are rate-bounded, and a retry of
the same message edits the draft an earlier attempt posted (the handle lives in Redis)."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from bot.messages import Conversation, Message
from bot.protocols import DraftEditor
from bot.streaming import DraftStream


class RecordingEditor:
    """A DraftEditor that records calls (the platform side is covered by the scenario tests
    against the fake Slack, Telegram and Discord servers)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.posted = 0

    async def post_draft(self, message: Message, text: str) -> str | None:
        self.posted += 1
        self.calls.append(("post", text))
        return f"handle-{self.posted}"

    async def edit_draft(self, message: Message, handle: str, text: str) -> None:
        self.calls.append((f"edit {handle}", text))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def message() -> Message:
    conv = Conversation(platform="slack", workspace="T1", channel="C1", thread="1.1")
    return Message(id=f"slack:{uuid.uuid4().hex}", conversation=conv, user="U1", text="q")


async def test_drafts_are_rate_bounded_and_resumed_after_a_crash(redis: Redis) -> None:
    editor, clock, msg, prefix = RecordingEditor(), Clock(), message(), uuid.uuid4().hex[:8]
    assert isinstance(editor, DraftEditor)
    stream = DraftStream(editor, msg, redis, prefix, interval_s=1.0, clock=clock)
    for step, text in enumerate(["a. ", "a. b. ", "a. b. c. ", "a. b. c. d. ", "a. b. c. d. e"]):
        clock.now = step * 0.5  # a token every half second
        await stream(text)
        await asyncio.sleep(0.05)  # let the platform call in flight finish
    assert await stream.finish() == "handle-1"
    # t=0 and t=0.5: too early; t=1.0: first draft; t=1.5: too soon; t=2.0: an edit
    # drafts show finished sentences only: "e" is still being written at t=2.0
    assert editor.calls == [("post", "a. b. c. …"), ("edit handle-1", "a. b. c. d. …")]

    retry_editor = RecordingEditor()  # the process died; the message is retried elsewhere
    retry = DraftStream(retry_editor, msg, redis, prefix, interval_s=1.0, clock=clock)
    clock.now += 5
    await retry("x. ")
    clock.now += 1
    await retry("x. y. ")
    assert await retry.finish() == "handle-1"
    assert retry_editor.calls == [("edit handle-1", "x. y. …")]  # the same message, no new post


async def test_a_failing_platform_never_fails_the_answer(redis: Redis) -> None:
    class Broken(RecordingEditor):
        async def post_draft(self, message: Message, text: str) -> str | None:
            raise OSError("platform down")

    clock = Clock()
    stream = DraftStream(Broken(), message(), redis, "p", interval_s=0.5,
                         transform=str.upper, clock=clock)
    await stream("secret. ")
    clock.now = 1
    await stream("secret text. ")
    assert await stream.finish() is None


async def test_a_failed_generation_cancels_the_draft_in_flight(redis: Redis) -> None:
    class Slow(RecordingEditor):
        async def post_draft(self, message: Message, text: str) -> str | None:
            await asyncio.sleep(30)  # stuck in a rate-limit wait
            return await super().post_draft(message, text)

    clock, editor = Clock(), Slow()
    stream = DraftStream(editor, message(), redis, "p", interval_s=0.5, clock=clock)
    await stream("One. ")
    clock.now = 1
    await stream("One. Two. ")
    stream.cancel()
    assert await stream.finish(timeout_s=1) is None and editor.calls == []


def test_drafts_show_finished_sentences_only() -> None:
    from bot.streaming import complete_sentences

    assert complete_sentences("Pay with 4111 1111 1111 11") == ""
    assert complete_sentences("Done. Mail john.smith@example.c") == "Done."
    assert complete_sentences("Line one\nline tw") == "Line one"
    assert complete_sentences("版本已发布。请查") == "版本已发布。"
