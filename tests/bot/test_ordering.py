"""Per-conversation order with several workers: one at a time and in arrival order within a
conversation, concurrent across conversations, and a crashed holder only delays its own."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from redis.asyncio import Redis

from bot.messages import Conversation, Message
from bot.ordering import ConversationOrder
from bot.pipeline import Context, Pipeline
from bot.redis_pool import Coalesced
from bot.runtime import Runtime
from bot.worker import Worker


def message(conversation: str, seq: int) -> Message:
    return Message(id=f"webhook:w:{conversation}-{seq}", user="u", text=str(seq),
                   conversation=Conversation("webhook", conversation, "w"))


class Recorder:
    """Records (conversation, seq) in processing order; fails each id in `fail_once` once."""

    def __init__(self, max_sleep_s: float = 0.02, fail_once: set[str] | None = None) -> None:
        self.seen: dict[str, list[int]] = defaultdict(list)
        self.running: dict[str, int] = defaultdict(int)
        self.max_parallel = 0
        self.now = 0
        self.max_sleep_s = max_sleep_s
        self.fail_once = set(fail_once or ())

    async def __call__(self, ctx: Context) -> None:
        conv = ctx.message.conversation.channel
        self.running[conv] += 1
        assert self.running[conv] == 1, "two messages of one conversation at once"
        self.now += 1
        self.max_parallel = max(self.max_parallel, self.now)
        try:
            await asyncio.sleep(random.uniform(0, self.max_sleep_s))
            if ctx.message.id in self.fail_once:
                self.fail_once.discard(ctx.message.id)
                raise ConnectionResetError("a transient failure")
            self.seen[conv].append(int(ctx.message.text))
        finally:
            self.running[conv] -= 1
            self.now -= 1


async def run_until(workers: list[Worker], done: object, timeout_s: float = 30) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done() and asyncio.get_running_loop().time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.gather(*tasks)


async def test_each_conversation_in_order_and_conversations_in_parallel(runtime: Runtime
                                                                       ) -> None:
    recorder = Recorder()
    workers = [Worker(runtime.inbox, Pipeline([recorder]), runtime.order, index=i,
                      claim_idle_s=5, max_deliveries=5, block_ms=20) for i in range(6)]
    conversations = [f"c{i}" for i in range(8)]
    for seq in range(12):  # interleaved arrival, as from many users at once
        for conv in conversations:
            await runtime.inbox.enqueue(message(conv, seq))
    await run_until(workers, lambda: sum(len(v) for v in recorder.seen.values()) == 96)
    assert {conv: recorder.seen[conv] for conv in conversations} == {
        conv: list(range(12)) for conv in conversations}
    assert recorder.max_parallel > 1  # different conversations did run at the same time
    assert await runtime.inbox.backlog() == 0


async def test_a_failed_message_holds_back_the_rest_of_its_conversation(runtime: Runtime
                                                                        ) -> None:
    recorder = Recorder(max_sleep_s=0.0, fail_once={"webhook:w:a-0"})
    workers = [Worker(runtime.inbox, Pipeline([recorder]), runtime.order, index=i,
                      claim_idle_s=0.3, max_deliveries=5, block_ms=20) for i in range(3)]
    for seq in range(4):
        await runtime.inbox.enqueue(message("a", seq))
    await runtime.inbox.enqueue(message("b", 0))
    await run_until(workers, lambda: len(recorder.seen["a"]) == 4)
    assert recorder.seen["a"] == [0, 1, 2, 3]
    assert recorder.seen["b"] == [0]


async def test_a_dead_holder_delays_only_its_conversation(runtime: Runtime) -> None:
    order = ConversationOrder(runtime.redis, runtime.settings.bot_key_prefix, ttl_ms=400)
    for seq in range(3):
        await runtime.inbox.enqueue(message("x", seq))
    await runtime.inbox.enqueue(message("y", 0))
    # a worker read x-0 and took x's lease, then died (SIGKILL): its token is lost
    [dead] = await runtime.inbox.read("dead-consumer", 1, 100)
    assert dead.message is not None and dead.message.id == "webhook:w:x-0"
    assert await order.acquire(dead.message.conversation.key) is not None
    recorder = Recorder(max_sleep_s=0.0)
    workers = [Worker(runtime.inbox, Pipeline([recorder]), order, index=i, claim_idle_s=0.3,
                      max_deliveries=5, block_ms=20) for i in range(2)]
    await run_until(workers, lambda: len(recorder.seen["x"]) == 3 and recorder.seen["y"])
    assert recorder.seen["y"] == [0]
    assert recorder.seen["x"] == [0, 1, 2]  # x-0 first, though it was stuck on a dead worker


async def test_lease_learns_heads_from_its_scripts(redis: Redis, prefix: str) -> None:
    """acquire and pop return the head in their own round trip; the last pop releases the
    lease when asked, so a drained conversation costs no LINDEX or release call."""
    order = ConversationOrder(redis, prefix, ttl_ms=30_000)
    fifo = order.fifo_key("c")
    await redis.rpush(fifo, "1-0", "2-0")
    lease = await order.acquire("c")
    assert lease is not None
    await redis.rpush(fifo, "3-0")  # an append never changes a non-empty head
    assert await lease.head() == "1-0"
    assert await lease.pop("1-0", release_when_empty=True) and not lease.released
    assert await lease.head() == "2-0"
    assert await lease.pop("2-0")
    assert await lease.head() == "3-0"
    assert await lease.pop("3-0", release_when_empty=True) and lease.released
    assert await order.acquire("c") is not None  # released: the next worker gets it at once


async def test_pop_without_release_keeps_the_lease(redis: Redis, prefix: str) -> None:
    order = ConversationOrder(redis, prefix, ttl_ms=30_000)
    await redis.rpush(order.fifo_key("c"), "1-0")
    lease = await order.acquire("c")
    assert lease is not None
    assert await lease.pop("1-0") and not lease.released
    assert await order.acquire("c") is None
    assert await lease.release_if_done()


async def test_an_entry_arriving_after_an_empty_head_is_seen(redis: Redis, prefix: str) -> None:
    """An empty FIFO seen by acquire is reported once; the next head() reads again, so an
    entry appended meanwhile is neither skipped nor orphaned."""
    order = ConversationOrder(redis, prefix, ttl_ms=30_000)
    lease = await order.acquire("c")
    assert lease is not None
    await redis.rpush(order.fifo_key("c"), "1-0")
    assert await lease.head() is None
    assert await lease.head() == "1-0"
    assert not await lease.release_if_done()


async def test_a_shared_acquire_learns_the_head_and_survives_a_script_flush(
        redis: Redis, prefix: str) -> None:
    """`acquire` in the process's shared round trips (as the workers make it) gives the lease
    a lone `acquire` gives; after SCRIPT FLUSH (a Valkey that restarted empty) the NOSCRIPT
    reply is retried with the script itself."""
    order = ConversationOrder(redis, prefix, ttl_ms=30_000, coalesced=Coalesced(redis))
    await redis.rpush(order.fifo_key("c"), "1-0")
    await redis.script_flush()
    lease = await order.acquire("c")
    assert lease is not None and await redis.get(order.lock_key("c")) == lease.token.encode()
    assert await lease.head() == "1-0"
    assert await order.acquire("c") is None  # held by the first
