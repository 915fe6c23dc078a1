"""Discord REST calls paced by the buckets Discord announces in its response headers
(https://discord.com/developers/docs/topics/rate-limits): once a route's bucket says nothing
remains, the next call on it waits for the reset instead of drawing a 429, whichever worker
made the earlier calls; interaction webhook tokens never reach a Redis key."""

from __future__ import annotations

from adapters.discord.adapter import DiscordAdapter
from adapters.discord.send import route_of
from bot.messages import Conversation, Reply
from bot.ratelimit import Paced, RateLimiter, SendPacer
from tests.adapters.conftest import Harness, Sleeps
from tests.fakes.discord_api import CHANNEL_ID, GUILD_ID, FakeDiscord


def worker(harness: Harness, discord_api: FakeDiscord, sleeps: Sleeps | None) -> DiscordAdapter:
    """One worker's Discord adapter; paced (with its own pacer) unless `sleeps` is None."""
    adapter = DiscordAdapter(harness.deps(()), bot_token="test-bot-token", public_key=None,
                             api_url=discord_api.api_url, gateway_url=discord_api.gateway_url)
    if sleeps is not None:
        assert isinstance(adapter.sender, Paced)
        adapter.sender.pacer = SendPacer(RateLimiter(harness.redis, harness.prefix),
                                         sleep=sleeps)
    return adapter


def reply(n: int) -> Reply:
    return Reply(message_id=f"m-{n}", text=f"Answer {n}.", meta={"mode": "gateway"},
                 conversation=Conversation("discord", CHANNEL_ID, GUILD_ID))


async def test_an_exhausted_bucket_is_waited_out_by_every_worker(
        harness: Harness, discord_api: FakeDiscord) -> None:
    discord_api.route_limit = (2, 1.0)  # two messages per channel per second
    sleeps = [Sleeps(), Sleeps()]
    workers = [worker(harness, discord_api, s) for s in sleeps]
    for n in range(5):  # the workers take turns, as two processes sharing Redis would
        await workers[n % 2].sender.send(reply(n))
    assert [body["content"] for _, body in discord_api.messages()] == [
        f"Answer {n}." for n in range(5)]
    assert not [c for c in discord_api.calls if c[0] == "429"]
    # the third and the fifth message waited for a reset, each about a second
    waits = sleeps[0].requested + sleeps[1].requested
    assert len(waits) >= 2 and 1.5 <= sum(waits) <= 2.5
    assert sleeps[0].requested  # worker 1 (messages 0, 2, 4) waited on what worker 2 learnt
    assert await harness.redis.get(
        f"{harness.prefix}:rl:discord:route:POST /channels/{{id}}/messages") \
        == b"fake-channel-messages"


async def test_unpaced_calls_meet_the_429s(harness: Harness, discord_api: FakeDiscord) -> None:
    discord_api.route_limit = (2, 1.0)
    sender = worker(harness, discord_api, None).sender
    for n in range(3):
        await sender.send(reply(n))
    assert len(discord_api.messages()) == 3
    assert [c for c in discord_api.calls if c[0] == "429"]  # what pacing avoids


def test_routes_are_keyed_without_ids_or_tokens() -> None:
    assert route_of("post", f"/channels/{CHANNEL_ID}/messages") == (
        "POST /channels/{id}/messages", CHANNEL_ID)
    assert route_of("PATCH", f"/channels/{CHANNEL_ID}/messages/1400000000000000007") == (
        "PATCH /channels/{id}/messages/{id}", CHANNEL_ID)
    route, major = route_of("PATCH", "/webhooks/1100000000000000002/secret-token/messages/"
                                     "@original")
    assert route == "PATCH /webhooks/{id}/{token}/messages/@original"
    assert "secret-token" not in major and len(major) == 16
    assert route_of("PUT", "/applications/1100000000000000002/commands") == (
        "PUT /applications/{id}/commands", "-")
