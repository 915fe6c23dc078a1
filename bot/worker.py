"""Engine workers: read the inbox, run the pipeline, acknowledge.

Each worker is one asyncio task and one consumer of the inbox group. Before reading new
entries it periodically claims entries that another consumer left pending for `claim_idle_s`
(that consumer's process died), so a crash between XADD and XACK loses nothing. While a worker
handles a message it refreshes the entry's idle time every `claim_idle_s / 3`, so a slow
message (a slow model) is never claimed by a second worker while the first is still on it.

Messages of one conversation are processed one at a time in arrival order, by whichever worker
holds the conversation's lease (bot/ordering.py); different conversations run concurrently.
A worker keeps a conversation for one turn only (`turn_messages` messages or `turn_s`
seconds), then hands it to the ready list and goes back to other work: between two turns it
reads new entries, so every conversation with work gets its turn.

A message that raises stays pending and is retried after `claim_idle_s`. Failures of outside
services (connection errors, timeouts, rate limits, 5xx) do not count as deliveries, so an
outage delays messages but does not dead-letter them; any other failure counts, and after
`max_deliveries` the entry goes to the dead-letter stream. Transient failures have a ceiling
too: a message older than `max_retry_age_s` (counted from its arrival in the inbox) that fails
again is dead-lettered with its error, so a platform API that stays down holds its
conversation for that long at most; `on_dead_letter` then tells the user where it can. Redis
errors are waited out with
jittered exponential backoff; a consumer group that disappeared (FLUSHDB, eviction) is
re-created.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace

from redis.asyncio.client import Pipeline as RedisPipeline
from redis.exceptions import RedisError, ResponseError

from bot import tracing
from bot.answers import AnswerStore, Lookup
from bot.finishing import Finisher
from bot.inbox import GROUP, Delivery, Inbox
from bot.log import get_logger
from bot.messages import Message
from bot.metrics import (
    DEAD_LETTERS,
    MESSAGE_FAILURES,
    MESSAGE_LATENCY,
    MESSAGES_PROCESSED,
    QUEUE_WAIT,
)
from bot.ordering import ConversationLease, ConversationOrder, LeaseLost
from bot.pipeline import Pipeline, StageTimeout
from bot.redis_pool import Coalesced, raise_first
from bot.retrying import back_off
from bot.transient import is_transient

log = get_logger("bot.worker")

class Worker:
    """One inbox consumer.

    Args:
        index: distinguishes this worker's consumer name within the process.
        claim_idle_s: pending time after which another consumer's entry is taken over.
        max_deliveries: deliveries failing with a non-transient error before dead-lettering.
        block_ms: how long one XREADGROUP waits for new entries.
        turn_messages, turn_s: a conversation's turn ends after this many messages or once
            this many seconds have passed (checked between messages).
        max_retry_age_s: a message this old (since it entered the inbox) whose processing
            fails again, even transiently, is dead-lettered.
        on_dead_letter: called (best effort) with each dead-lettered message and its error.
        redact: applied to error texts before they are stored with a dead letter.
        answers: the answer store; with it, a run's attempt count and the message's answer
            state (`AlreadyAnswered`) are read in one round trip.
        coalesced, finishing: round trips shared with the process's other workers (a
            pipeline, and a transaction for the finishing writes; bot/redis_pool.py); by
            default this worker's own.
    """

    def __init__(self, inbox: Inbox, pipeline: Pipeline, order: ConversationOrder, *,
                 index: int, claim_idle_s: float, max_deliveries: int,
                 block_ms: int = 250, turn_messages: int = 8, turn_s: float = 1.0,
                 max_retry_age_s: float = 600.0,
                 on_dead_letter: Callable[[Message, str], Awaitable[None]] | None = None,
                 redact: Callable[[str], str] = str,
                 answers: AnswerStore | None = None, coalesced: Coalesced | None = None,
                 finishing: Coalesced | None = None) -> None:
        self._inbox = inbox
        self._pipeline = pipeline
        self._order = order
        self._redis = order.redis
        self._answers = answers
        self._coalesced = coalesced or Coalesced(self._redis)
        self._finisher = Finisher(inbox, finishing or Coalesced(self._redis, transaction=True))
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{index}"
        self._claim_idle_ms = int(claim_idle_s * 1000)
        self._claim_every_s = max(claim_idle_s / 2, 0.2)
        self._keep_every_s = max(claim_idle_s / 3, 0.05)
        self._max_deliveries = max_deliveries
        self._block_ms = block_ms
        self._claim_cursor = "0-0"
        self._turn_messages = turn_messages
        self._turn_s = turn_s
        self._max_retry_age_s = max_retry_age_s
        self._on_dead_letter = on_dead_letter
        self._redact = redact
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
                    self._claim_cursor, deliveries = await self._inbox.claim_stale(
                        self.consumer, self._claim_idle_ms, 1, self._claim_cursor)
                if not deliveries:
                    # one turn of a conversation left with work, then one new entry: neither
                    # busy conversations nor new arrivals wait behind the other (both asked
                    # in one round trip; only when neither has work does the read block)
                    ready_reply, read_reply = raise_first(
                        await self._coalesced.execute(self._queue_ready_and_read))
                    deliveries = self._inbox.read_reply(read_reply)
                    if ready_reply is not None:
                        await self.handle_ready(_text(ready_reply))
                    elif not deliveries:
                        deliveries = await self._inbox.read(self.consumer, 1, self._block_ms)
                for delivery in deliveries:
                    await self.handle(delivery)
                backoff_s = 0.5
            except (RedisError, OSError) as exc:
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    log.warning("inbox consumer group missing; re-creating it")
                    with contextlib.suppress(RedisError, OSError):
                        await self._inbox.ensure_group()
                        continue
                log.warning("redis unavailable; backing off", error=type(exc).__name__,
                            delay_s=round(backoff_s, 2))
                backoff_s = await back_off(stop, backoff_s, cap_s=30.0)
            except Exception:  # a defect must not end the worker: its entry stays pending
                log.exception("worker loop failed; backing off", delay_s=round(backoff_s, 2))
                backoff_s = await back_off(stop, backoff_s, cap_s=30.0)

    def _queue_ready_and_read(self, pipe: RedisPipeline) -> None:
        self._order.queue_next_ready(pipe)
        self._inbox.queue_read(pipe, self.consumer, 1)

    async def _keep_alive(self, entry_id: str, lease: ConversationLease,
                          done: asyncio.Event) -> None:
        """Refresh the entry's idle time and the lease until `done`. Stopped by the event, not
        by cancellation, so a Redis command is never cut off halfway (which would cost the
        connection)."""
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self._keep_every_s)
                return
            with contextlib.suppress(RedisError, OSError):
                await self._inbox.keep(self.consumer, entry_id)
                await lease.refresh()

    async def handle(self, delivery: Delivery) -> None:
        """Handle the conversation `delivery` belongs to, in arrival order.

        If another worker holds the conversation, the delivery is left to it (it processes the
        conversation's entries in order, this one included). Otherwise this worker takes the
        conversation's lease and processes its unfinished entries oldest first until none is
        left, or until one fails (it then stays pending and blocks the conversation until its
        retry, which keeps the order)."""
        if delivery.message is None:
            log.error("malformed inbox entry; dead-lettered", entry_id=delivery.entry_id)
            await self._inbox.dead_letter(delivery, "not a valid message")
            return
        conversation = delivery.message.conversation.key
        # a delivery not run this time (another worker holds the conversation, or the turn
        # ended or failed on an older entry first) is not counted: only runs are attempts
        tried = await self._turn(conversation, delivery)
        if tried is None:
            log.debug("left to the conversation's current worker", entry_id=delivery.entry_id,
                      conversation=conversation)

    async def handle_ready(self, conversation: str, trigger: Delivery | None = None) -> bool:
        """Take a turn of `conversation` (one from the ready list, or the one `trigger` belongs
        to); False if another worker holds it now."""
        return await self._turn(conversation, trigger) is not None

    async def _turn(self, conversation: str, trigger: Delivery | None) -> bool | None:
        """One turn of `conversation`: None if another worker holds it, else whether `trigger`
        was run in it (True without a trigger)."""
        lease = await self._order.acquire(conversation)
        if lease is None:
            return None
        try:
            return await self._drain(lease, trigger)
        except LeaseLost:
            log.warning("conversation lease lost; another worker goes on with it",
                        conversation=conversation)
            return False

    async def _drain(self, lease: ConversationLease, trigger: Delivery | None) -> bool:
        """Process the conversation's entries oldest first for one turn; True if `trigger`
        (if any) was run."""
        tried = trigger is None
        trigger_seen = trigger is None
        turn_ends = time.monotonic() + self._turn_s
        done = 0
        while True:
            if done >= self._turn_messages or (done and time.monotonic() >= turn_ends):
                await lease.end_turn()
                return tried
            head = await lease.head()
            if head is None:
                if not trigger_seen and trigger is not None \
                        and await self._inbox.exists(trigger.entry_id):
                    # an entry with no place in the FIFO (enqueued before ordering existed)
                    trigger_seen = tried = True
                    if not await self._process(trigger, lease, None):
                        await lease.release()
                        return tried
                    done += 1
                if await lease.release_if_done():
                    return tried
                continue
            if trigger is not None and head == trigger.entry_id:
                trigger_seen = tried = True
                delivery: Delivery | None = trigger
            else:
                delivery = await self._inbox.fetch(self.consumer, head)
            if delivery is None:  # finished earlier, not yet popped (a crash in between)
                await lease.pop(head, release_when_empty=trigger_seen)
                if lease.released:
                    return tried
                continue
            # the last entry's pop releases the lease too, unless the trigger is still unseen
            # (an entry with no place in the FIFO, handled below)
            if not await self._process(delivery, lease, (head, trigger_seen)):
                await lease.release()
                return tried
            if lease.released:
                return tried
            done += 1

    async def _process(self, delivery: Delivery, lease: ConversationLease,
                       pop: tuple[str, bool] | None) -> bool:
        """Run one entry through the pipeline. True when it is finished (acked or
        dead-lettered, and popped from its conversation's FIFO when `pop` = (head id,
        release_when_empty) says so), False when it failed and stays pending for a retry."""
        if delivery.message is None:
            await self._inbox.dead_letter(delivery, "not a valid message")
            DEAD_LETTERS.labels("malformed").inc()
            await _pop(lease, pop)
            return True
        message = delivery.message
        lookup: Lookup | None = None
        if not delivery.attempt:  # read or claimed: counted now that it runs
            if self._answers is None:
                delivery = replace(delivery,
                                   attempt=await self._inbox.count_attempt(delivery.entry_id))
            else:  # and the message's answer state read in the same round trip
                answers, entry_id = self._answers, delivery.entry_id

                def queue(pipe: RedisPipeline) -> None:
                    self._inbox.queue_count_attempt(pipe, entry_id)
                    answers.queue_lookup(pipe, message.id)

                attempt, answer_state = raise_first(await self._coalesced.execute(queue))
                delivery = replace(delivery, attempt=int(attempt))
                lookup = self._answers.lookup_reply(answer_state)
        if delivery.attempt > self._max_deliveries:
            log.error("message failed too often; dead-lettered", message_id=message.id,
                      attempts=delivery.attempt - 1)
            await self._give_up(delivery, message, "max deliveries exceeded", "max_deliveries")
            await _pop(lease, pop)
            return True
        QUEUE_WAIT.labels(message.conversation.platform).observe(_age_s(delivery.entry_id))
        with tracing.span(f"process {self._inbox.stream}", "consumer", {
                "messaging.system": "redis", "messaging.operation.type": "process",
                "messaging.destination.name": self._inbox.stream,
                "messaging.consumer.group.name": GROUP,
                "messaging.message.id": delivery.entry_id,
                "switchboard.message.id": message.id, "switchboard.attempt": delivery.attempt,
                "switchboard.platform": message.conversation.platform},
                parent=delivery.traceparent or None):
            return await self._attempt(delivery, message, lookup, lease, pop)

    async def _attempt(self, delivery: Delivery, message: Message, lookup: Lookup | None,
                       lease: ConversationLease, pop: tuple[str, bool] | None) -> bool:
        """One run of a counted delivery (see `_process`)."""
        platform = message.conversation.platform
        trace_id = tracing.trace_id() or uuid.uuid4().hex[:12]
        finished = asyncio.Event()
        keeper = asyncio.create_task(self._keep_alive(delivery.entry_id, lease, finished))
        try:
            ctx = await self._pipeline.run(message, lookup, defer_after_send=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            transient = is_transient(exc)
            age_s = _age_s(delivery.entry_id)
            if age_s >= self._max_retry_age_s:
                log.error("message still failing at its retry age; dead-lettered",
                          message_id=message.id, age_s=round(age_s, 1), trace_id=trace_id,
                          error=type(exc).__name__, attempt=delivery.attempt)
                await self._give_up(delivery, message, self._redact(
                    f"gave up after {age_s:.0f} s: {type(exc).__name__}: {exc}"), "retry_age")
                await _pop(lease, pop)
                return True
            if transient:
                with contextlib.suppress(RedisError, OSError):
                    await self._inbox.uncount(delivery.entry_id)
            MESSAGE_FAILURES.labels(message.conversation.platform, str(transient).lower()).inc()
            fields = {"message_id": message.id, "conversation": message.conversation.key,
                      "attempt": delivery.attempt, "trace_id": trace_id,
                      "error": type(exc).__name__}
            if transient:  # an outside service is down: expected, retried, no traceback
                log.warning("message failed; an outside service is down; left pending for "
                            "retry", detail=self._redact(str(exc))[:300], **fields)
            else:
                log.exception("message failed; left pending for retry", transient=False,
                              detail=str(exc) if isinstance(exc, StageTimeout) else None,
                              **fields)
            return False
        finally:
            finished.set()
            await keeper
        await self._finisher.finish(delivery.entry_id, lease, pop, ctx.after_send)
        self.processed += 1
        MESSAGES_PROCESSED.labels(platform).inc()
        MESSAGE_LATENCY.labels(platform).observe(_age_s(delivery.entry_id))
        log.info("message processed", message_id=message.id,
                 conversation=message.conversation.key, platform=message.conversation.platform,
                 latency_ms=ctx.latency_ms, passages=len(ctx.passages),
                 model=ctx.generated.model if ctx.generated else None,
                 skipped=ctx.skipped_reason or None, attempt=delivery.attempt)
        return True

    async def _give_up(self, delivery: Delivery, message: Message, error: str,
                       reason: str) -> None:
        await self._inbox.dead_letter(delivery, error)
        DEAD_LETTERS.labels(reason).inc()
        if self._on_dead_letter is not None:
            try:
                await self._on_dead_letter(message, error)
            except Exception as exc:  # the platform may be the very thing that is down
                log.warning("could not tell the user about a dead letter",
                            message_id=message.id, error=type(exc).__name__)


async def _pop(lease: ConversationLease, pop: tuple[str, bool] | None) -> None:
    """Pop a dead-lettered entry from its FIFO (see `Worker._process`)."""
    if pop is not None:
        await lease.pop(pop[0], release_when_empty=pop[1])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _age_s(entry_id: str) -> float:
    """Seconds since the inbox stored this entry (its id is `<ms since epoch>-<seq>`)."""
    try:
        return max(time.time() - int(entry_id.split("-", 1)[0]) / 1000, 0.0)
    except ValueError:
        return 0.0
