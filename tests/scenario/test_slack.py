"""Slack scenarios: signed requests built from Slack's documented payloads go to the running
app; a fake Slack Web API on loopback records what the bot sends back."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import aiohttp
import pytest

from adapters.payload import Skip
from adapters.slack.normalize import SlackIdentity, normalize_event, strip_mention
from adapters.verification import verify_slack_v0
from tests.conftest import CORPUS
from tests.fakes.bot_server import Server
from tests.fakes.slack_api import BOT_USER_ID, SIGNING_SECRET, TEAM_ID, FakeSlack, signed_headers

PAYLOADS = Path(__file__).parent.parent / "payloads" / "slack"


def payload(name: str) -> dict[str, Any]:
    return cast("dict[str, Any]", json.loads((PAYLOADS / f"{name}.json").read_text()))


async def post(srv: Server, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.post(
            srv.url + "/slack/events", data=io.BytesIO(body), headers=headers) as response:
        return response.status, await response.text()


@pytest.fixture
async def slack_bot(server_factory: Callable[..., Any], slack: FakeSlack) -> Server:
    srv: Server = await server_factory(slack_bot_token="xoxb-test-token",
                                       slack_signing_secret=SIGNING_SECRET,
                                       slack_api_url=slack.api_url)
    return srv


async def test_app_mention_is_answered_in_its_thread(slack_bot: Server, slack: FakeSlack
                                                     ) -> None:
    await slack_bot.rt.ingestor().ingest([str(CORPUS / "zlib-usage-example.html")])
    body = json.dumps(payload("app_mention")).encode()
    assert await post(slack_bot, body, signed_headers(body)) == (200, "")
    await slack.wait_for(lambda: slack.posts())
    [sent] = slack.posts()
    assert sent["channel"] == "C0LAN2Q65"
    assert sent["thread_ts"] == "1515449522.000016"  # event.ts: a new thread
    assert sent["_auth"] == "Bearer xoxb-test-token"
    assert "zlib Usage Example" in sent["text"] and "16384" in sent["text"]
    assert "<@U0SWITCHBD>" not in sent["text"]
    inbound = await slack_bot.rt.pool.fetchval(
        "SELECT text FROM messages WHERE direction = 'in'")
    assert inbound == "What buffer size does the zlib example define as CHUNK?"

    # a follow-up in that thread needs no mention; a retry of the mention is not re-answered
    retry = dict(signed_headers(body), **{"X-Slack-Retry-Num": "1",
                                          "X-Slack-Retry-Reason": "http_timeout"})
    assert (await post(slack_bot, body, retry))[0] == 200
    follow = json.dumps(payload("thread_reply")).encode()
    assert (await post(slack_bot, follow, signed_headers(follow)))[0] == 200
    await slack.wait_for(lambda: len(slack.posts()) >= 2)
    await asyncio.sleep(0.5)
    assert len(slack.posts()) == 2
    assert slack.posts()[1]["thread_ts"] == "1515449522.000016"


async def test_dm_is_answered_top_level_and_loops_are_prevented(slack_bot: Server,
                                                                slack: FakeSlack) -> None:
    for name in ("own_message", "other_bot", "message_changed", "message_im"):
        body = json.dumps(payload(name)).encode()
        assert await post(slack_bot, body, signed_headers(body)) == (200, ""), name
    await slack.wait_for(lambda: slack.posts())
    await asyncio.sleep(0.5)
    [sent] = slack.posts()  # only the human's DM
    assert sent["channel"] == "D024BE91L" and sent.get("thread_ts") is None
    count = await slack_bot.rt.pool.fetchval("SELECT count(*) FROM messages")
    assert count == 2


async def test_thread_messages_outside_the_bots_threads_are_ignored(slack_bot: Server,
                                                                    slack: FakeSlack) -> None:
    body = json.dumps(payload("thread_reply")).encode()
    assert (await post(slack_bot, body, signed_headers(body)))[0] == 200
    await asyncio.sleep(0.8)
    assert slack.posts() == []
    assert await slack_bot.rt.inbox.backlog() == 0


async def test_url_verification_and_ssl_check(slack_bot: Server) -> None:
    body = json.dumps({"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "type": "url_verification",
                       "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
                      ).encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(slack_bot.url + "/slack/events", data=body,
                                headers=signed_headers(body)) as r:
            assert r.status == 200 and r.content_type == "text/plain"
            assert await r.text() == "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
        async with session.post(slack_bot.url + "/slack/events", data=body,
                                headers={"Content-Type": "application/json"}) as r:
            assert r.status == 401  # the challenge is signed like everything else
        async with session.post(slack_bot.url + "/slack/events",
                                data=b"ssl_check=1&token=xyz", headers={
                                    "Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert r.status == 200


@pytest.mark.parametrize("case", ["stale", "future", "tampered", "missing", "wrong_secret",
                                  "bad_timestamp", "non_ascii"])
async def test_bad_signatures_are_401(slack_bot: Server, slack: FakeSlack, case: str) -> None:
    body = json.dumps(payload("message_im")).encode()
    now = int(time.time())
    headers = {
        "stale": signed_headers(body, timestamp=now - 301),
        "future": signed_headers(body, timestamp=now + 301),
        "tampered": signed_headers(body.replace(b"Hello", b"Jello")),
        "missing": {"Content-Type": "application/json"},
        "wrong_secret": signed_headers(body, secret="not-the-secret"),
        "bad_timestamp": dict(signed_headers(body), **{"X-Slack-Request-Timestamp": "soon"}),
        "non_ascii": dict(signed_headers(body), **{"X-Slack-Signature": "v0=é"}),
    }[case]
    status, text = await post(slack_bot, body, headers)
    assert (status, json.loads(text)) == (401, {"error": "invalid request"})
    assert await slack_bot.rt.inbox.backlog() == 0


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b"{not json", "application/json", 400),
    (b"\xff\xfe", "application/json", 400),
    (b"payload=%7Bbroken", "application/x-www-form-urlencoded", 400),
    (b"x" * 2_000_000, "application/json", 413),
])
async def test_bad_bodies(slack_bot: Server, body: bytes, content_type: str,
                          status: int) -> None:
    got, _ = await post(slack_bot, body, signed_headers(body, content_type=content_type))
    assert got == status


async def test_slash_command_answers_through_response_url(slack_bot: Server,
                                                          slack: FakeSlack) -> None:
    raw = (PAYLOADS / "slash_command.txt").read_text().strip().replace(
        "RESPONSE_URL", quote(f"http://127.0.0.1:{slack.port}/response/cmd1", safe=""))
    body = raw.encode()
    async with aiohttp.ClientSession() as session, session.post(
            slack_bot.url + "/slack/events", data=body,
            headers=signed_headers(body, content_type="application/x-www-form-urlencoded")) as r:
        assert r.status == 200 and await r.json() == {"response_type": "in_channel"}
    await slack.wait_for(lambda: any(m == "response_url" for m, _ in slack.calls))
    [(_, sent)] = [c for c in slack.calls if c[0] == "response_url"]
    assert sent["id"] == "cmd1" and sent["response_type"] == "in_channel"
    assert slack.posts() == []


async def test_long_replies_are_split_and_429_is_honoured(slack_bot: Server,
                                                          slack: FakeSlack) -> None:
    from bot.messages import Conversation, Reply

    slack.rate_limit_next = 1
    text = "\n\n".join(f"Paragraph {i}: " + "word " * 150 for i in range(12))  # ~9,000 chars
    started = time.monotonic()
    await slack_bot.rt.senders["slack"].send(Reply(
        message_id="m", conversation=Conversation("slack", "C1", "T1", thread="1.2"), text=text))
    assert time.monotonic() - started >= 0.9  # waited for Retry-After: 1
    assert [m for m, _ in slack.calls].count("ratelimited") == 1
    pieces = [p["text"] for p in slack.posts()]
    assert len(pieces) >= 3 and all(len(p) <= 3900 for p in pieces)
    assert "".join(pieces).count("word") == 12 * 150
    assert all(p["thread_ts"] == "1.2" for p in slack.posts())


async def test_markdown_becomes_mrkdwn(slack_bot: Server, slack: FakeSlack) -> None:
    from bot.messages import Conversation, Reply

    await slack_bot.rt.senders["slack"].send(Reply(
        message_id="m", conversation=Conversation("slack", "C1", "T1"),
        text="**Bold** and [a link](https://example.com) & <b>"))
    [sent] = slack.posts()
    assert sent["text"] == "*Bold* and <https://example.com|a link> &amp; &lt;b&gt;"


async def test_socket_mode_acks_and_answers(server_factory: Callable[..., Any],
                                            slack: FakeSlack) -> None:
    await server_factory(slack_bot_token="xoxb-test-token", slack_app_token="xapp-test-token",
                         slack_api_url=slack.api_url)
    await slack.envelopes.put({"envelope_id": "env-1", "type": "events_api",
                               "accepts_response_payload": False,
                               "payload": payload("message_im")})
    await slack.wait_for(lambda: slack.acks and slack.posts())
    assert slack.acks[0]["envelope_id"] == "env-1"
    assert slack.posts()[0]["channel"] == "D024BE91L"
    opened = [body for method, body in slack.calls if method == "apps.connections.open"]
    assert opened[0]["_auth"] == "Bearer xapp-test-token"


def test_official_signing_test_vector() -> None:
    # quoted from https://docs.slack.dev/authentication/verifying-requests-from-slack and
    # slack_sdk's own test
    body = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
            b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2F"
            b"webhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F"
            b"T1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629"
            b"121.803a0bc887a14d10d2c447fce8b6703c")
    signature = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    assert verify_slack_v0(secret, body, "1531420618", signature, now=1531420618)
    assert verify_slack_v0(secret, body, "1531420618", signature, now=1531420618 + 300)
    assert not verify_slack_v0(secret, body, "1531420618", signature, now=1531420618 + 301)
    assert not verify_slack_v0(secret, body + b"x", "1531420618", signature, now=1531420618)
    assert not verify_slack_v0(secret, body, "1531420618", None, now=1531420618)


def test_normalize_table() -> None:
    me = SlackIdentity(user_id=BOT_USER_ID, bot_id="B0SWITCHBD")
    cases = {
        "app_mention": ("slack:T0TEAM0001:C0LAN2Q65:1515449522.000016", "1515449522.000016"),
        "message_im": ("slack:T0TEAM0001:D024BE91L:1355517523.000005", None),
    }
    for name, (mid, thread) in cases.items():
        message = normalize_event(payload(name), me)
        assert not isinstance(message, Skip)
        assert (message.id, message.conversation.thread) == (mid, thread)
    assert normalize_event(payload("thread_reply"), me) == Skip(
        "channel message outside the bot's threads")
    assert not isinstance(normalize_event(payload("thread_reply"), me, in_bot_thread=True),
                          Skip)
    assert normalize_event(payload("own_message"), me, in_bot_thread=True) == Skip(
        "from a bot")
    assert normalize_event(payload("message_changed"), me) == Skip("subtype message_changed")
    assert strip_mention(f"<@{BOT_USER_ID}> hi <@U999|bob>", BOT_USER_ID) == "hi <@U999|bob>"


async def test_ack_never_waits_for_the_model_and_unseen_retries_are_processed(
        server_factory: Callable[..., Any], slack: FakeSlack) -> None:
    from tests.fakes.openai_server import FakeOpenAI

    llm = await FakeOpenAI(delay_s=5).start()
    try:
        srv = await server_factory(slack_bot_token="xoxb-test-token",
                                   slack_signing_secret=SIGNING_SECRET,
                                   slack_api_url=slack.api_url, llm_base_url=llm.base_url)
        body = json.dumps(payload("message_im")).encode()
        # the first delivery was lost on the way: Slack's retry is the first we see
        headers = dict(signed_headers(body), **{"X-Slack-Retry-Num": "2",
                                                "X-Slack-Retry-Reason": "http_timeout"})
        started = time.monotonic()
        assert await post(srv, body, headers) == (200, "")
        assert time.monotonic() - started < 1.0  # acked while the model still thinks
        await slack.wait_for(lambda: slack.posts(), timeout_s=30)
        assert slack.posts()[0]["text"].startswith("ANSWER to: Hello hello can you hear me?")
    finally:
        await llm.stop()


async def test_interactivity_payloads_are_acknowledged(slack_bot: Server, slack: FakeSlack
                                                       ) -> None:
    action = {"type": "block_actions", "user": {"id": "U061F7AUR"}, "team": {"id": TEAM_ID},
              "api_app_id": "A0APP00001", "trigger_id": "123.456.abc",
              "container": {"type": "message", "message_ts": "1.2", "channel_id": "C1"},
              "actions": [{"action_id": "feedback_up", "block_id": "b1", "value": "up",
                           "type": "button", "action_ts": "1.3"}]}
    body = ("payload=" + quote(json.dumps(action))).encode()
    headers = signed_headers(body, content_type="application/x-www-form-urlencoded")
    assert await post(slack_bot, body, headers) == (200, "")
    assert await slack_bot.rt.inbox.backlog() == 0


async def test_a_bad_app_token_does_not_block_start_up(server_factory: Callable[..., Any],
                                                       slack: FakeSlack) -> None:
    slack.socket_auth_fails = True
    started = time.monotonic()
    srv = await server_factory(slack_bot_token="xoxb-test-token",
                               slack_app_token="xapp-revoked-token",
                               slack_signing_secret=SIGNING_SECRET, slack_api_url=slack.api_url)
    assert time.monotonic() - started < 10
    body = json.dumps(payload("message_im")).encode()  # HTTP events still work
    assert await post(srv, body, signed_headers(body)) == (200, "")
    await slack.wait_for(lambda: slack.posts())


async def test_response_url_failures_do_not_reveal_the_url(slack_bot: Server,
                                                           slack: FakeSlack) -> None:
    from bot.errors import TransientError
    from bot.messages import Conversation, Reply

    slack.response_url_status = 500
    url = f"http://127.0.0.1:{slack.port}/response/secret-hook-123"
    with pytest.raises(TransientError) as info:
        await slack_bot.rt.senders["slack"].send(Reply(
            message_id="cmd-x", conversation=Conversation("slack", "C1", "T1"), text="hi",
            meta={"response_url": url}))
    assert "secret-hook-123" not in str(info.value) and info.value.__cause__ is None
