"""The webhook's inbound rate limit, as the running server applies it (docs/rate-limits.md):
past its author's burst a message is refused with 429 and Retry-After before it is stored, a
repeat of a message already let in is never refused, and other authors are not affected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from adapters.verification import sha256_signature
from tests.fakes.bot_server import TEST_WEBHOOK_SECRET, envelope


async def _post(url: str, raw: bytes) -> tuple[int, Any, str | None]:
    async with aiohttp.ClientSession() as session, session.post(
            url + "/webhooks/support", data=raw,
            headers={"X-Signature": sha256_signature(TEST_WEBHOOK_SECRET, raw)}) as response:
        return response.status, await response.json(), response.headers.get("Retry-After")


async def test_past_the_burst_the_webhook_answers_429_with_retry_after(
        server_factory: Callable[..., Any]) -> None:
    srv = await server_factory(workers=0, bot_rate_user_per_min=6, bot_rate_user_burst=2,
                               bot_rate_conversation_per_min=0)
    first = await _post(srv.url, envelope(id="r1", user="flood"))
    second = await _post(srv.url, envelope(id="r2", user="flood"))
    assert (first[0], second[0]) == (202, 202)
    status, body, retry_after = await _post(srv.url, envelope(id="r3", user="flood"))
    assert (status, body) == (429, {"error": "too many messages; slow down"})
    # 6 a minute: the next token is about 10 s away
    assert retry_after is not None and 1 <= int(retry_after) <= 10
    repeat = await _post(srv.url, envelope(id="r1", user="flood"))
    assert repeat[:2] == (202, {"id": "r1", "status": "duplicate"})
    assert (await _post(srv.url, envelope(id="r4", user="calm")))[0] == 202
    # the refused message was never stored: only r1, r2 and r4 are in the inbox
    assert await srv.rt.redis.xlen(srv.rt.inbox.stream) == 3
