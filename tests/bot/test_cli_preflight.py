"""`bot preflight` as a user runs it (a real `bot` process): a healthy deployment exits 0;
each broken part gives one FAIL line with its remedy and exit 1, never a traceback; secrets
never reach the output. Real Postgres and Redis, fake Slack, Telegram, Discord and OpenAI
servers on loopback."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from bot.config import Settings
from bot.runtime import Runtime
from tests.conftest import subprocess_env
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.openai_server import EMBEDDING_DIM as FAKE_EMBEDDING_DIM
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.processes import bot_command, free_port
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import TOKEN as TELEGRAM_TOKEN
from tests.fakes.telegram_api import FakeTelegram

API_KEY = "sk-preflight-secret-key"
SLACK_TOKEN = "xoxb-preflight-secret-token"
DISCORD_TOKEN = "preflight.secret.discord-token"


async def _preflight(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.to_thread(
        subprocess.run, bot_command("preflight", *args), env=env, capture_output=True,
        text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
async def healthy(env_settings: dict[str, str], make_settings: Callable[..., Settings],
                  fake_llm: FakeOpenAI, slack: FakeSlack, telegram: FakeTelegram,
                  discord_api: FakeDiscord) -> dict[str, str]:
    """The environment of a deployment where everything is in order (migrated, group made)."""
    async with Runtime(make_settings(), migrate=True):
        pass
    return subprocess_env(
        env_settings, LLM_BASE_URL=fake_llm.base_url, OPENAI_API_KEY=API_KEY,
        SLACK_BOT_TOKEN=SLACK_TOKEN, SLACK_SIGNING_SECRET="slack-signing-secret-value",
        SLACK_API_URL=slack.api_url, TELEGRAM_BOT_TOKEN=TELEGRAM_TOKEN,
        TELEGRAM_API_URL=telegram.api_url, DISCORD_BOT_TOKEN=DISCORD_TOKEN,
        DISCORD_API_URL=discord_api.api_url, WEBHOOK_CALLBACK_URL="http://127.0.0.1:9/cb")


def _lines(stdout: str) -> dict[str, str]:
    """{check name: its whole line}."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        parts = line.split(maxsplit=1)
        if parts and parts[0] in ("ok", "warn", "FAIL"):
            name = line[6:].split("  ")[0].strip()
            found[name] = line
    return found


def _no_secrets(text: str, env: dict[str, str]) -> None:
    for secret in (API_KEY, SLACK_TOKEN, TELEGRAM_TOKEN, DISCORD_TOKEN,
                   env["WEBHOOK_SECRET"], "slack-signing-secret-value"):
        assert secret not in text


async def test_a_healthy_deployment_passes_every_check(healthy: dict[str, str]) -> None:
    code, stdout, stderr = await _preflight(healthy)
    assert code == 0, stdout + stderr
    lines = _lines(stdout)
    for name in ("database", "pgvector", "migrations", "redis", "consumer group", "embedder",
                 "llm default", "slack", "telegram", "discord", "webhook"):
        assert lines[name].startswith("ok"), (name, stdout)
    assert "schema up to date" in lines["migrations"]
    assert "getMe: @switchboard_test_bot" in lines["telegram"]
    assert "FAIL" not in stdout and "Traceback" not in stdout + stderr
    _no_secrets(stdout + stderr, healthy)
    code, stdout, _ = await _preflight(healthy, "--json")
    report: dict[str, Any] = json.loads(stdout)
    assert report["ok"] is True and {c["name"] for c in report["checks"]} >= {"database"}


BROKEN: dict[str, tuple[str, str]] = {
    # case: (the check that must fail, a phrase its line must hold)
    "wrong database url": ("database", "cannot connect"),
    "a password that needs percent-encoding": ("database", "does not parse"),
    "redis without the group": ("consumer group", "bot migrate"),
    "another embedder than the stored vectors'": ("embedding length", "384-dimensional"),
    "bad slack token": ("slack", "invalid_auth"),
    "bad telegram token": ("telegram", "401"),
    "unreachable llm": ("llm default", "GET /models failed"),
    "refused llm key": ("llm default", "refused"),
}


@pytest.mark.parametrize("case", list(BROKEN))
async def test_each_broken_part_is_one_clear_failing_line(
        case: str, healthy: dict[str, str], slack: FakeSlack, fake_llm: FakeOpenAI) -> None:
    env = dict(healthy)
    if case == "wrong database url":
        env["DATABASE_URL"] = f"postgresql://sb:hunter2-db-password@127.0.0.1:{free_port()}/sb"
    elif case == "redis without the group":
        env["BOT_KEY_PREFIX"] = env["BOT_KEY_PREFIX"] + "x"  # nothing made this inbox
    elif case == "a password that needs percent-encoding":
        env["DATABASE_URL"] = "postgresql://sb:Ab/hunter2-db-password@127.0.0.1:5432/sb"
    elif case == "another embedder than the stored vectors'":
        env.update(EMBEDDING_BACKEND="openai", EMBEDDING_BASE_URL=fake_llm.base_url,
                   EMBEDDING_DIM=str(FAKE_EMBEDDING_DIM))
    elif case == "bad slack token":
        slack.bot_auth_fails = True
    elif case == "bad telegram token":
        env["TELEGRAM_BOT_TOKEN"] = "42:not-the-bots-token"
    elif case == "unreachable llm":
        env["LLM_BASE_URL"] = f"http://127.0.0.1:{free_port()}/v1"
    elif case == "refused llm key":
        fake_llm.refused_key = API_KEY
    code, stdout, stderr = await _preflight(env)
    assert code == 1, stdout + stderr
    name, phrase = BROKEN[case]
    failing = [line for line in stdout.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1, stdout  # the broken part only: nothing else is blamed
    assert _lines(stdout)[name] == failing[0] and phrase in failing[0], stdout
    assert " -> " in failing[0]  # with what to do
    assert "Traceback" not in stdout + stderr
    _no_secrets(stdout + stderr, env)
    assert "hunter2" not in stdout + stderr


async def test_a_database_that_stalls_after_the_login_fails_within_bounds(
        healthy: dict[str, str]) -> None:
    """A proxy to the real server passes the login through, then swallows the first query:
    one FAIL line (the query timed out, the connection is dropped), not a hang."""
    parts = urlsplit(healthy["DATABASE_URL"])
    query = dict(parse_qsl(parts.query))

    async def upstream() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if parts.hostname:
            return await asyncio.open_connection(parts.hostname, parts.port or 5432)
        return await asyncio.open_unix_connection(
            f"{query['host']}/.s.PGSQL.{query.get('port', '5432')}")

    async def client_to_server(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        while True:  # startup packets (an SSLRequest first, maybe): length-prefixed, no type
            header = await reader.readexactly(4)
            body = await reader.readexactly(int.from_bytes(header, "big") - 4)
            writer.write(header + body)
            if body[:4] != (80877103).to_bytes(4, "big"):  # not an SSLRequest: the startup
                break
        while True:  # typed messages: the password goes through, the first query stalls
            kind = await reader.readexactly(1)
            header = await reader.readexactly(4)
            body = await reader.readexactly(int.from_bytes(header, "big") - 4)
            if kind in (b"P", b"Q"):
                await asyncio.sleep(3600)
            writer.write(kind + header + body)

    async def server_to_client(reader: asyncio.StreamReader,
                               writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)

    handlers: list[asyncio.Future[Any]] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await upstream()
        pumps = asyncio.gather(client_to_server(reader, up_writer),
                               server_to_client(up_reader, writer), return_exceptions=True)
        handlers.append(pumps)
        try:
            await pumps
        finally:
            up_writer.close()
            writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        env = {**healthy, "DATABASE_URL": f"postgresql://{parts.username or 'postgres'}@"
                                          f"127.0.0.1:{port}{parts.path}"}
        code, stdout, _ = await _preflight(env)
    finally:
        server.close()
        for pumps in handlers:
            pumps.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await asyncio.sleep(0.1)  # the handlers' own ends
    assert code == 1
    line = _lines(stdout)["database"]
    assert line.startswith("FAIL") and "connected, then a query failed" in line, stdout
