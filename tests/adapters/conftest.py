"""A real inbox (the test Redis, a fresh key prefix) and a loopback HTTP server for testing
one adapter directly, without the engine: what an adapter stores is read back from the inbox."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from redis.asyncio import Redis

from adapters.base import AdapterDeps
from bot.inbox import Inbox
from bot.messages import Message
from bot.protocols import CommandOption, CommandSpec
from tests.conftest import Services

COMMANDS = (
    CommandSpec("ask", "Ask a question about the docs",
                (CommandOption("question", "What to ask", "string", True),)),
    CommandSpec("help", "List what I can do"),
    CommandSpec("create_ticket", "Open a support ticket",
                (CommandOption("title", "Short summary", "string", True),
                 CommandOption("priority", "How urgent", "string", False,
                               ("low", "normal", "high")))),
)


class Sleeps:
    """Records the waits the pacer asks for, and waits them (the buckets run on Redis'
    clock)."""

    def __init__(self) -> None:
        self.requested: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.requested.append(seconds)
        await asyncio.sleep(seconds)


class Harness:
    def __init__(self, redis: Redis, http: aiohttp.ClientSession) -> None:
        self.redis = redis
        self.http = http
        self.prefix = f"t{uuid.uuid4().hex[:10]}"
        self._runners: list[web.AppRunner] = []

    def deps(self, commands: tuple[CommandSpec, ...] = COMMANDS, max_backlog: int = 0
             ) -> AdapterDeps:
        inbox = Inbox(self.redis, self.prefix, dedupe_ttl_s=3600, max_backlog=max_backlog)
        return AdapterDeps(inbox, self.redis, self.prefix, self.http, commands)

    async def stored(self) -> list[Message]:
        """Every message on the inbox not read yet."""
        inbox = Inbox(self.redis, self.prefix, dedupe_ttl_s=3600)
        await inbox.ensure_group()
        return [d.message for d in await inbox.read("test", 100, 1) if d.message]

    async def serve(self, routes: list[web.RouteDef]) -> str:
        """Serve `routes` on 127.0.0.1; the base URL."""
        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        keys: list[Any] = [k async for k in self.redis.scan_iter(f"{self.prefix}:*")]
        if keys:
            await self.redis.delete(*keys)


@pytest.fixture
async def harness(services: Services) -> AsyncIterator[Harness]:
    redis = Redis.from_url(services.redis_url)
    async with aiohttp.ClientSession() as http:
        h = Harness(redis, http)
        try:
            yield h
        finally:
            await h.close()
            await redis.aclose()
