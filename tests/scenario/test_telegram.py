"""Telegram scenarios: updates from the Bot API docs posted to the webhook with the secret
header, or served by getUpdates; a fake Bot API on loopback records sendMessage calls."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest

from adapters.payload import Skip
from adapters.telegram.normalize import TelegramIdentity, normalize_update
from adapters.telegram.send import render
from bot.messages import Conversation, Reply
from tests.conftest import CORPUS
from tests.fakes.bot_server import Server
from tests.fakes.telegram_api import BOT_ID, BOT_USERNAME, TOKEN, FakeTelegram

PAYLOADS = Path(__file__).parent.parent / "payloads" / "telegram"
SECRET = "tg-webhook-secret_0123"
ME = TelegramIdentity(id=BOT_ID, username=BOT_USERNAME)


def update(name: str) -> dict[str, Any]:
    return cast("dict[str, Any]", json.loads((PAYLOADS / f"{name}.json").read_text()))


@pytest.fixture
async def tg_bot(server_factory: Callable[..., Any], telegram: FakeTelegram) -> Server:
    srv: Server = await server_factory(telegram_bot_token=TOKEN,
                                       telegram_webhook_secret=SECRET,
                                       telegram_api_url=telegram.api_url)
    return srv


async def post(srv: Server, body: bytes, secret: str | None = SECRET) -> int:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    async with aiohttp.ClientSession() as session, session.post(
            srv.url + "/telegram/webhook", data=body, headers=headers) as response:
        return response.status


async def test_private_message_is_answered_as_a_reply(tg_bot: Server,
                                                      telegram: FakeTelegram) -> None:
    await tg_bot.rt.ingestor().ingest([str(CORPUS / "zlib-usage-example.html")])
    body = json.dumps(update("private_text")).encode()
    assert await post(tg_bot, body) == 200
    await telegram.wait_for(lambda: telegram.sent())
    [sent] = telegram.sent()
    assert sent["chat_id"] == 1111111
    assert sent["reply_parameters"]["message_id"] == 1365
    assert "16384" in sent["text"] and "parse_mode" not in sent
    assert any(e["type"] == "blockquote" or e["type"] in ("bold", "text_link", "italic")
               for e in sent.get("entities", [])) or sent["text"]
    assert "sendChatAction" in telegram.methods()  # typing while the engine worked
    typing = next(p for m, p in telegram.calls if m == "sendChatAction")
    assert typing == {"chat_id": 1111111, "action": "typing"}
    # Telegram redelivers the same update: acknowledged, not answered again
    assert await post(tg_bot, body) == 200
    await asyncio.sleep(0.6)
    assert len(telegram.sent()) == 1


async def test_group_rules_forum_topics_and_loops(tg_bot: Server, telegram: FakeTelegram
                                                  ) -> None:
    # (guide_sample_without_is_bot is `/start`, now passed on as a command: test_normalize_table)
    for name in ("group_command_other_bot", "group_chatter", "edited_message",
                 "unknown_kind", "group_command_for_us", "group_mention"):
        assert await post(tg_bot, json.dumps(update(name)).encode()) == 200, name
    await telegram.wait_for(lambda: len(telegram.sent()) >= 2)
    await asyncio.sleep(0.6)
    sent = {p["chat_id"]: p for p in telegram.sent()}
    assert set(sent) == {-1001234567890, -4000000001}
    topic = sent[-1001234567890]
    assert topic["message_thread_id"] == 7 and topic["reply_parameters"]["message_id"] == 77
    questions = [r["text"] for r in await tg_bot.rt.pool.fetch(
        "SELECT text FROM messages WHERE direction = 'in' ORDER BY text")]
    assert questions == ["how large should the zlib buffers be?", "👋 what does inflateEnd do?"]


async def test_the_guides_start_sample_is_answered_with_help(tg_bot: Server,
                                                             telegram: FakeTelegram) -> None:
    # PTB's de_json rejects this update (no `from.is_bot`); read raw, `/start` runs `help`
    assert await post(tg_bot, json.dumps(update("guide_sample_without_is_bot")).encode()) == 200
    await telegram.wait_for(lambda: len(telegram.sent()) >= 1)
    [answer] = telegram.sent()
    assert answer["chat_id"] == 1111111 and answer["reply_parameters"]["message_id"] == 1365
    assert "!help" in answer["text"] or "/help" in answer["text"], answer["text"]


async def test_callback_queries_are_always_answered(tg_bot: Server,
                                                    telegram: FakeTelegram) -> None:
    assert await post(tg_bot, json.dumps(update("callback_query")).encode()) == 200
    assert ("answerCallbackQuery", {"callback_query_id": "4382bfdwdsb323b2d9"}) in telegram.calls
    assert telegram.sent() == []


@pytest.mark.parametrize(("secret", "body", "status"), [
    (None, b"{}", 403),
    ("wrong-secret", b"{}", 403),
    (SECRET + "x", b"{}", 403),
    (SECRET, b"{not json", 400),
    (SECRET, b"[1, 2, 3]", 200),  # valid JSON, not an update: acknowledged and ignored
    (SECRET, b"x" * 2_000_000, 413),
])
async def test_bad_requests(tg_bot: Server, secret: str | None, body: bytes, status: int) -> None:
    import io

    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    async with aiohttp.ClientSession() as session, session.post(
            tg_bot.url + "/telegram/webhook", data=io.BytesIO(body), headers=headers) as r:
        assert r.status == status
    assert await tg_bot.rt.inbox.backlog() == 0


async def test_long_polling_keeps_its_offset_across_restarts(server_factory: Callable[..., Any],
                                                             telegram: FakeTelegram) -> None:
    settings = {"telegram_bot_token": TOKEN, "telegram_api_url": telegram.api_url,
                "telegram_poll_timeout_s": 1}
    first = await server_factory(**settings)
    await telegram.push(update("private_text"))
    await telegram.wait_for(lambda: len(telegram.sent()) == 1)
    assert "deleteWebhook" in telegram.methods()
    for platform in first.rt.platforms:
        await platform.stop()  # the process "restarts": same Redis, same keys
    await asyncio.sleep(0.2)
    second_update = dict(update("private_text"), update_id=848200099)
    second_update["message"] = dict(second_update["message"], message_id=1366, text="hi again")
    for platform in first.rt.platforms:
        await platform.start()
    await telegram.push(second_update)
    await telegram.wait_for(lambda: len(telegram.sent()) == 2)
    await asyncio.sleep(1.5)
    assert len(telegram.sent()) == 2  # the first update was not answered twice
    offsets = [p.get("offset") for m, p in telegram.calls if m == "getUpdates"]
    assert 848200002 in offsets and 848200100 in offsets


async def test_long_replies_split_at_utf16_limit_and_429_waits(tg_bot: Server,
                                                                telegram: FakeTelegram) -> None:
    telegram.rate_limit_next = 1
    text = "\n\n".join("😀 " * 400 + f"paragraph {i}" for i in range(4))  # emoji: 2 UTF-16 units
    started = time.monotonic()
    await tg_bot.rt.senders["telegram"].send(Reply(
        message_id="m", conversation=Conversation("telegram", "1111111", reply_to="9"),
        text=text))
    assert time.monotonic() - started >= 0.9
    pieces = telegram.sent()
    assert len(pieces) >= 2
    assert all(len(p["text"].encode("utf-16-le")) // 2 <= 4096 for p in pieces)
    assert "".join(p["text"] for p in pieces).count("😀") == 1600
    assert pieces[0]["reply_parameters"]["message_id"] == 9
    assert all("reply_parameters" not in p for p in pieces[1:])


def test_markdown_becomes_entities_not_parse_mode() -> None:
    [(text, entities)] = render("**Bold** and [a link](https://example.com): x < y & z, _x_")
    assert "x < y & z" in text and "**" not in text
    kinds = {e.type for e in entities}
    assert {"bold", "text_link"} <= kinds
    link = next(e for e in entities if e.type == "text_link")
    assert link.url == "https://example.com"


def test_normalize_table() -> None:
    expected = {
        "private_text": "What buffer size does the zlib example define as CHUNK?",
        "group_command_for_us": "how large should the zlib buffers be?",
        "group_mention": "👋 what does inflateEnd do?",
        "group_command_other_bot": Skip("command for another bot"),
        "group_chatter": Skip("group message not addressed to the bot"),
        "edited_message": Skip("update kind edited_message"),
        "callback_query": Skip("update kind callback_query"),
        "unknown_kind": Skip("update kind message_reaction"),
        "guide_sample_without_is_bot": "",  # `/start`: passed on as command "start"
    }
    for name, want in expected.items():
        got = normalize_update(update(name), ME)
        if isinstance(want, Skip):
            assert got == want, name
        else:
            assert not isinstance(got, Skip) and got.text == want, name
    start = normalize_update(update("guide_sample_without_is_bot"), ME)
    assert not isinstance(start, Skip) and start.meta["command"] == "start"
    bare = update("guide_sample_without_is_bot")
    bare["message"]["text"] = "/unknown"
    assert normalize_update(bare, ME) == Skip("command without a question")
    assert normalize_update({"no": "update_id"}, ME) == Skip("no update_id")
    reply_to_bot = update("group_chatter")
    reply_to_bot["message"]["reply_to_message"] = {"message_id": 5, "from": {"id": BOT_ID}}
    assert not isinstance(normalize_update(reply_to_bot, ME), Skip)


async def test_a_flooding_user_is_told_once_then_skipped(server_factory: Callable[..., Any],
                                                         telegram: FakeTelegram) -> None:
    # the runtime wires the inbound limit into the pipeline (docs/rate-limits.md)
    srv: Server = await server_factory(
        telegram_bot_token=TOKEN, telegram_webhook_secret=SECRET,
        telegram_api_url=telegram.api_url, bot_rate_user_per_min=1, bot_rate_user_burst=2,
        bot_rate_conversation_per_min=0)
    for n in range(4):
        body = update("private_text")
        body["update_id"] += n
        body["message"]["message_id"] += n
        assert await post(srv, json.dumps(body).encode()) == 200
    await telegram.wait_for(lambda: len(telegram.sent()) >= 3)
    await asyncio.sleep(1.0)  # the fourth message is skipped: nothing more arrives
    texts = [sent["text"] for sent in telegram.sent()]
    assert len(texts) == 3, texts
    assert texts[2].startswith("You're sending messages faster than I can answer; please wait")
    assert not any(t.startswith("You're sending") for t in texts[:2])
