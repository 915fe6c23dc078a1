"""Run the bot's real HTTP app and workers in-process on 127.0.0.1 for tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.verification import sha256_signature
from bot.config import Settings
from bot.httpguard import GuardedRunner
from bot.runtime import Runtime
from bot.server import server_app

TEST_WEBHOOK_SECRET = "test-webhook-secret-0123456789"


class Server:
    def __init__(self, rt: Runtime, url: str) -> None:
        self.rt = rt
        self.url = url

    async def post(self, body: bytes, *, sign: str | None = TEST_WEBHOOK_SECRET,
                   path: str = "/webhooks/support", headers: dict[str, str] | None = None,
                   ) -> tuple[int, Any]:
        hdrs = {"Content-Type": "application/json"}
        if sign is not None:
            hdrs["X-Signature"] = sha256_signature(sign, body)
        hdrs.update(headers or {})
        async with aiohttp.ClientSession() as session, session.post(
                self.url + path, data=body, headers=hdrs) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text else None)


def envelope(**fields: str) -> bytes:
    base = {"id": "m1", "user": "u1", "conversation": "c1", "text": "What is zlib's CHUNK?"}
    return json.dumps({**base, **fields}).encode()


@pytest.fixture
async def server_factory(make_settings: Callable[..., Settings]
                         ) -> AsyncIterator[Callable[..., Any]]:
    """`await server_factory(workers=1, **settings)` starts the app; all stop at teardown."""
    stack: list[tuple[Runtime, web.AppRunner]] = []

    async def start(workers: int = 1, **overrides: object) -> Server:
        rt = await Runtime(make_settings(**overrides)).__aenter__()
        runner = GuardedRunner(server_app(rt), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        stack.append((rt, runner))
        await rt.start_platforms()
        rt.start_workers(workers)
        return Server(rt, f"http://127.0.0.1:{port}")

    yield start
    for rt, runner in reversed(stack):
        await runner.cleanup()
        await rt.__aexit__(None, None, None)
