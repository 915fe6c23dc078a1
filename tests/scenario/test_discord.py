"""Discord scenarios: Ed25519-signed interactions posted to the running app, and a fake
gateway (HELLO/IDENTIFY/READY/MESSAGE_CREATE) that discord.py connects to; a fake REST API on
loopback records the replies."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from nacl.signing import SigningKey

from adapters.discord.normalize import normalize_interaction, normalize_message_create
from adapters.payload import Skip
from bot.messages import Conversation, Reply
from tests.conftest import CORPUS
from tests.fakes.bot_server import Server
from tests.fakes.discord_api import (
    APP_ID,
    BOT_ID,
    CHANNEL_ID,
    DM_CHANNEL_ID,
    THREAD_ID,
    FakeDiscord,
    message_create,
)

PAYLOADS = Path(__file__).parent.parent / "payloads" / "discord"
SIGNING_KEY = SigningKey.generate()
PUBLIC_KEY = SIGNING_KEY.verify_key.encode().hex()


def interaction(name: str) -> dict[str, Any]:
    return cast("dict[str, Any]", json.loads((PAYLOADS / f"{name}.json").read_text()))


def signed(body: bytes, timestamp: str | None = None, key: SigningKey = SIGNING_KEY
           ) -> dict[str, str]:
    ts = timestamp or str(int(time.time()))
    signature = key.sign(ts.encode() + body).signature.hex()
    return {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": ts,
            "Content-Type": "application/json"}


async def post(srv: Server, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            srv.url + "/discord/interactions", data=io.BytesIO(body), headers=headers) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text else None)


@pytest.fixture
async def interactions_bot(discord_api: FakeDiscord, server_factory: Callable[..., Any]
                           ) -> Server:
    srv: Server = await server_factory(discord_public_key=PUBLIC_KEY,
                                       discord_api_url=discord_api.api_url)
    return srv


async def test_ping_is_answered_with_pong(interactions_bot: Server) -> None:
    body = json.dumps(interaction("ping")).encode()
    async with aiohttp.ClientSession() as session, session.post(
            interactions_bot.url + "/discord/interactions", data=body,
            headers=signed(body)) as r:
        assert r.status == 200 and await r.json() == {"type": 1}
        assert r.headers["Content-Type"] == "application/json"


async def test_slash_command_is_deferred_then_completed(interactions_bot: Server,
                                                        discord_api: FakeDiscord) -> None:
    await interactions_bot.rt.ingestor().ingest([str(CORPUS / "zlib-usage-example.html")])
    body = json.dumps(interaction("slash_command")).encode()
    started = time.monotonic()
    assert await post(interactions_bot, body, signed(body)) == (200, {"type": 5})
    assert time.monotonic() - started < 3  # Discord's deadline for the first response
    path = f"/webhooks/{APP_ID}/A_UNIQUE_TOKEN/messages/@original"
    await discord_api.wait_for(lambda: any(c[1] == path for c in discord_api.calls))
    method, _, sent, headers = next(c for c in discord_api.calls if c[1] == path)
    assert method == "PATCH" and "16384" in sent["content"]  # type: ignore[index]
    assert headers["authorization"] == ""  # the interaction token authorizes follow-ups
    assert sent["allowed_mentions"] == {"parse": []}  # type: ignore[index]
    # a redelivered interaction is acknowledged but not answered twice
    assert (await post(interactions_bot, body, signed(body)))[0] == 200
    await asyncio.sleep(0.6)
    assert sum(c[1] == path for c in discord_api.calls) == 1


@pytest.mark.parametrize("case", ["missing", "no_timestamp", "tampered", "wrong_key",
                                  "not_hex", "non_ascii", "year_2001", "stale", "future",
                                  "not_numeric", "fractional", "negative"])
async def test_bad_signatures_are_401(interactions_bot: Server, case: str) -> None:
    body = json.dumps(interaction("slash_command")).encode()
    now = int(time.time())
    headers = {
        "missing": {"Content-Type": "application/json"},
        "no_timestamp": {k: v for k, v in signed(body).items() if k != "X-Signature-Timestamp"},
        "tampered": signed(body.replace(b"CHUNK", b"CHANK")),
        "wrong_key": signed(body, key=SigningKey.generate()),
        "not_hex": dict(signed(body), **{"X-Signature-Ed25519": "zz" * 64}),
        "non_ascii": dict(signed(body), **{"X-Signature-Timestamp": "é"}),
        # validly signed, but outside the 5-minute window or not a number of seconds
        "year_2001": signed(body, timestamp="1000000000"),
        "stale": signed(body, timestamp=str(now - 360)),
        "future": signed(body, timestamp=str(now + 360)),
        "not_numeric": signed(body, timestamp="yesterday"),
        "fractional": signed(body, timestamp=f"{now}.5"),
        "negative": signed(body, timestamp=f"-{now}"),
    }[case]
    status, got = await post(interactions_bot, body, headers)
    assert (status, got) == (401, {"error": "invalid request signature"})
    assert await interactions_bot.rt.inbox.backlog() == 0


async def test_a_replayed_ping_from_2001_is_refused(interactions_bot: Server) -> None:
    body = json.dumps(interaction("ping")).encode()
    assert await post(interactions_bot, body, signed(body, "1000000000")) == (
        401, {"error": "invalid request signature"})
    # within the window either way, it is answered
    for skew in (-240, 0, 240):
        fresh = signed(body, str(int(time.time()) + skew))
        assert await post(interactions_bot, body, fresh) == (200, {"type": 1})


@pytest.mark.parametrize(("body", "status"), [(b"{oops", 400), (b"[]", 400),
                                              (b"x" * 2_000_000, 413)])
async def test_bad_bodies(interactions_bot: Server, body: bytes, status: int) -> None:
    assert (await post(interactions_bot, body, signed(body)))[0] == status


async def test_gateway_dm_mention_thread_and_loops(discord_api: FakeDiscord,
                                                   server_factory: Callable[..., Any]) -> None:
    srv = await server_factory(discord_bot_token="discord-bot-token-123",
                               discord_api_url=discord_api.api_url,
                               discord_gateway_url=discord_api.gateway_url)
    await discord_api.wait_for(lambda: discord_api.identify is not None)
    intents = discord_api.identify["intents"]  # type: ignore[index]
    assert intents & (1 << 15) and intents & (1 << 9) and intents & (1 << 12)
    assert discord_api.identify["token"] == "discord-bot-token-123"  # type: ignore[index]
    await asyncio.sleep(0.5)  # READY and GUILD_CREATE processed
    for event in (
        message_create("chatter without a mention", message_id="1"),
        message_create("my own answer", author_id=BOT_ID, bot=True, mention_bot=True,
                       message_id="2"),
        message_create("another bot", bot=True, author_id="77", mention_bot=True,
                       message_id="3"),
        message_create(f"<@{BOT_ID}> where do I start?", mention_bot=True, message_id="4"),
        message_create("hello in private", channel=DM_CHANNEL_ID, guild_id=None,
                       message_id="5"),
        message_create(f"<@{BOT_ID}> thread question", channel=THREAD_ID, mention_bot=True,
                       message_id="6"),
    ):
        await discord_api.events.put(event)
    await discord_api.wait_for(lambda: len(discord_api.messages()) >= 3)
    await discord_api.events.put(message_create("thread follow-up", channel=THREAD_ID,
                                                message_id="7"))
    await discord_api.wait_for(lambda: len(discord_api.messages()) >= 4)
    await asyncio.sleep(0.6)
    sent = discord_api.messages()
    replies = {body["message_reference"]["message_id"]: path for path, body in sent}
    assert replies == {"4": f"/channels/{CHANNEL_ID}/messages",
                       "5": f"/channels/{DM_CHANNEL_ID}/messages",
                       "6": f"/channels/{THREAD_ID}/messages",
                       "7": f"/channels/{THREAD_ID}/messages"}
    assert len(sent) == 4
    questions = sorted(r["text"] for r in await srv.rt.pool.fetch(
        "SELECT text FROM messages WHERE direction = 'in'"))
    assert questions == ["hello in private", "thread follow-up", "thread question",
                         "where do I start?"]
    typing = [c for c in discord_api.calls if c[1].endswith("/typing")]
    assert typing and typing[0][3]["authorization"] == "Bot discord-bot-token-123"


async def test_long_content_split_and_429_waits(interactions_bot: Server,
                                               discord_api: FakeDiscord) -> None:
    discord_api.rate_limit_next = 1
    text = "\n\n".join(f"Part {i}. " + "lorem ipsum " * 60 for i in range(6))
    started = time.monotonic()
    await interactions_bot.rt.senders["discord"].send(Reply(
        message_id="m", conversation=Conversation("discord", CHANNEL_ID, reply_to="99"),
        text=text, meta={"mode": "gateway"}))
    assert time.monotonic() - started >= 0.45  # waited retry_after 0.5
    pieces = [body["content"] for _, body in discord_api.messages()]
    assert len(pieces) >= 3 and all(len(p) <= 2000 for p in pieces)
    assert "".join(pieces).count("lorem") == 360


def test_normalize_table() -> None:
    assert normalize_message_create(message_create("hi"), BOT_ID) == Skip(
        "guild message without a mention")
    dm = normalize_message_create(message_create(f"<@!{BOT_ID}>  hi  there", guild_id=None),
                                  BOT_ID)
    assert not isinstance(dm, Skip) and dm.text == "hi there"
    assert normalize_message_create(message_create("", guild_id=None), BOT_ID) == Skip(
        "no text (is the MESSAGE_CONTENT intent enabled?)")
    command = normalize_interaction(interaction("slash_command"))
    assert not isinstance(command, Skip)
    assert command.id == "discord:interaction:786008729715212338"
    assert command.meta["token"] == "A_UNIQUE_TOKEN" and command.user == "53908232506183680"
    assert normalize_interaction(interaction("ping")) == Skip("interaction type 1")


async def test_a_reply_that_failed_midway_resumes_without_duplicates(
        interactions_bot: Server, discord_api: FakeDiscord) -> None:
    from adapters.discord.send import DiscordError

    discord_api.rate_limit_next = 4  # more 429s than the sender waits out ...
    discord_api.reject_from_post = 1  # ... starting with the second piece
    reply = Reply(message_id="resume-me", text="\n\n".join(
        f"Part {i}. " + "lorem ipsum " * 150 for i in range(3)),
        conversation=Conversation("discord", CHANNEL_ID, reply_to="99"),
        meta={"mode": "gateway"})
    with pytest.raises(DiscordError):
        await interactions_bot.rt.senders["discord"].send(reply)
    assert len(discord_api.messages()) == 1
    await interactions_bot.rt.senders["discord"].send(reply)  # the engine's retry
    contents = [body["content"] for _, body in discord_api.messages()]
    assert len(contents) == 3 and len(set(contents)) == 3
    from adapters.discord.send import nonce

    assert [body["nonce"] for _, body in discord_api.messages()] == [
        nonce("resume-me", i) for i in range(3)]
    assert all(body["enforce_nonce"] is True for _, body in discord_api.messages())
    assert [c.split(".")[0] for c in contents] == ["Part 0", "Part 1", "Part 2"]


async def test_a_refused_intent_is_reported_and_nothing_else_breaks(
        discord_api: FakeDiscord, server_factory: Callable[..., Any]) -> None:
    import discord as discord_py

    discord_api.refuse_intents = True
    srv = await server_factory(discord_bot_token="discord-bot-token-123",
                               discord_public_key=PUBLIC_KEY,
                               discord_api_url=discord_api.api_url,
                               discord_gateway_url=discord_api.gateway_url)
    [adapter] = [p for p in srv.rt.platforms if p.name == "discord"]
    for _ in range(100):
        if adapter._gateway is not None and adapter._gateway.done():
            break
        await asyncio.sleep(0.1)
    gateway = adapter._gateway
    assert gateway.done()
    assert isinstance(gateway.exception(), discord_py.PrivilegedIntentsRequired)
    body = json.dumps(interaction("ping")).encode()  # interactions still answered
    assert await post(srv, body, signed(body)) == (200, {"type": 1})
