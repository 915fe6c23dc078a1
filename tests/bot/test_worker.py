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
    worker = _worker(runtime, Pipeline([send, SaveMemory(runtime.memory)]), answers)
    msg = Message(id="webhook:w:after-send", user="u", text="q",
                  conversation=Conversation("webhook", "c-after", "w"))
    await runtime.inbox.enqueue(msg)
    await _run_until_finished(worker, runtime)
    assert send.sent == [msg.id]  # sent once, blips or not
    assert await runtime.inbox.backlog() == 0  # acknowledged
    assert (await answers.lookup(msg.id)).answered
    assert await runtime.memory.load(msg.conversation.key) == [
        Turn("user", "q"), Turn("assistant", "answer to q")]
    # one transaction per attempt, each holding the mark and the memory append first
    assert len(transactions) == blips + 1
    for names in transactions:
        assert names[:2] == ["SET", "EVAL"] and "XACK" in names and "MULTI" not in names


def _worker(runtime: Runtime, pipeline: Pipeline, answers: AnswerStore) -> Worker:
    return Worker(runtime.inbox, pipeline, runtime.order, index=0, claim_idle_s=30,
                  max_deliveries=3, block_ms=20, answers=answers)


async def _run_until_finished(worker: Worker, runtime: Runtime) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(400):
        if await runtime.inbox.backlog() == 0:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)  # what the worker does after the acknowledgement
    stop.set()
    await task


async def test_an_applied_exec_whose_reply_was_lost_still_counts_the_message(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The EXEC is applied, then the connection drops before its reply: the retry's pop finds
    the lease released by the first; the message is finished, counted and sent once."""
    answers = AnswerStore(runtime.redis, runtime.settings.bot_key_prefix, ttl_s=60,
                          answered_ttl_s=60)
    send = Send(answers)
    execute = RedisPipeline.execute
    lose = {"left": 1}

    async def observed(self: RedisPipeline, raise_on_error: bool = True) -> list[Any]:
        names = [str(args[0]).upper() for args, _ in self.command_stack]
        replies = await execute(self, raise_on_error=raise_on_error)
        if "XACK" in names and lose["left"]:
            lose["left"] -= 1
            raise RedisConnectionError("reply lost after EXEC (test)")
        return replies

    monkeypatch.setattr(RedisPipeline, "execute", observed)
    # the pop script cached (as after any earlier message), so the first EXEC applies it
    await runtime.redis.script_load(runtime.order.pop_script.script)
    worker = _worker(runtime, Pipeline([send]), answers)
    msg = Message(id="webhook:w:lost-reply", user="u", text="q",
                  conversation=Conversation("webhook", "c-lost", "w"))
    await runtime.inbox.enqueue(msg)
    await _run_until_finished(worker, runtime)
    assert send.sent == [msg.id] and worker.processed == 1
    assert (await answers.lookup(msg.id)).answered


async def test_memory_lands_with_the_acknowledgement_after_redis_lost_its_scripts(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """After SCRIPT FLUSH (a restart, a failover) the memory append still goes in the
    finishing transaction, not in a fallback after it: by the time the conversation is
    released its exchange is remembered."""
    answers = AnswerStore(runtime.redis, runtime.settings.bot_key_prefix, ttl_s=60,
                          answered_ttl_s=60)
    alone: list[str] = []

    async def append_alone(self: Any, key: str, turns: Any, once_id: str = "") -> None:
        alone.append(key)

    monkeypatch.setattr(type(runtime.memory), "append", append_alone)
    await runtime.redis.script_flush()
    await runtime.redis.script_load(runtime.order.pop_script.script)
    worker = _worker(runtime, Pipeline([Send(answers), SaveMemory(runtime.memory)]), answers)
    msg = Message(id="webhook:w:flushed", user="u", text="q",
                  conversation=Conversation("webhook", "c-flushed", "w"))
    await runtime.inbox.enqueue(msg)
    await _run_until_finished(worker, runtime)
    assert alone == []  # no standalone append after the transaction
    assert await runtime.memory.load(msg.conversation.key) == [
        Turn("user", "q"), Turn("assistant", "answer to q")]


async def test_a_defect_in_the_loop_does_not_end_the_worker(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception outside a message's run (here: reading the inbox's reply) is
    logged and waited out; the worker goes on, and answers the message it had read once the
    entry's claim time has passed."""
    prefix = runtime.settings.bot_key_prefix
    answers = AnswerStore(runtime.redis, prefix, ttl_s=60, answered_ttl_s=60)
    send = Send(answers)
    worker = Worker(runtime.inbox, Pipeline([send]), runtime.order, index=0, claim_idle_s=0.5,
                    max_deliveries=3, block_ms=20, answers=answers)
    read_reply = runtime.inbox.read_reply
    failures = {"left": 2}

    def flaky(response: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise ValueError("a defect (test)")
        return read_reply(response)

    monkeypatch.setattr(runtime.inbox, "read_reply", flaky)
    msg = Message(id="webhook:w:after-defect", user="u", text="q",
                  conversation=Conversation("webhook", "c-defect", "w"))
    assert await runtime.inbox.enqueue(msg)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(200):
        if send.sent:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert failures["left"] == 0 and send.sent == [msg.id]
