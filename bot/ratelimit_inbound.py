"""Inbound rate limits: per user and per conversation, shared by every worker
(docs/rate-limits.md).

Every message takes one token from its author's bucket (`<p>:rl:in:user:<platform>:<user>`;
`<p>:rl:in:user:webhook:<webhook name>:<user>` for a webhook, whose user ids are each
integration's own, so that two integrations' "alice" are two people) and one from its
conversation's (`<p>:rl:in:conv:<conversation key>`), both or neither, as of the moment it
arrived (`Message.received_at`, capped at Redis' clock), so a flood queued behind a slow model
is still a flood when its messages are processed. A message that was let through is remembered
for a day (`<p>:rl:in:msg:<message id>`), so a retried message (a crash, a failed send) and a
message the webhook ingress already let through are never charged twice; the webhook ingress
also marks the messages it let through (`Message.rate_checked`), so the stage does not ask
Redis about them at all.

Over the limit, `InboundRateLimit` (a pipeline stage) answers once with `SLOW_DOWN` ("please
wait N s"), and skips every further message of that user (or conversation) silently while N
runs; `InboundLimiter.check_inbound` lets HTTP ingress answer 429 with Retry-After instead.
Both count `switchboard_inbound_rate_limited`. The local console is never limited.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.config import Settings
from bot.log import get_logger
from bot.messages import Message, Reply
from bot.metrics import REGISTRY
from bot.pipeline import Context
from bot.protocols import Sender
from bot.ratelimit import Bucket, Rate, RateLimiter
from bot.redis_pool import Coalesced

log = get_logger("bot.ratelimit")

INBOUND_LIMITED = Counter(
    "switchboard_inbound_rate_limited", "Messages over a per-user or per-conversation rate "
    "limit, by what was done: told (the one 'slow down' reply), skipped (silently), refused "
    "(429 at HTTP ingress).", ["platform", "scope", "outcome"], registry=REGISTRY)

#: The reply to a user over their own limit; {wait} is whole seconds.
SLOW_DOWN = "You're sending messages faster than I can answer; please wait {wait} s."
#: The reply in a conversation over its limit (many people writing at once).
SLOW_DOWN_CONVERSATION = ("This conversation is moving faster than I can answer; please wait "
                          "{wait} s.")
#: How long a message's verdict is remembered (retries, ingress then pipeline), seconds.
MEMO_TTL_S = 24 * 3600
#: Platforms never limited: the local console is the operator's own terminal.
EXEMPT_PLATFORMS = frozenset({"console"})

_TELL, _QUIET = "tell:", "quiet:"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one message.

    Attributes:
        allowed: process it.
        retry_after_s: when not allowed, seconds until its author may write again.
        scope: when not allowed, "user" or "conversation" (whose bucket is empty).
        tell: when not allowed, whether to send the slow-down reply (the first time in the
            wait); otherwise skip silently.
    """

    allowed: bool
    retry_after_s: float = 0.0
    scope: str = ""
    tell: bool = False


class InboundLimiter:
    """Per-user and per-conversation token buckets (see the module docstring).

    Args:
        user, conversation: each bucket's rate; None disables that limit.
        exempt: platforms never limited.
    """

    def __init__(self, limiter: RateLimiter, *, user: Rate | None, conversation: Rate | None,
                 exempt: frozenset[str] = EXEMPT_PLATFORMS) -> None:
        self._limiter = limiter
        self._user = user
        self._conversation = conversation
        self._exempt = exempt

    @classmethod
    def from_settings(cls, redis: Redis, settings: Settings, *,
                      coalesced: Coalesced | None = None) -> InboundLimiter:
        """From BOT_RATE_USER_PER_MIN / _BURST and BOT_RATE_CONVERSATION_PER_MIN / _BURST
        (a rate of 0 disables that limit); `coalesced`: the process's shared round trips."""
        s = settings
        return cls(RateLimiter(redis, s.bot_key_prefix, coalesced=coalesced),
                   user=Rate.per_minute(s.bot_rate_user_per_min, s.bot_rate_user_burst)
                   if s.bot_rate_user_per_min > 0 else None,
                   conversation=Rate.per_minute(s.bot_rate_conversation_per_min,
                                                s.bot_rate_conversation_burst)
                   if s.bot_rate_conversation_per_min > 0 else None)

    @property
    def enabled(self) -> bool:
        return self._user is not None or self._conversation is not None

    def _buckets(self, message: Message) -> list[tuple[str, Bucket]]:
        conv = message.conversation
        buckets: list[tuple[str, Bucket]] = []
        if self._user is not None:
            author = f"{conv.platform}:{message.user}" if conv.platform != "webhook" \
                else f"webhook:{conv.workspace}:{message.user}"
            buckets.append(("user", Bucket(f"in:user:{author}", self._user)))
        if self._conversation is not None:
            buckets.append(("conversation", Bucket(f"in:conv:{conv.key}", self._conversation)))
        return buckets

    def _memo(self, message: Message) -> str:
        return f"in:msg:{message.id}"

    async def _decide(self, message: Message) -> tuple[Verdict, str]:
        """The verdict and the name of the empty bucket ("" when allowed)."""
        scoped = self._buckets(message)
        if not scoped or message.conversation.platform in self._exempt:
            return Verdict(True), ""
        decision = await self._limiter.take([b for _, b in scoped], at=message.received_at,
                                            memo=self._memo(message), memo_ttl_s=MEMO_TTL_S)
        if decision.memo is not None:  # decided before: a retry, or let in at ingress
            if decision.memo.startswith(_TELL):
                scope, _, wait = decision.memo.removeprefix(_TELL).partition(":")
                return Verdict(False, float(wait or 0), scope, tell=True), ""
            if decision.memo.startswith(_QUIET):
                return Verdict(False, 0.0, decision.memo.removeprefix(_QUIET) or "user"), ""
            return Verdict(True), ""
        if decision.allowed:
            return Verdict(True), ""
        scope = next(s for s, b in scoped if b.name == decision.blocking)
        return Verdict(False, decision.retry_after_s, scope), str(decision.blocking)

    async def check_inbound(self, message: Message) -> float | None:
        """For HTTP ingress, before enqueueing: None when `message` may be stored (its tokens
        are then taken, and the pipeline does not take them again), else the seconds to put
        in a 429's Retry-After (at least 1). Fails open: None when Redis cannot be asked
        (storing will then fail on its own)."""
        try:
            verdict, _ = await self._decide(message)
        except (RedisError, OSError) as exc:
            log.warning("inbound rate limit unavailable", error=type(exc).__name__)
            return None
        if verdict.allowed:
            return None
        INBOUND_LIMITED.labels(message.conversation.platform, verdict.scope, "refused").inc()
        return float(max(1, math.ceil(verdict.retry_after_s)))

    async def verdict(self, message: Message) -> Verdict:
        """The stage's verdict: as `check_inbound`, and for a message over the limit whether
        it is the first since the wait began (`tell`). The "told" mark is
        `<p>:rl:told:<empty bucket>`, kept for the wait; the message's memo then says
        "tell" until `told` records the reply as sent, so a retried message sends it again.

        Raises:
            redis.exceptions.RedisError, OSError: Redis cannot be asked.
        """
        verdict, empty = await self._decide(message)
        if verdict.allowed or not empty:
            return verdict
        wait_ms = max(1, math.ceil(verdict.retry_after_s * 1000))
        redis = self._limiter.redis
        # its own namespace: a bucket name ends in free text (a webhook user id "alice:told")
        first = await redis.set(self._limiter.key(f"told:{empty}"), "1", nx=True, px=wait_ms)
        memo = self._limiter.key(self._memo(message))
        if first:
            await redis.set(memo, f"{_TELL}{verdict.scope}:{verdict.retry_after_s}",
                            ex=MEMO_TTL_S)
        else:
            await redis.set(memo, _QUIET + verdict.scope, ex=MEMO_TTL_S)
        return Verdict(False, verdict.retry_after_s, verdict.scope, tell=bool(first))

    async def told(self, message: Message, scope: str) -> None:
        """Record that the slow-down reply to `message` went out (a redelivery is quiet)."""
        await self._limiter.redis.set(self._limiter.key(self._memo(message)), _QUIET + scope,
                                      ex=MEMO_TTL_S)


class InboundRateLimit:
    """Pipeline stage, right after `AlreadyAnswered`: a message over its author's or its
    conversation's rate stops the chain (`ctx.done`, `ctx.skipped_reason` "rate limited:
    told" or "rate limited"); the first one in the wait gets `SLOW_DOWN` through the
    platform's sender (sent here, since the action stage would otherwise answer a command),
    as a reply for the author alone (`Reply.ephemeral`) where the platform has those.

    Fails open: with Redis unreachable the message goes on (and fails later on its own). The
    slow-down reply is best effort: when it cannot be sent the message is skipped all the same.
    """

    def __init__(self, inbound: InboundLimiter, senders: Mapping[str, Sender]) -> None:
        self._inbound = inbound
        self._senders = senders

    async def __call__(self, ctx: Context) -> None:
        if ctx.answered_by or not self._inbound.enabled or ctx.message.rate_checked:
            return
        message = ctx.message
        try:
            verdict = await self._inbound.verdict(message)
        except (RedisError, OSError) as exc:
            log.warning("inbound rate limit unavailable; message let through",
                        message_id=message.id, error=type(exc).__name__)
            return
        if verdict.allowed:
            return
        platform = message.conversation.platform
        ctx.done = True
        sender = self._senders.get(platform)
        if not verdict.tell or sender is None:
            ctx.skipped_reason = "rate limited"
            INBOUND_LIMITED.labels(platform, verdict.scope, "skipped").inc()
            log.info("message over its rate limit; skipped", message_id=message.id,
                     scope=verdict.scope)
            return
        wait = max(1, math.ceil(verdict.retry_after_s))
        text = (SLOW_DOWN_CONVERSATION if verdict.scope == "conversation" else SLOW_DOWN)
        try:
            await sender.send(Reply(message_id=message.id, conversation=message.conversation,
                                    text=text.format(wait=wait),
                                    meta=message.meta, ephemeral=True))
        except Exception as exc:  # best effort: a skipped message must not hold its conversation
            ctx.skipped_reason = "rate limited"
            INBOUND_LIMITED.labels(platform, verdict.scope, "skipped").inc()
            log.warning("slow-down reply not sent; message skipped", message_id=message.id,
                        scope=verdict.scope, error=type(exc).__name__)
            return
        ctx.skipped_reason = "rate limited: told"
        INBOUND_LIMITED.labels(platform, verdict.scope, "told").inc()
        log.info("message over its rate limit; author told to wait", message_id=message.id,
                 scope=verdict.scope, wait_s=wait)
        try:
            await self._inbound.told(message, verdict.scope)
        except (RedisError, OSError) as exc:  # a redelivery would tell once more: harmless
            log.warning("rate-limit notice not recorded", error=type(exc).__name__)
