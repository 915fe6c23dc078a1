"""The worker's finishing transaction: the writes that follow a sent reply (the answered mark,
memory) go in the round trip that acknowledges the message, and survive a Redis blip there
without the reply being sent again. Real Redis; the blip is a dropped EXEC."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio.client import Pipeline as RedisPipeline
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.answers import AnswerStore
from bot.messages import Conversation, Message, Reply
from bot.pipeline import Context, Pipeline, SaveMemory
from bot.protocols import Turn
from bot.runtime import Runtime
from bot.worker import Worker


class Send:
    """A send stage: records the reply and queues the answered mark (as SendReply does)."""

    def __init__(self, answers: AnswerStore) -> None:
        self.sent: list[str] = []
        self._answers = answers

    async def __call__(self, ctx: Context) -> None:
        ctx.reply = Reply(message_id=ctx.message.id, conversation=ctx.message.conversation,
                          text=f"answer to {ctx.message.text}")
        ctx.answered_by = "model"
        self.sent.append(ctx.message.id)
        ctx.after_send.append(self._answers.mark_answered_after_send(ctx.message.id))


@pytest.mark.parametrize("blips", [0, 2])
async def test_writes_after_the_reply_ride_with_the_acknowledgement(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch, blips: int) -> None:
    prefix = runtime.settings.bot_key_prefix
    answers = AnswerStore(runtime.redis, prefix, ttl_s=60, answered_ttl_s=60)
    send = Send(answers)
    transactions: list[list[str]] = []
    execute = RedisPipeline.execute
    failures = {"left": blips}

    async def observed(self: RedisPipeline, raise_on_error: bool = True) -> list[Any]:
        names = [str(args[0]).upper() for args, _ in self.command_stack]
        if "XACK" in names:
            transactions.append(names)
            if failures["left"]:  # the connection drops before EXEC's reply
                failures["left"] -= 1
                await self.reset()  # type: ignore[no-untyped-call]
                raise RedisConnectionError("connection lost (test)")
        return await execute(self, raise_on_error=raise_on_error)

    monkeypatch.setattr(RedisPipeline, "execute", observed)
    worker = Worker(runtime.inbox, Pipeline([send, SaveMemory(runtime.memory)]),
                    runtime.order, index=0, claim_idle_s=30, max_deliveries=3, block_ms=20,
                    answers=answers)
    msg = Message(id="webhook:w:after-send", user="u", text="q",
                  conversation=Conversation("webhook", "c-after", "w"))
    await runtime.inbox.enqueue(msg)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(400):
        if await runtime.inbox.backlog() == 0:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert send.sent == [msg.id]  # sent once, blips or not
    assert await runtime.inbox.backlog() == 0  # acknowledged
    assert (await answers.lookup(msg.id)).answered
    assert await runtime.memory.load(msg.conversation.key) == [
        Turn("user", "q"), Turn("assistant", "answer to q")]
    # one transaction per attempt, each holding the mark and the memory append first
    assert len(transactions) == blips + 1
    for names in transactions:
        assert names[:2] == ["SET", "EVALSHA"] and "XACK" in names and "MULTI" not in names
