"""Telegram sends paced to the flood limits
(https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this): a burst to
one chat is spread at about one message per second instead of meeting 429s, draft edits count
too, and a group's messages also take from its 20-per-minute bucket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from adapters.telegram.adapter import TelegramAdapter
from adapters.telegram.send import GROUP_RATE
from bot.messages import Conversation, Message, Reply
from bot.ratelimit import Paced, RateLimiter, SendPacer
from tests.adapters.conftest import Harness, Sleeps
from tests.fakes.telegram_api import TOKEN, FakeTelegram

PRIVATE_CHAT = "1111111"
GROUP_CHAT = "-1001234567890"


@pytest.fixture
async def bot(harness: Harness, telegram: FakeTelegram) -> AsyncIterator[TelegramAdapter]:
    adapter = TelegramAdapter(harness.deps(()), token=TOKEN, api_url=telegram.api_url,
                              webhook_secret="pacing-secret", poll_timeout_s=1)
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


def pace(harness: Harness, bot: TelegramAdapter) -> Sleeps:
    """Give the adapter's sender a pacer (as the runtime does), recording its waits."""
    sleeps = Sleeps()
    assert isinstance(bot.sender, Paced)
    bot.sender.pacer = SendPacer(RateLimiter(harness.redis, harness.prefix), sleep=sleeps)
    return sleeps


async def test_a_burst_to_one_chat_is_spread_over_seconds(
        harness: Harness, telegram: FakeTelegram, bot: TelegramAdapter) -> None:
    sleeps = pace(harness, bot)
    conversation = Conversation("telegram", PRIVATE_CHAT)
    await asyncio.gather(*[bot.sender.send(Reply(message_id=f"m-{n}", text=f"Answer {n}.",
                                                 conversation=conversation))
                           for n in range(4)])
    assert sorted(p["text"] for p in telegram.sent()) == [f"Answer {n}." for n in range(4)]
    assert "ratelimited" not in telegram.methods()
    # four messages at one per second: the last one went out about three seconds after the
    # first, so the waits asked for add up to at least that (racing senders may ask more)
    assert 2.5 <= sum(sleeps.requested) and len(sleeps.requested) >= 3


async def test_unpaced_sends_do_not_wait(harness: Harness, telegram: FakeTelegram,
                                         bot: TelegramAdapter) -> None:
    for n in range(3):
        await bot.sender.send(Reply(message_id=f"u-{n}", text="Hi.",
                                    conversation=Conversation("telegram", PRIVATE_CHAT)))
    assert len(telegram.sent()) == 3
    assert [k async for k in harness.redis.scan_iter(f"{harness.prefix}:rl:*")] == []


async def test_draft_edits_take_tokens_too(harness: Harness, telegram: FakeTelegram,
                                           bot: TelegramAdapter) -> None:
    sleeps = pace(harness, bot)
    question = Message(id="telegram:q1", conversation=Conversation("telegram", PRIVATE_CHAT),
                       user="2222222", text="Why?")
    handle = await bot.sender.post_draft(question, "Because.")
    assert handle is not None and sleeps.requested == []
    await bot.sender.edit_draft(question, handle, "Because it is.")
    assert len(sleeps.requested) == 1 and 0.5 <= sleeps.requested[0] <= 1.0
    assert telegram.methods().count("editMessageText") == 1


async def test_group_messages_also_take_from_the_group_bucket(
        harness: Harness, telegram: FakeTelegram, bot: TelegramAdapter) -> None:
    pace(harness, bot)
    await bot.sender.send(Reply(message_id="g-1", text="Hello group.",
                                conversation=Conversation("telegram", GROUP_CHAT)))
    rl = f"{harness.prefix}:rl:out:telegram"
    group = await harness.redis.hget(f"{rl}:group:{GROUP_CHAT}", "tokens")
    assert group is not None and GROUP_RATE.capacity - 1.01 <= float(group) \
        <= GROUP_RATE.capacity - 0.99
    assert await harness.redis.exists(f"{rl}:chat:{GROUP_CHAT}", f"{rl}:bot") == 2
    assert not await harness.redis.exists(f"{rl}:group:{PRIVATE_CHAT}")
