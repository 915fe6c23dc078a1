"""Rate limits in the real test Redis: token-bucket math (burst, refill, all or nothing,
shared by two limiters as two workers would be), arrival-time evaluation, the inbound stage
(one polite reply, then silence), the ingress 429 helper, the send pacer's waits and the
header-announced (Discord-style) route buckets."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from redis.asyncio import Redis

from bot.config import load_settings
from bot.messages import Conversation, Message, Reply
from bot.metrics import REGISTRY
from bot.pipeline import Context
from bot.ratelimit import Bucket, PacingTimeout, Rate, RateLimiter, SendPacer
from bot.ratelimit_inbound import InboundLimiter, InboundRateLimit
from tests.conftest import Services

SLOW = Rate(capacity=2, per_s=1 / 600)  # two at once, then one per ten minutes


class Sleeps:
    """An injected sleep that records what was asked, then really sleeps (the buckets run
    on Redis' clock, so time must pass)."""

    def __init__(self) -> None:
        self.requested: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.requested.append(seconds)
        await asyncio.sleep(seconds)


class RecordingSender:
    def __init__(self) -> None:
        self.sent: list[Reply] = []

    async def send(self, reply: Reply) -> None:
        self.sent.append(reply)


def message(n: int, *, user: str = "U1", channel: str = "D1", platform: str = "slack",
            received_at: float | None = None) -> Message:
    return Message(id=f"{platform}:T1:{n}", conversation=Conversation(platform, channel, "T1"),
                   user=user, text=f"question {n}",
                   received_at=time.time() if received_at is None else received_at)


def limited(platform: str, scope: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("switchboard_inbound_rate_limited_total",
                                     {"platform": platform, "scope": scope,
                                      "outcome": outcome}) or 0.0


# token buckets --------------------------------------------------------------------------------

async def test_a_burst_passes_then_the_bucket_refills(redis: Redis, prefix: str) -> None:
    limiter = RateLimiter(redis, prefix)
    bucket = [Bucket("b", Rate(capacity=3, per_s=10))]
    assert [(await limiter.take(bucket)).allowed for _ in range(3)] == [True] * 3
    refused = await limiter.take(bucket)
    assert not refused.allowed and refused.blocking == "b"
    assert 0 < refused.retry_after_s <= 0.1  # one token at 10 per second
    await asyncio.sleep(refused.retry_after_s + 0.02)
    assert (await limiter.take(bucket)).allowed
    assert not (await limiter.take(bucket)).allowed
    # an idle bucket vanishes once it would be full again (3 tokens at 10/s, plus 1 s)
    assert 0 < await redis.pttl(limiter.key("b")) <= 1300


async def test_two_workers_share_one_bucket(redis: Redis, prefix: str,
                                            services: Services) -> None:
    other = Redis.from_url(services.redis_url)  # a second worker: its own connection
    try:
        first, second = RateLimiter(redis, prefix), RateLimiter(other, prefix)
        bucket = [Bucket("in:user:slack:U1", SLOW)]
        assert (await first.take(bucket)).allowed
        assert (await second.take(bucket)).allowed
        refused = await first.take(bucket)
        assert not refused.allowed and 590 < refused.retry_after_s <= 600
        assert not (await second.take(bucket)).allowed
    finally:
        await other.aclose()


async def test_several_buckets_are_taken_all_or_nothing(redis: Redis, prefix: str) -> None:
    limiter = RateLimiter(redis, prefix)
    wide, narrow = Bucket("wide", Rate(10, 1 / 600)), Bucket("narrow", Rate(1, 1 / 600))
    assert (await limiter.take([wide, narrow])).allowed
    for _ in range(5):
        refused = await limiter.take([wide, narrow])
        assert not refused.allowed and refused.blocking == "narrow"
    # the refusals took nothing from the wide bucket: 9 of its 10 are left
    assert [(await limiter.take([wide])).allowed for _ in range(10)] == [True] * 9 + [False]
    with pytest.raises(ValueError):
        await limiter.take([narrow], cost=2)  # more than it can ever hold


async def test_a_message_is_charged_as_of_its_arrival(redis: Redis, prefix: str) -> None:
    limiter = RateLimiter(redis, prefix)
    bucket = [Bucket("arrivals", Rate(capacity=1, per_s=2))]
    arrived = time.time() - 5  # a flood queued five seconds ago, processed only now
    assert (await limiter.take(bucket, at=arrived)).allowed
    await asyncio.sleep(0.7)  # refill time passes while it waits its turn...
    assert not (await limiter.take(bucket, at=arrived)).allowed  # ...but it arrived together
    assert (await limiter.take(bucket)).allowed  # a message arriving now finds the refill


async def test_a_memo_never_charges_the_same_request_twice(redis: Redis, prefix: str) -> None:
    limiter = RateLimiter(redis, prefix)
    bucket = [Bucket("memo", Rate(capacity=1, per_s=1 / 600))]
    assert (await limiter.take(bucket, memo="m:1", memo_ttl_s=60)).allowed
    again = await limiter.take(bucket, memo="m:1", memo_ttl_s=60)
    assert again.allowed and again.memo == "ok"
    assert not (await limiter.take(bucket, memo="m:2", memo_ttl_s=60)).allowed


async def test_a_backlog_longer_than_the_refill_still_finds_its_bucket(
        redis: Redis, prefix: str) -> None:
    # review: the bucket expired by Redis' clock while a backlog was charged as of its
    # arrival, so behind a model slower than capacity / rate every queued message passed
    limiter = RateLimiter(redis, prefix)
    bucket = [Bucket("backlog", Rate(capacity=2, per_s=4))]  # full again 0.5 s after use
    arrived = time.time()  # ten messages at once, processed one every 0.8 s
    verdicts = []
    for _ in range(4):
        verdicts.append((await limiter.take(bucket, at=arrived)).allowed)
        await asyncio.sleep(0.8)
    assert verdicts == [True, True, False, False]


# the inbound stage ----------------------------------------------------------------------------

async def test_a_user_over_the_limit_is_told_once_then_skipped_silently(
        redis: Redis, prefix: str) -> None:
    sender = RecordingSender()
    stage = InboundRateLimit(InboundLimiter(RateLimiter(redis, prefix), user=SLOW,
                                            conversation=None), {"slack": sender})
    told, skipped = limited("slack", "user", "told"), limited("slack", "user", "skipped")
    contexts = [Context(message(n)) for n in range(5)]
    for ctx in contexts:
        await stage(ctx)
    assert [c.done for c in contexts] == [False, False, True, True, True]
    assert [c.skipped_reason for c in contexts] == [
        "", "", "rate limited: told", "rate limited", "rate limited"]
    assert len(sender.sent) == 1
    notice = sender.sent[0]
    wait = re.fullmatch(r"You're sending messages faster than I can answer; please wait "
                        r"(\d+) s\.", notice.text)
    assert wait and 590 <= int(wait.group(1)) <= 600
    assert notice.message_id == contexts[2].message.id and notice.ephemeral
    assert limited("slack", "user", "told") == told + 1
    assert limited("slack", "user", "skipped") == skipped + 2
    # someone else is not held up, and the console (the operator's terminal) never is
    other = Context(message(10, user="U2"))
    await stage(other)
    assert not other.done
    for n in range(5):
        console = Context(message(20 + n, platform="console"))
        await stage(console)
        assert not console.done


async def test_retried_messages_keep_their_verdict(redis: Redis, prefix: str) -> None:
    sender = RecordingSender()
    stage = InboundRateLimit(InboundLimiter(RateLimiter(redis, prefix), user=SLOW,
                                            conversation=None), {"slack": sender})
    for n in range(3):
        await stage(Context(message(n)))
    # a crash after the stage: the redelivered messages are judged as before, not charged
    again = [Context(message(n)) for n in range(3)]
    for ctx in again:
        await stage(ctx)
    assert [c.done for c in again] == [False, False, True]
    assert len(sender.sent) == 1  # the notice went out; its redelivery stays quiet


async def test_a_busy_conversation_is_told_for_everyone(redis: Redis, prefix: str) -> None:
    sender = RecordingSender()
    stage = InboundRateLimit(InboundLimiter(RateLimiter(redis, prefix), user=None,
                                            conversation=SLOW), {"slack": sender})
    contexts = [Context(message(n, user=f"U{n}", channel="C1")) for n in range(4)]
    for ctx in contexts:
        await stage(ctx)
    assert [c.done for c in contexts] == [False, False, True, True]
    assert len(sender.sent) == 1 and sender.sent[0].text.startswith(
        "This conversation is moving faster than I can answer")


async def test_ingress_gets_a_retry_after_and_is_never_charged_twice(
        redis: Redis, prefix: str) -> None:
    inbound = InboundLimiter(RateLimiter(redis, prefix), user=SLOW, conversation=None)
    refused = limited("webhook", "user", "refused")
    first, second, third = (message(n, platform="webhook") for n in range(3))
    assert await inbound.check_inbound(first) is None
    assert await inbound.check_inbound(second) is None
    retry_after = await inbound.check_inbound(third)
    assert retry_after is not None and 590 <= retry_after <= 600
    assert limited("webhook", "user", "refused") == refused + 1
    # what ingress let in passes the pipeline stage without taking a second token
    sender = RecordingSender()
    stage = InboundRateLimit(inbound, {"webhook": sender})
    for msg in (first, second):
        ctx = Context(msg)
        await stage(ctx)
        assert not ctx.done
    assert sender.sent == []


async def test_two_webhooks_users_of_one_name_have_buckets_of_their_own(
        redis: Redis, prefix: str) -> None:
    # a webhook's user ids are its integration's own: "alice" of one is not "alice" of another
    inbound = InboundLimiter(RateLimiter(redis, prefix), user=SLOW, conversation=None)

    def hook(name: str, n: int) -> Message:
        return Message(id=f"webhook:{name}:{n}",
                       conversation=Conversation("webhook", f"c{n}", name), user="alice",
                       text="question")

    assert [await inbound.check_inbound(hook("support", n)) for n in range(2)] == [None, None]
    assert await inbound.check_inbound(hook("support", 2)) is not None
    assert await inbound.check_inbound(hook("billing", 3)) is None
    # a Slack user keeps one bucket across the workspaces of a grid (its id is global)
    slack = [message(n, user="W1") for n in range(4, 6)]
    slack.append(Message(id="slack:T2:6", conversation=Conversation("slack", "D1", "T2"),
                         user="W1", text="question"))
    assert [await inbound.check_inbound(m) is None for m in slack] == [True, True, False]


async def test_zero_per_minute_disables_a_limit(redis: Redis, prefix: str) -> None:
    settings = load_settings(_env_file=None, bot_key_prefix=prefix, bot_rate_user_per_min=0,
                             bot_rate_conversation_per_min=0)
    assert not InboundLimiter.from_settings(redis, settings).enabled
    defaults = InboundLimiter.from_settings(redis, load_settings(_env_file=None,
                                                                 bot_key_prefix=prefix))
    assert defaults.enabled
    # honest chat never meets the defaults: ten quick messages, all answered
    for n in range(10):
        assert await defaults.check_inbound(message(n)) is None


# the send pacer -------------------------------------------------------------------------------

async def test_the_pacer_waits_instead_of_failing(redis: Redis, prefix: str) -> None:
    sleeps = Sleeps()
    pacer = SendPacer(RateLimiter(redis, prefix), sleep=sleeps)
    bucket = [Bucket("out:test:chat", Rate(capacity=1, per_s=10))]
    waited = [await pacer.acquire("test", bucket) for _ in range(4)]
    assert waited[0] == 0.0 and all(w > 0 for w in waited[1:])
    assert 0.25 <= sum(sleeps.requested) <= 0.4  # three more sends, a tenth of a second each
    impatient = SendPacer(RateLimiter(redis, prefix), sleep=sleeps, max_wait_s=0.01)
    slow = [Bucket("out:test:slow", SLOW)]
    assert await impatient.acquire("test", slow) == await impatient.acquire("test", slow) == 0
    with pytest.raises(PacingTimeout):  # ten minutes for the third: not waited for
        await impatient.acquire("test", slow)


async def test_pacing_fails_open_without_redis() -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    try:
        sleeps = Sleeps()
        pacer = SendPacer(RateLimiter(dead, "t"), sleep=sleeps)
        assert await pacer.acquire("test", [Bucket("x", SLOW)]) == 0.0
        assert sleeps.requested == []
    finally:
        await dead.aclose()


async def test_announced_route_buckets_are_shared_and_honoured(
        redis: Redis, prefix: str, services: Services) -> None:
    other = Redis.from_url(services.redis_url)
    try:
        first = SendPacer(RateLimiter(redis, prefix), sleep=Sleeps())
        sleeps = Sleeps()
        second = SendPacer(RateLimiter(other, prefix), sleep=sleeps)
        route = "POST /channels/{id}/messages"
        # worker 1 learns from a response: bucket "abc", one call left for 0.4 s
        await first.observe_route("discord", route, "42", bucket="abc", remaining=1,
                                  reset_after_s=0.4)
        assert await second.acquire_route("discord", route, "42") == 0.0  # the last one
        waited = await second.acquire_route("discord", route, "42")  # nothing left: wait
        assert 0.3 <= waited <= 0.45 and sleeps.requested
        assert await second.acquire_route("discord", route, "43") == 0.0  # another channel
        # a global 429 holds every route
        await first.observe_route("discord", "GET /users/@me", "-", bucket=None,
                                  remaining=None, reset_after_s=None, global_retry_after_s=0.3)
        # ...but not the interaction endpoints, which are outside the global limit and whose
        # response is due within 3 s
        assert await second.acquire_route(
            "discord", "POST /interactions/{id}/{token}/callback", "-",
            global_limited=False) == 0.0
        assert await second.acquire_route("discord", route, "44") >= 0.2
    finally:
        await other.aclose()


async def test_a_user_id_shaped_like_a_mark_is_limited_like_any_other(
        redis: Redis, prefix: str) -> None:
    # review: the "told" mark of user alice shared the key of user "alice:told"'s bucket
    inbound = InboundLimiter(RateLimiter(redis, prefix), user=SLOW, conversation=None)
    stage = InboundRateLimit(inbound, {"webhook": RecordingSender()})
    for first, user in ((0, "alice"), (10, "alice:told")):
        contexts = [Context(message(n, user=user, platform="webhook", channel=user))
                    for n in range(first, first + 4)]
        for ctx in contexts:
            await stage(ctx)
        assert [c.skipped_reason for c in contexts] == [
            "", "", "rate limited: told", "rate limited"], user


class FailingSender:
    async def send(self, reply: Reply) -> None:
        raise ConnectionResetError("platform down")


async def test_a_slow_down_reply_that_cannot_be_sent_still_skips(
        redis: Redis, prefix: str) -> None:
    # review: the failed reply failed the message, which then held its conversation
    stage = InboundRateLimit(InboundLimiter(RateLimiter(redis, prefix), user=SLOW,
                                            conversation=None), {"slack": FailingSender()})
    contexts = [Context(message(n)) for n in range(3)]
    for ctx in contexts:
        await stage(ctx)
    assert [c.skipped_reason for c in contexts] == ["", "", "rate limited"]
