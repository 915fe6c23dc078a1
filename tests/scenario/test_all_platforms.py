"""`bot run` as a user runs it, with Slack, Telegram and Discord all configured and pointed at
fake platform servers: one message on each platform is answered in the right place."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import CORPUS, subprocess_env
from tests.fakes.discord_api import BOT_ID, CHANNEL_ID, FakeDiscord, message_create
from tests.fakes.processes import BotProcess, bot_command
from tests.fakes.slack_api import SIGNING_SECRET, FakeSlack, signed_headers
from tests.fakes.telegram_api import TOKEN, FakeTelegram
from tests.scenario.test_discord import PUBLIC_KEY
from tests.scenario.test_discord import signed as discord_signed
from tests.scenario.test_telegram import SECRET as TELEGRAM_SECRET


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeSlack, FakeTelegram, FakeDiscord]]:
    servers = (await FakeSlack().start(), await FakeTelegram().start(),
               await FakeDiscord().start())
    yield servers
    for server in servers:
        await server.stop()


async def test_bot_run_answers_on_every_platform(
        env_settings: dict[str, str], tmp_path: Path, processes: list[BotProcess],
        fakes: tuple[FakeSlack, FakeTelegram, FakeDiscord]) -> None:
    slack, telegram, discord_api = fakes
    env = subprocess_env(
        env_settings,
        SLACK_BOT_TOKEN="xoxb-run-token", SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_API_URL=slack.api_url,
        TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_WEBHOOK_SECRET=TELEGRAM_SECRET,
        TELEGRAM_API_URL=telegram.api_url,
        DISCORD_BOT_TOKEN="discord-run-token", DISCORD_PUBLIC_KEY=PUBLIC_KEY,
        DISCORD_API_URL=discord_api.api_url, DISCORD_GATEWAY_URL=discord_api.gateway_url,
        BOT_LOG_LEVEL="DEBUG")
    ingest = await asyncio.create_subprocess_exec(
        *bot_command("ingest", str(CORPUS / "zlib-usage-example.html")), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    assert await ingest.wait() == 0
    bot = BotProcess(env, tmp_path / "bot.log", "--workers", "2")
    processes.append(bot)
    await bot.ready()
    await discord_api.wait_for(lambda: discord_api.identify is not None)
    await asyncio.sleep(0.5)

    async with aiohttp.ClientSession() as session:
        event = {"type": "event_callback", "team_id": "T0TEAM0001", "event_id": "EvRUN1",
                 "event": {"type": "app_mention", "user": "U1", "channel": "C0RUN",
                           "ts": "1700000000.000100",
                           "text": "<@U0SWITCHBD> what is the CHUNK size in zlib?"}}
        body = json.dumps(event).encode()
        async with session.post(bot.url + "/slack/events", data=body,
                                headers=signed_headers(body)) as r:
            assert r.status == 200
        update = {"update_id": 900001, "message": {
            "message_id": 42, "date": 1731999999, "text": "what is the CHUNK size in zlib?",
            "from": {"id": 5555, "is_bot": False, "first_name": "Ada"},
            "chat": {"id": 5555, "type": "private"}}}
        async with session.post(bot.url + "/telegram/webhook", json=update, headers={
                "X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}) as r:
            assert r.status == 200
        ping = b'{"type": 1, "id": "1", "application_id": "2", "token": "t", "version": 1}'
        async with session.post(bot.url + "/discord/interactions", data=ping,
                                headers=discord_signed(ping)) as r:
            assert r.status == 200 and await r.json() == {"type": 1}
    await discord_api.events.put(message_create(
        f"<@{BOT_ID}> what is the CHUNK size in zlib?", mention_bot=True, message_id="88"))

    await slack.wait_for(lambda: slack.posts(), 60)
    await telegram.wait_for(lambda: telegram.sent(), 60)
    await discord_api.wait_for(lambda: discord_api.messages(), 60)
    [slack_reply] = slack.posts()
    assert (slack_reply["channel"], slack_reply["thread_ts"]) == ("C0RUN", "1700000000.000100")
    assert "16384" in slack_reply["text"]
    [telegram_reply] = telegram.sent()
    assert telegram_reply["chat_id"] == 5555
    assert telegram_reply["reply_parameters"]["message_id"] == 42
    assert "16384" in telegram_reply["text"]
    [(path, discord_reply)] = discord_api.messages()
    assert path == f"/channels/{CHANNEL_ID}/messages"
    assert discord_reply["message_reference"]["message_id"] == "88"
    assert "16384" in discord_reply["content"]

    bot.proc.send_signal(signal.SIGTERM)
    assert bot.proc.wait(30) == 0
    logs = (tmp_path / "bot.log").read_text()
    for secret in ("xoxb-run-token", SIGNING_SECRET, TOKEN, TELEGRAM_SECRET,
                   "discord-run-token", env_settings["WEBHOOK_SECRET"]):
        assert secret not in logs
