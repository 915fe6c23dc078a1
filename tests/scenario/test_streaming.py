"""Streamed answers: on Slack, Telegram and Discord the answer appears in one message that is
edited at a bounded rate while the model streams, then finished in place; no extra posts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.fakes.bot_server import Server
from tests.fakes.discord_api import APP_ID, FakeDiscord
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_api import SIGNING_SECRET, FakeSlack, signed_headers
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.scenario import test_discord, test_slack, test_telegram

ANSWER = "Open the billing app. Tap the settings tab. Choose a new plan. Confirm the change."
CHUNKS = len(ANSWER.split())  # the fake streams one word per chunk


@pytest.fixture
async def slow_llm() -> AsyncIterator[FakeOpenAI]:
    """Streams one word every 0.1 s (1.6 s in all)."""
    server = await FakeOpenAI(answer=lambda body: ANSWER, chunk_delay_s=0.1).start()
    yield server
    await server.stop()


async def mention_the_bot(server_factory: Callable[..., Any], slack: FakeSlack,
                          llm: FakeOpenAI) -> None:
    """Start a streaming bot on `slack` and send it the documented app_mention event."""
    srv: Server = await server_factory(
        slack_bot_token="xoxb-test-token", slack_signing_secret=SIGNING_SECRET,
        slack_api_url=slack.api_url, **streaming(llm))
    body = json.dumps(test_slack.payload("app_mention")).encode()
    assert await test_slack.post(srv, body, signed_headers(body)) == (200, "")


def streaming(llm: FakeOpenAI) -> dict[str, Any]:
    return {"llm_base_url": llm.base_url, "llm_stream_edit_interval_s": 0.3,
            "retrieval_top_k": 0}


async def test_slack_edits_one_message(server_factory: Callable[..., Any], slow_llm: FakeOpenAI,
                                       slack: FakeSlack) -> None:
    await mention_the_bot(server_factory, slack, slow_llm)
    await slack.wait_for(lambda: any(
        m == "chat.update" and b.get("text") == ANSWER for m, b in slack.calls))
    assert slow_llm.requests[0]["stream"] is True
    [draft] = slack.posts()  # the only post: the first draft
    assert draft["text"].endswith("…") and ANSWER.startswith(draft["text"][:-2])
    assert draft["thread_ts"] == "1515449522.000016"
    updates = [b for m, b in slack.calls if m == "chat.update"]
    assert len({u["ts"] for u in updates}) == 1  # one message, edited in place
    assert all(u["channel"] == draft["channel"] for u in updates)
    assert 1 < len(updates) <= CHUNKS // 2  # bounded: not one edit per token
    assert updates[-1]["text"] == ANSWER


async def test_a_deleted_draft_gets_the_answer_posted_anew(
        server_factory: Callable[..., Any], slow_llm: FakeOpenAI, slack: FakeSlack) -> None:
    await mention_the_bot(server_factory, slack, slow_llm)
    await slack.wait_for(lambda: slack.posts())  # the first draft is out
    slack.update_error = "message_not_found"  # ... and a user deletes it
    await slack.wait_for(lambda: any(p["text"] == ANSWER for p in slack.posts()))
    draft, final = slack.posts()
    assert draft["text"].endswith("…") and final["thread_ts"] == draft["thread_ts"]


async def test_telegram_edits_one_message(server_factory: Callable[..., Any],
                                          slow_llm: FakeOpenAI) -> None:
    telegram = await FakeTelegram().start()
    try:
        srv: Server = await server_factory(
            telegram_bot_token=TOKEN, telegram_webhook_secret=test_telegram.SECRET,
            telegram_api_url=telegram.api_url, **streaming(slow_llm))
        body = json.dumps(test_telegram.update("private_text")).encode()
        assert await test_telegram.post(srv, body) == 200
        await telegram.wait_for(lambda: any(
            m == "editMessageText" and p.get("text") == ANSWER for m, p in telegram.calls))
        [draft] = telegram.sent()
        assert draft["reply_parameters"]["message_id"] == 1365
        edits = [p for m, p in telegram.calls if m == "editMessageText"]
        assert len({e["message_id"] for e in edits}) == 1
        assert all(int(e["chat_id"]) == 1111111 for e in edits)
        assert 1 < len(edits) <= CHUNKS // 2
    finally:
        await telegram.stop()


async def test_discord_edits_the_deferred_response(server_factory: Callable[..., Any],
                                                   slow_llm: FakeOpenAI) -> None:
    discord = await FakeDiscord().start()
    try:
        srv: Server = await server_factory(discord_public_key=test_discord.PUBLIC_KEY,
                                           discord_api_url=discord.api_url,
                                           **streaming(slow_llm))
        body = json.dumps(test_discord.interaction("slash_command")).encode()
        assert await test_discord.post(srv, body, test_discord.signed(body)) == (200, {"type": 5})
        path = f"/webhooks/{APP_ID}/A_UNIQUE_TOKEN/messages/@original"
        await discord.wait_for(lambda: any(
            c[1] == path and (c[2] or {}).get("content") == ANSWER for c in discord.calls))
        patches = [c[2] for c in discord.calls if c[1] == path]
        assert 1 < len(patches) <= CHUNKS // 2
        assert patches[0]["content"].endswith("…")  # type: ignore[index]
        assert not any(c[0] == "POST" and "/webhooks/" in c[1] for c in discord.calls)
    finally:
        await discord.stop()


async def test_quick_answers_are_posted_whole(server_factory: Callable[..., Any],
                                              fake_llm: FakeOpenAI, slack: FakeSlack) -> None:
    await mention_the_bot(server_factory, slack, fake_llm)
    await slack.wait_for(lambda: slack.posts())
    assert [m for m, _ in slack.calls if m.startswith("chat.")] == ["chat.postMessage"]
