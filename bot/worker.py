"""Engine workers: read the inbox, run the pipeline, acknowledge.

Each worker is one asyncio task and one consumer of the inbox group. Before reading new
entries it periodically claims entries that another consumer left pending for `claim_idle_s`
(that consumer's process died), so a crash between XADD and XACK loses nothing. A message that
raises stays pending and is retried after `claim_idle_s`; after `max_deliveries` attempts it
goes to the dead-letter stream. Redis outages are waited out with jittered backoff.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
import uuid

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.inbox import Delivery, Inbox
from bot.log import get_logger
from bot.pipeline import Pipeline

log = get_logger("bot.worker")


class Worker:
    """One inbox consumer.

    Args:
        index: distinguishes this worker's consumer name within the process.
        claim_idle_s: pending time after which another consumer's entry is taken over.
        max_deliveries: deliveries after which an entry is dead-lettered.
        block_ms: how long one XREADGROUP waits for new entries.
    """

    def __init__(self, inbox: Inbox, pipeline: Pipeline, *, index: int, claim_idle_s: float,
                 max_deliveries: int, block_ms: int = 250) -> None:
        self._inbox = inbox
        self._pipeline = pipeline
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{index}"
        self._claim_idle_ms = int(claim_idle_s * 1000)
        self._claim_every_s = max(claim_idle_s / 2, 0.2)
        self._max_deliveries = max_deliveries
        self._block_ms = block_ms
        self.processed = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; the message in hand is finished first."""
        last_claim = 0.0
        backoff_s = 0.5
        while not stop.is_set():
            try:
                deliveries: list[Delivery] = []
                if time.monotonic() - last_claim >= self._claim_every_s:
                    last_claim = time.monotonic()
                    deliveries = await self._inbox.claim_stale(self.consumer,
                                                               self._claim_idle_ms, 1)
                if not deliveries:
                    deliveries = await self._inbox.read(self.consumer, 1, self._block_ms)
                for delivery in deliveries:
                    await self.handle(delivery)
                backoff_s = 0.5
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("redis unavailable; backing off", error=str(exc),
                            delay_s=round(backoff_s, 2))
                try:
                    await asyncio.wait_for(stop.wait(), backoff_s * (0.5 + random.random()))
                except TimeoutError:
                    pass
                backoff_s = min(backoff_s * 2, 30.0)

    async def handle(self, delivery: Delivery) -> None:
        """Process one delivery; ack on success, leave pending on failure."""
        if delivery.message is None:
            log.error("malformed inbox entry; dead-lettered", entry_id=delivery.entry_id)
            await self._inbox.dead_letter(delivery, "not a valid message")
            return
        message = delivery.message
        if delivery.attempt > self._max_deliveries:
            log.error("message failed too often; dead-lettered", message_id=message.id,
                      attempts=delivery.attempt - 1)
            await self._inbox.dead_letter(delivery, "max deliveries exceeded")
            return
        trace_id = uuid.uuid4().hex[:12]
        try:
            ctx = await self._pipeline.run(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("message failed; left pending for retry", message_id=message.id,
                          conversation=message.conversation.key, attempt=delivery.attempt,
                          trace_id=trace_id, error=type(exc).__name__)
            return
        await self._inbox.ack(delivery.entry_id)
        self.processed += 1
        log.info("message processed", message_id=message.id,
                 conversation=message.conversation.key, platform=message.conversation.platform,
                 latency_ms=ctx.latency_ms, passages=len(ctx.passages),
                 model=ctx.generated.model if ctx.generated else None,
                 skipped=ctx.skipped_reason or None, attempt=delivery.attempt)
