"""A model slower than the client-side defaults of the stack (redis-py's 5 s socket timeout)
answers everywhere a user asks: `bot ask`, `bot chat`, a `?wait=true` webhook, Slack, Telegram
and Discord (issue 12). The model also streams slowly.

`SB_SLOW_MODEL_S` sets the model's delay (default 6.5 s); the closing note of issue 12 ran this
file with 61 s, the acceptance figure, which takes about as long.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from adapters.verification import sha256_signature
from tests.conftest import CORPUS, subprocess_env
from tests.fakes.bot_server import TEST_WEBHOOK_SECRET, envelope
from tests.fakes.discord_api import BOT_ID, CHANNEL_ID, FakeDiscord, message_create
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.processes import BotProcess, bot_command
from tests.fakes.slack_api import SIGNING_SECRET, FakeSlack, signed_headers
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.scenario.test_discord import PUBLIC_KEY, interaction
from tests.scenario.test_discord import signed as discord_signed
from tests.scenario.test_telegram import SECRET as TELEGRAM_SECRET

SLOW_MODEL_S = float(os.environ.get("SB_SLOW_MODEL_S", "6.5"))
#: the whole answer is due this long after the question, at the latest
DEADLINE_S = SLOW_MODEL_S + 60
#: the acceptance setting of issue 12: a `?wait=true` caller waits up to 90 s
WEBHOOK_WAIT_S = max(90.0, SLOW_MODEL_S + 20)


@pytest.fixture
async def slow_model() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI(delay_s=SLOW_MODEL_S, chunk_delay_s=0.2).start()
    yield server
    await server.stop()


async def _cli(env: dict[str, str], *args: str, stdin: bytes | None = None
               ) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *bot_command(*args), env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin or b""), DEADLINE_S + 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_bot_ask_and_bot_chat_wait_for_a_slow_model(
        env_settings: dict[str, str], slow_model: FakeOpenAI) -> None:
    env = subprocess_env(env_settings, LLM_BASE_URL=slow_model.base_url)
    code, out, err = await _cli(env, "ask", "--json", "what is zlib's CHUNK?")
    assert code == 0, err
    assert json.loads(out)["answer"] == "ANSWER to: what is zlib's CHUNK? [1]"
    assert "Traceback" not in err and "error" not in err.lower()
    code, out, err = await _cli(env, "chat", stdin=b"first question\nsecond question\n")
    assert code == 0, err
    assert "ANSWER to: first question [1]" in out and "ANSWER to: second question [1]" in out
    assert "Traceback" not in err


@pytest.fixture
async def platforms() -> AsyncIterator[tuple[FakeSlack, FakeTelegram, FakeDiscord]]:
    servers = (await FakeSlack().start(), await FakeTelegram().start(),
               await FakeDiscord().start())
    yield servers
    for server in servers:
        await server.stop()


async def test_every_platform_and_the_webhook_get_a_slow_answer(
        env_settings: dict[str, str], tmp_path: Path, processes: list[BotProcess],
        slow_model: FakeOpenAI, platforms: tuple[FakeSlack, FakeTelegram, FakeDiscord]
        ) -> None:
    slack, telegram, discord_api = platforms
    env = subprocess_env(
        env_settings, LLM_BASE_URL=slow_model.base_url,
        WEBHOOK_WAIT_TIMEOUT_S=str(WEBHOOK_WAIT_S),
        SLACK_BOT_TOKEN="xoxb-slow-token", SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_WEBHOOK_SECRET=TELEGRAM_SECRET,
        TELEGRAM_API_URL=telegram.api_url,
        DISCORD_BOT_TOKEN="discord-slow-token", DISCORD_PUBLIC_KEY=PUBLIC_KEY,
        DISCORD_API_URL=discord_api.api_url, DISCORD_GATEWAY_URL=discord_api.gateway_url)
    ingest = await asyncio.create_subprocess_exec(
        *bot_command("ingest", str(CORPUS / "zlib-usage-example.html")), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    assert await ingest.wait() == 0
    bot = BotProcess(env, tmp_path / "bot.log", "--workers", "6")
    processes.append(bot)
    await bot.ready()
    await discord_api.wait_for(lambda: discord_api.identify is not None)

    async def webhook_wait() -> tuple[int, dict[str, object]]:
        raw = envelope(id="slow-webhook", conversation="slow-c", text="the CHUNK size?")
        timeout = aiohttp.ClientTimeout(total=DEADLINE_S + 10)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                bot.url + "/webhooks/support?wait=true", data=raw,
                headers={"X-Signature": sha256_signature(TEST_WEBHOOK_SECRET, raw)}) as r:
            return r.status, await r.json()

    waiting = asyncio.create_task(webhook_wait())
    async with aiohttp.ClientSession() as session:
        event = {"type": "event_callback", "team_id": "T0TEAM0001", "event_id": "EvSLOW1",
                 "event": {"type": "app_mention", "user": "U1", "channel": "C0SLOW",
                           "ts": "1700000000.000200",
                           "text": "<@U0SWITCHBD> what is the CHUNK size in zlib?"}}
        body = json.dumps(event).encode()
        async with session.post(bot.url + "/slack/events", data=body,
                                headers=signed_headers(body)) as r:
            assert r.status == 200
        update = {"update_id": 900101, "message": {
            "message_id": 43, "date": 1731999999, "text": "what is the CHUNK size in zlib?",
            "from": {"id": 5556, "is_bot": False, "first_name": "Ada"},
            "chat": {"id": 5556, "type": "private"}}}
        async with session.post(bot.url + "/telegram/webhook", json=update, headers={
                "X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}) as r:
            assert r.status == 200
        command = json.dumps(interaction("slash_command")).encode()
        async with session.post(bot.url + "/discord/interactions", data=command,
                                headers=discord_signed(command)) as r:
            assert r.status == 200 and await r.json() == {"type": 5}  # deferred in time
    await discord_api.events.put(message_create(
        f"<@{BOT_ID}> what is the CHUNK size in zlib?", mention_bot=True, message_id="89"))

    status, answer = await waiting
    assert status == 200, answer
    assert answer["answer"] == "ANSWER to: the CHUNK size? [1]"

    def final_text(texts: list[str]) -> bool:
        """The whole answer was shown (drafts show it word by word; "[1]" is its last)."""
        return any("ANSWER to:" in t and "1]" in t for t in texts)

    await slack.wait_for(lambda: final_text(
        [body.get("text", "") for method, body in slack.calls
         if method in ("chat.postMessage", "chat.update")]), DEADLINE_S)
    await telegram.wait_for(lambda: final_text(
        [p.get("text", "") for m, p in telegram.calls
         if m in ("sendMessage", "editMessageText")]), DEADLINE_S)
    original = "/messages/@original"
    await discord_api.wait_for(lambda: final_text(
        [b["content"] for m, p, b, _ in discord_api.calls
         if m == "PATCH" and p.endswith(original) and isinstance(b, dict) and "content" in b]),
        DEADLINE_S)
    await discord_api.wait_for(lambda: final_text(
        [b.get("content", "") for _, b in discord_api.messages()]
        + [b.get("content", "") for m, p, b, _ in discord_api.calls
           if m == "PATCH" and f"/channels/{CHANNEL_ID}/messages/" in p
           and isinstance(b, dict)]), DEADLINE_S)

    bot.proc.send_signal(signal.SIGTERM)
    assert bot.proc.wait(60) == 0
    logs = (tmp_path / "bot.log").read_text()
    assert "TimeoutError" not in logs and "dead-lettered" not in logs
