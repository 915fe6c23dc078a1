"""`bot preflight`: is this deployment's configuration complete and is everything it needs
reachable? Run before traffic (after a deploy, in CI/CD, in an init step).

One line per check on stdout, `ok`, `warn` or `FAIL`, each failure with its remedy; exit 0
when nothing failed, 1 otherwise (2 for settings that do not parse, like every command). No
check changes anything: preflight never migrates, creates the consumer group or starts a
platform connection. Secrets never appear in the output (URLs are shown without passwords).

Checks: the database (reachable, pgvector installed or installable, migrations current),
Redis (reachable, version >= 7, the inbox's consumer group), the embedder (loads, and
produces vectors of the stored length), each configured LLM provider (`GET /models`
answers), each configured platform's token (adapters/credentials.py), and the secrets that
enabled endpoints need.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import openai
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from adapters.credentials import check_credentials
from bot.cli_common import out, run, settings
from bot.config import Settings
from bot.errors import BotError
from bot.inbox import GROUP
from bot.keys import Keys
from bot.log import SecretRedactor
from bot.runtime import embedding_dim
from migrations import runner

Status = Literal["ok", "warn", "FAIL"]

#: Limit of each network check, seconds.
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    """One line of the report: `remedy` says what to do about a `FAIL` or `warn`."""

    name: str
    status: Status
    detail: str
    remedy: str = ""


def _where(url: str) -> str:
    """scheme://host:port/path of a service URL, without user or password."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "(a malformed URL)"
    if host is None:
        host = "localhost" if parts.scheme in ("redis", "rediss") else "(unix socket)"
    elif ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"


#: Errors whose message says what went wrong on the wire (a refused connection, a failed
#: login, a protocol error) and quotes no URL; any other error is shown by its type only,
#: since a malformed URL's error may quote part of its password.
_TELLING = (OSError, asyncpg.PostgresError, RedisError, aiohttp.ClientError, openai.APIError)

#: Said of a URL that does not parse.
_MALFORMED = ("percent-encode the password if it holds / # ? @ : or %, e.g. "
              "python3 -c 'import urllib.parse; print(urllib.parse.quote(input(), safe=\"\"))'")


def _clean(text: str) -> str:
    """`text` on one line with no control characters (server-supplied names included)."""
    return "".join(c if c.isprintable() else " " for c in text)


class Preflight:
    """Runs the checks in order; `checks` holds the results so far."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.checks: list[Check] = []
        # what the output shows of the service URLs is `_where`'s (no password); secrets are
        # redacted from error messages only, where a server may have quoted one
        self._redactor = SecretRedactor(s.secret_values())

    def add(self, name: str, status: Status, detail: str, remedy: str = "") -> None:
        self.checks.append(Check(name, status, _clean(detail), remedy))

    def why(self, exc: BaseException) -> str:
        """What failed, for a FAIL line: the type, and the message where it is safe."""
        text = str(exc).splitlines()[0] if isinstance(exc, _TELLING) and str(exc) else ""
        return self._redactor.redact(f"{type(exc).__name__}: {text}"[:200]) if text \
            else type(exc).__name__

    async def guarded(self, name: str, check: Callable[[], Awaitable[None]],
                      remedy: str) -> None:
        """Run `check`; an unexpected exception becomes one FAIL line, never a traceback."""
        try:
            await asyncio.wait_for(check(), TIMEOUT_S * 3)
        except Exception as exc:
            self.add(name, "FAIL", self.why(exc), remedy)

    async def run(self) -> list[Check]:
        s = self.s
        if s.database_url is None or s.redis_url is None:
            self.add("services", "warn", "DATABASE_URL or REDIS_URL unset: the embedded "
                     "servers start with the bot (one machine only)",
                     "set both for a deployment of several processes")
        if s.database_url is not None:
            await self.guarded("database", self.database,
                               "check DATABASE_URL and that the server is reachable")
        if s.redis_url is not None:
            await self.guarded("redis", self.redis,
                               "check REDIS_URL and that the server is reachable")
        await self.guarded("embedder", self.embedder, "check the EMBEDDING_* settings")
        await self.guarded("llm", self.llm, "check LLM_BASE_URL / LLM_PROVIDERS")
        async with aiohttp.ClientSession() as http:
            for c in await check_credentials(s, http):
                self.add(c.platform, "ok" if c.ok else "FAIL", c.detail,
                         "" if c.ok else f"check {c.platform.upper()}_BOT_TOKEN (and "
                         f"{c.platform.upper()}_API_URL): the bot cannot answer on "
                         f"{c.platform} without it")
        self.endpoints()
        return self.checks

    async def database(self) -> None:
        assert self.s.database_url is not None
        url = self.s.database_url.get_secret_value()
        where = _where(url)
        try:  # command_timeout: every query below is bounded too
            conn = await asyncpg.connect(url, timeout=TIMEOUT_S, command_timeout=TIMEOUT_S)
        except ValueError as exc:  # the DSN does not parse
            self.add("database", "FAIL", f"DATABASE_URL does not parse ({self.why(exc)})",
                     _MALFORMED)
            return
        except Exception as exc:
            self.add("database", "FAIL", f"{where}: cannot connect ({self.why(exc)})",
                     "check DATABASE_URL (host, port, database, user, password) and that "
                     "the server accepts connections from here")
            return
        try:
            version = await conn.fetchval("SHOW server_version")
            installed = await conn.fetchval(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            available = await conn.fetchval(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
            pending = await runner.pending(conn)
            stored = await runner.stored_dim(conn)
        except Exception as exc:
            conn.terminate()  # a server that stalls mid-query: do not wait for a goodbye
            self.add("database", "FAIL", f"{where}: connected, then a query failed "
                     f"({self.why(exc)})", "check the server's load and locks "
                     "(pg_stat_activity)")
            return
        try:
            await asyncio.wait_for(conn.close(), TIMEOUT_S)
        except Exception:
            conn.terminate()
        self.add("database", "ok", f"{where}: PostgreSQL {version}")
        if installed:
            self.add("pgvector", "ok", f"vector {installed} installed")
        elif available:
            self.add("pgvector", "ok", f"vector {available} available; the migrations "
                     "install it (they need CREATE on the database)")
        else:
            self.add("pgvector", "FAIL", "the vector extension is not available on this "
                     "server", "install pgvector on the server (package "
                     "postgresql-NN-pgvector, or the image pgvector/pgvector)")
        if not pending:
            self.add("migrations", "ok", "schema up to date")
        elif self.s.bot_migrate_on_start:
            self.add("migrations", "warn", f"{len(pending)} pending ({pending}); applied at "
                     "start-up (BOT_MIGRATE_ON_START=true)", "or run `bot migrate` now")
        else:
            self.add("migrations", "FAIL", f"{len(pending)} pending ({pending}) and "
                     "BOT_MIGRATE_ON_START is false", "run `bot migrate`")
        want = embedding_dim(self.s)
        if stored is not None and stored != want:
            self.add("embedding length", "FAIL", f"chunks.embedding holds {stored}-dimensional "
                     f"vectors; the configured embedder makes {want}",
                     "use the embedder the knowledge base was built with, or a new database")

    async def redis(self) -> None:
        assert self.s.redis_url is not None
        url = self.s.redis_url.get_secret_value()
        where = _where(url)
        try:
            client = Redis.from_url(url, socket_connect_timeout=TIMEOUT_S,
                                    socket_timeout=TIMEOUT_S)
        except ValueError as exc:
            self.add("redis", "FAIL", f"REDIS_URL does not parse ({self.why(exc)})",
                     _MALFORMED)
            return
        try:
            try:
                info = await client.info("server")
            except Exception as exc:
                self.add("redis", "FAIL", f"{where}: cannot connect ({self.why(exc)})",
                         "check REDIS_URL (host, port, database number, password)")
                return
            version = str(info.get("redis_version", "0"))
            server = f"Valkey {info['valkey_version']}" if "valkey_version" in info \
                else f"Redis {version}"
            if int(version.split(".")[0] or 0) < 7:
                self.add("redis", "FAIL", f"{where}: {server}",
                         "use Redis 7 or newer, or Valkey (the versions this project is "
                         "tested on)")
                return
            self.add("redis", "ok", f"{where}: {server}")
            stream = Keys(self.s.bot_key_prefix).inbox()
            try:
                groups = [g["name"] for g in await client.xinfo_groups(stream)]
            except ResponseError:  # no such key
                groups = []
            if GROUP.encode() in groups or GROUP in groups:
                self.add("consumer group", "ok", f"{GROUP!r} on {stream}")
            else:  # a failure: KEDA's lag trigger cannot read a group that is not there
                self.add("consumer group", "FAIL", f"no group {GROUP!r} on {stream}",
                         "run `bot migrate` (it makes the group; the chart's hook Job and "
                         "compose's migrate service do); if the bot is running, check "
                         "BOT_KEY_PREFIX and that Redis kept its data")
        finally:
            await client.aclose()

    async def embedder(self) -> None:
        from knowledge.embedders import build_embedder

        backend = self.s.embedding_backend.value
        embedder = build_embedder(self.s)
        try:
            vectors = await asyncio.wait_for(embedder.embed(["preflight"]), TIMEOUT_S * 3)
        except Exception as exc:
            self.add("embedder", "FAIL", f"{backend}: embedding a text failed "
                     f"({self.why(exc)})", "check the EMBEDDING_* settings and, for "
                     "openai, that the endpoint answers POST /embeddings")
            return
        finally:
            await embedder.aclose()
        dim, want = len(vectors[0]), embedding_dim(self.s)
        if dim != want:
            self.add("embedder", "FAIL", f"{self.s.embedding_backend.value}: {dim}-dimensional "
                     f"vectors, expected {want}", "set EMBEDDING_DIM to the model's length")
            return
        self.add("embedder", "ok", f"{self.s.embedding_backend.value}: {dim}-dimensional "
                 "vectors")

    async def llm(self) -> None:
        from bot.llm.router import LLMRouter

        s = self.s
        if not s.llm_configured:
            self.add("llm", "ok", "none configured: answers quote the best passages")
            return
        try:
            router = LLMRouter(s.providers(), api_keys=s.provider_api_keys())
        except BotError as exc:
            self.add("llm", "FAIL", str(exc), "set the API key variable each provider names")
            return
        for provider in router.providers:
            name = f"llm {provider.name}"
            where = provider.config.base_url or "https://api.openai.com/v1"
            try:
                listed = await provider.client.with_options(
                    timeout=TIMEOUT_S, max_retries=0).models.list()
                ids = {m.id for m in listed.data}
            except openai.AuthenticationError:
                self.add(name, "FAIL", f"{where}: the API key was refused (401)",
                         "check the provider's API key")
                continue
            except Exception as exc:  # down, or not an OpenAI-compatible answer (HTML, ...)
                self.add(name, "FAIL", f"{where}: GET /models failed ({self.why(exc)})",
                         "check that the endpoint is up and its base URL ends in /v1")
                continue
            finally:
                await provider.client.close()
            if ids and provider.model not in ids:
                self.add(name, "warn", f"{where}: answers, but does not list the model "
                         f"{provider.model!r}", "check LLM_MODEL (or the provider's model)")
            else:
                self.add(name, "ok", f"{where}: answers; model {provider.model!r}")

    def endpoints(self) -> None:
        """Secrets that enabled endpoints need."""
        s = self.s
        if s.webhook_callback_url and s.webhook_secret is None:
            self.add("webhook", "FAIL", "WEBHOOK_CALLBACK_URL is set but WEBHOOK_SECRET is "
                     "not: POST /webhooks/{name} is disabled",
                     "set WEBHOOK_SECRET (the HMAC key your integrations sign with)")
        elif s.webhook_secret is not None:
            self.add("webhook", "ok", "POST /webhooks/{name} enabled (signed), replies to "
                     + ("WEBHOOK_CALLBACK_URL" if s.webhook_callback_url else
                        "the waiting request only (no WEBHOOK_CALLBACK_URL)"))
        if s.discord_bot_token is None and s.discord_public_key is None:
            return
        if s.discord_public_key is None:
            self.add("discord interactions", "warn", "DISCORD_PUBLIC_KEY unset: "
                     "/discord/interactions is off (gateway only)",
                     "set DISCORD_PUBLIC_KEY to take interactions over HTTP")


def _print(checks: list[Check]) -> None:
    width = max((len(c.name) for c in checks), default=0)
    for c in checks:
        line = f"{c.status:<4}  {c.name:<{width}}  {c.detail}"
        if c.remedy and c.status != "ok":
            line += f"  -> {c.remedy}"
        out.print(line, markup=False, highlight=False, soft_wrap=True)


def preflight(as_json: bool) -> None:
    """`bot preflight [--json]` (registered in bot/cli.py, which imports this lazily)."""
    s = settings()

    async def main() -> int:
        checks = await Preflight(s).run()
        failed = any(c.status == "FAIL" for c in checks)
        if as_json:
            out.print_json(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}))
        else:
            _print(checks)
        return 1 if failed else 0

    run(main())
