"""The end of a message's run: the writes that follow its sent reply, its acknowledgement and
its pop from the conversation's FIFO, in one transaction (bot/worker.py calls it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio.client import Pipeline as RedisPipeline
from redis.exceptions import RedisError

from bot.inbox import Inbox
from bot.log import get_logger
from bot.ordering import ConversationLease, LeaseLost
from bot.protocols import AfterSend
from bot.redis_pool import Coalesced
from bot.retrying import retried, retry_on

log = get_logger("bot.worker")

#: How long the finishing transaction of a message whose reply went out is retried while
#: Redis does not answer, seconds.
FINISH_RETRY_S = 10.0


class Finisher:
    """Finishes processed entries; `finishing` is the transaction the process's workers
    share (bot/redis_pool.py `Coalesced`)."""

    def __init__(self, inbox: Inbox, finishing: Coalesced) -> None:
        self._inbox = inbox
        self._finishing = finishing

    async def finish(self, entry_id: str, lease: ConversationLease,
                     pop: tuple[str, bool] | None, after_send: Sequence[AfterSend] = ()
                     ) -> None:
        """Acknowledge a processed entry and pop it from its FIFO, with the writes that follow
        its sent reply (the answered mark, memory) first: one round trip (a transaction: the
        writes, XACK, XDEL, HDEL and the pop script; shared with the workers finishing at the
        same time).

        The reply is out, so this rides out a short Redis blip (up to 10 s, as the answered
        mark always did): a redelivery without the mark would send the reply again. Running it
        twice is harmless: the writes and the acknowledgement are idempotent, and a second pop
        finds the head moved on (or the lease released, which the worker takes as lost)."""
        tries = 0

        def queue(pipe: RedisPipeline) -> None:
            for write in after_send:
                write.queue(pipe)
            self._inbox.queue_ack(pipe, entry_id)
            if pop is not None:
                lease.queue_pop(pipe, pop[0], release_when_empty=pop[1])

        async def execute() -> list[Any]:
            nonlocal tries
            tries += 1
            return await self._finishing.execute(queue)

        replies = await retried(execute, retry_if=retry_on(RedisError, OSError),
                                within_s=FINISH_RETRY_S, initial_s=0.1, max_s=2)
        retried_exec = tries > 1
        for write, reply in zip(after_send, replies, strict=False):
            try:
                await write.settle(reply)
            except (RedisError, OSError) as exc:  # acknowledged already: not worth a retry
                log.error("a write after the reply failed", error=type(exc).__name__,
                          entry_id=entry_id)
        rest = replies[len(after_send):]
        for reply in rest[:-1] if pop is not None else rest:
            if isinstance(reply, Exception):
                raise reply
        if pop is not None:
            try:
                await lease.popped(rest[-1], pop[0], release_when_empty=pop[1])
            except LeaseLost:
                if not retried_exec:
                    raise
                # an earlier EXEC was applied and its reply lost: it popped the entry and
                # released the lease (or the lease expired meanwhile): either way this entry
                # is finished and the conversation is no longer ours
                lease.released = True
