"""The Redis Stream inbox: atomic dedupe + append, claiming a dead consumer's entries,
dead-lettering, and a worker that acknowledges only after the pipeline succeeded."""

from __future__ import annotations

import asyncio

from bot.inbox import Inbox
from bot.messages import Conversation, Message
from bot.pipeline import Pipeline
from bot.runtime import Runtime
from bot.worker import Worker


def message(mid: str) -> Message:
    return Message(id=mid, conversation=Conversation("webhook", "c1", "w"), user="u", text="hi")


async def test_enqueue_dedupes_atomically(runtime: Runtime) -> None:
    inbox = runtime.inbox
    results = await asyncio.gather(*[inbox.enqueue(message("same")) for _ in range(20)])
    assert sum(r is not None for r in results) == 1
    assert await inbox.backlog() == 1
    assert await inbox.enqueue(message("other")) is not None
    assert await inbox.backlog() == 2


async def test_a_dead_consumers_entry_is_claimed_and_acked(runtime: Runtime) -> None:
    inbox = runtime.inbox
    await inbox.enqueue(message("m1"))
    taken = await inbox.read("dead-consumer", 1, 100)
    assert [d.message.id for d in taken if d.message] == ["m1"] and taken[0].attempt == 0
    assert await inbox.count_attempt(taken[0].entry_id) == 1  # a run counts, not a delivery
    assert await inbox.read("other", 1, 50) == []  # pending elsewhere: not handed out again
    assert (await inbox.claim_stale("other", 60_000, 5))[1] == []  # not idle long enough
    await asyncio.sleep(0.15)
    _, claimed = await inbox.claim_stale("other", 100, 5)
    assert [d.message.id for d in claimed if d.message] == ["m1"] and claimed[0].attempt == 0
    assert await inbox.count_attempt(claimed[0].entry_id) == 2
    await inbox.ack(claimed[0].entry_id)
    assert await inbox.backlog() == 0


class Failing:
    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, ctx: object) -> None:
        self.calls += 1
        raise RuntimeError("boom")


async def test_failures_stay_pending_then_go_to_the_dead_letter_stream(runtime: Runtime) -> None:
    inbox: Inbox = runtime.inbox
    stage = Failing()
    worker = Worker(inbox, Pipeline([stage]), runtime.order, index=0, claim_idle_s=0.05,
                    max_deliveries=2,
                    block_ms=20)
    await inbox.enqueue(message("poison"))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(100):
        if await runtime.redis.xlen(inbox.dlq):
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert stage.calls == 2  # max_deliveries attempts, then no more
    entries = await runtime.redis.xrange(inbox.dlq)
    assert entries is not None and len(entries) == 1
    fields = entries[0][1]
    assert fields is not None
    assert fields[b"error"] == b"max deliveries exceeded"
    assert Message.from_json(fields[b"m"]).id == "poison"
    assert await inbox.backlog() == 0


class Slow:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    async def __call__(self, ctx: object) -> None:
        self.calls += 1
        await asyncio.sleep(self.seconds)


async def _run_workers(workers: list[Worker], until: object, timeout_s: float = 10) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await until() and asyncio.get_running_loop().time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*tasks)


async def test_a_slow_message_is_not_claimed_by_a_second_worker(runtime: Runtime) -> None:
    stage = Slow(1.2)  # four times the claim idle time
    workers = [Worker(runtime.inbox, Pipeline([stage]), runtime.order, index=i, claim_idle_s=0.3,
                      max_deliveries=5, block_ms=20) for i in range(2)]
    await runtime.inbox.enqueue(message("slow"))

    async def drained() -> bool:
        return await runtime.inbox.backlog() == 0

    await _run_workers(workers, drained)
    assert stage.calls == 1
    assert sum(w.processed for w in workers) == 1


class FlakyService:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self, ctx: object) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionRefusedError("the model server is down")


async def test_outside_service_outages_do_not_use_up_deliveries(runtime: Runtime) -> None:
    stage = FlakyService(failures=4)
    worker = Worker(runtime.inbox, Pipeline([stage]), runtime.order, index=0, claim_idle_s=0.05,
                    max_deliveries=2, block_ms=20)
    await runtime.inbox.enqueue(message("outage"))

    async def drained() -> bool:
        return await runtime.inbox.backlog() == 0

    await _run_workers([worker], drained)
    assert stage.calls == 5 and worker.processed == 1
    assert await runtime.redis.xlen(runtime.inbox.dlq) == 0


async def test_a_vanished_consumer_group_is_recreated(runtime: Runtime) -> None:
    stage = Slow(0)
    worker = Worker(runtime.inbox, Pipeline([stage]), runtime.order, index=0, claim_idle_s=5,
                    max_deliveries=2, block_ms=20)
    await runtime.redis.delete(runtime.inbox.stream)  # FLUSHDB or eviction
    await runtime.inbox.enqueue(message("after-flush"))  # XADD re-creates a group-less stream

    async def done() -> bool:
        return stage.calls == 1

    await _run_workers([worker], done)
    assert stage.calls == 1 and worker.processed == 1


async def test_a_delivery_not_yet_handed_back_is_not_an_attempt(runtime: Runtime) -> None:
    """Worker B has read an entry whose conversation worker A holds; before B leaves it to A,
    A fetches and runs it: A's run is the first attempt, not the second (a count taken at
    delivery dead-lettered such messages with max_deliveries 1, found when the worker's round
    trips were folded and the window widened)."""
    inbox = runtime.inbox
    entry = await inbox.enqueue(message("m1"))
    assert entry is not None
    [seen_by_b] = await inbox.read("worker-b", 1, 100)
    fetched = await inbox.fetch("worker-a", seen_by_b.entry_id)
    assert fetched is not None and fetched.attempt == 1
