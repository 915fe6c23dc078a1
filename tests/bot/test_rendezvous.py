"""The reply hand-off between a worker's sender and a waiting caller (bot/rendezvous.py), on a
real Redis: a reply counts as delivered only when its caller is still there to get it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis

from bot.messages import NOTICE_META, Conversation, Reply
from bot.rendezvous import ReplyRendezvous


def reply(text: str = "the answer", **meta: str) -> Reply:
    return Reply(message_id="webhook:demo:1", conversation=Conversation("webhook", "c1"),
                 text=text, meta=meta)


async def _waiting(rendezvous: ReplyRendezvous, redis: Redis, gone: list[bool]
                   ) -> asyncio.Task[Reply | None]:
    await redis.set(rendezvous.marker_key("webhook:demo:1"), "1", px=10_000)
    task = asyncio.create_task(rendezvous.wait("webhook:demo:1", 30, gone=lambda: gone[0]))
    await asyncio.sleep(0.2)  # the waiter is inside its BLOCK step
    return task


async def test_a_caller_still_there_gets_the_reply(redis: Redis, prefix: str) -> None:
    rendezvous = ReplyRendezvous(redis, prefix)
    waiter = await _waiting(rendezvous, redis, [False])
    assert await rendezvous.deliver(reply()) is True
    got = await waiter
    assert got is not None and got.text == "the answer"


async def test_a_caller_that_hangs_up_as_it_takes_the_reply_hands_it_back(
        redis: Redis, prefix: str) -> None:
    # the soak found it: the waiter took the reply in the step its caller hung up, deliver()
    # said "delivered", and the worker acked a reply that only the request handler held
    rendezvous = ReplyRendezvous(redis, prefix)
    waiter = await _waiting(rendezvous, redis, [True])  # gone() is asked once the step ends
    assert await rendezvous.deliver(reply()) is False  # so the sender's fallback runs
    assert await waiter is None
    kept = await rendezvous.result("webhook:demo:1")
    assert kept is not None and kept.text == "the answer"  # a repeat still gets it


async def test_nobody_taking_the_reply_means_not_delivered(redis: Redis, prefix: str) -> None:
    rendezvous = ReplyRendezvous(redis, prefix, pickup_timeout_s=0.5)
    # a marker whose waiter died between renewing it and taking the reply
    await redis.set(rendezvous.marker_key("webhook:demo:1"), "1", px=10_000)
    assert await rendezvous.deliver(reply()) is False
    assert await redis.llen(f"{prefix}:reply:webhook:demo:1") == 0  # taken back


async def test_a_notice_never_replaces_a_kept_answer(redis: Redis, prefix: str) -> None:
    rendezvous = ReplyRendezvous(redis, prefix)
    assert await rendezvous.deliver(reply()) is False  # nobody waits: kept for a repeat
    notice = reply("Sorry, I could not answer", **{NOTICE_META: "dead_letter"})
    assert await rendezvous.deliver(notice, replace=False) is False
    kept = await rendezvous.result("webhook:demo:1")
    assert kept is not None and kept.text == "the answer"


class StalledWaiter(ReplyRendezvous):
    """A waiter whose answer comes after the deliverer stopped waiting for it (an event loop
    stalled, or waiting for a free connection of a busy pool)."""

    async def _picked_up(self, message_id: str, item: bytes | str,
                         gone: Callable[[], bool] | None) -> Reply | None:
        await asyncio.sleep(0.8)
        return await super()._picked_up(message_id, item, gone)


async def test_a_waiter_answering_too_late_gives_no_second_copy(
        redis: Redis, prefix: str) -> None:
    # review: deliver() gave up (the fallback posts the callback) and then the late waiter
    # returned the reply too: delivered twice
    rendezvous = ReplyRendezvous(redis, prefix, pickup_timeout_s=0.3)
    await redis.set(rendezvous.marker_key("webhook:demo:1"), "1", px=10_000)
    waiter = asyncio.create_task(StalledWaiter(redis, prefix).wait("webhook:demo:1", 30))
    await asyncio.sleep(0.2)
    assert await rendezvous.deliver(reply()) is False  # the fallback delivers it...
    assert await waiter is None  # ...and only the fallback
