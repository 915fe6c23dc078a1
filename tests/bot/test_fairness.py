"""No conversation starves the others, and none is held forever by an outside service that
stays down (issue 12, findings 0 and 4)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from bot.messages import Message
from bot.pipeline import Context, Pipeline
from bot.runtime import Runtime
from bot.worker import Worker
from tests.bot.test_ordering import message, run_until


async def test_busy_conversations_do_not_starve_a_quiet_one(runtime: Runtime) -> None:
    """Two conversations whose senders answer each reply at once keep both workers busy; a
    third conversation's message still gets its turn long before they are done."""
    order: list[str] = []
    hot_total = 150

    async def handler(ctx: Context) -> None:
        conv, seq = ctx.message.conversation.channel, int(ctx.message.text)
        order.append(conv)
        await asyncio.sleep(0.002)
        if conv.startswith("hot") and seq + 1 < hot_total:
            # the sender's next message arrives while this one is being answered
            await runtime.inbox.enqueue(message(conv, seq + 1))
        if conv == "hot0" and seq == 5:
            await runtime.inbox.enqueue(message("quiet", 0))

    workers = [Worker(runtime.inbox, Pipeline([handler]), runtime.order, index=i,
                      claim_idle_s=30, max_deliveries=5, block_ms=20) for i in range(2)]
    await runtime.inbox.enqueue(message("hot0", 0))
    await runtime.inbox.enqueue(message("hot1", 0))
    await run_until(workers, lambda: len(order) == 2 * hot_total + 1, timeout_s=60)
    assert "quiet" in order
    # handled within a few turns of arriving (~7th message), not after both busy ones ended
    assert order.index("quiet") < 60, order.index("quiet")


@pytest.mark.parametrize("max_deliveries", [5, 1])
async def test_a_service_that_stays_down_dead_letters_after_the_retry_age(
        runtime: Runtime, max_deliveries: int) -> None:
    # with max_deliveries 1: the later messages, claimed again and again while the first one
    # failed, once counted each claim as an attempt and were dead-lettered without a try
    processed: list[str] = []
    told: list[tuple[str, str]] = []

    async def handler(ctx: Context) -> None:
        if ctx.message.id.endswith("down-0"):
            raise ConnectionResetError("the platform API is unreachable")  # transient
        processed.append(ctx.message.id)

    async def apologize(msg: Message, error: str) -> None:
        told.append((msg.id, error))

    hook: Callable[[Message, str], Awaitable[None]] = apologize
    workers = [Worker(runtime.inbox, Pipeline([handler]), runtime.order, index=i,
                      claim_idle_s=0.2, max_deliveries=max_deliveries, block_ms=20,
                      max_retry_age_s=1.5,
                      on_dead_letter=hook) for i in range(2)]
    for seq in range(3):
        await runtime.inbox.enqueue(message("down", seq))
    await run_until(workers, lambda: len(processed) == 2, timeout_s=30)
    assert processed == ["webhook:w:down-1", "webhook:w:down-2"]
    [letter] = await runtime.inbox.dead_letters()
    assert letter.message is not None and letter.message.id == "webhook:w:down-0"
    assert "ConnectionResetError" in letter.error and "unreachable" in letter.error
    assert told and told[0][0] == "webhook:w:down-0"
    assert await runtime.inbox.backlog() == 0
