"""The webhook's inbound rate limit, as the running server applies it (docs/rate-limits.md):
past its author's burst a message is refused with 429 and Retry-After before it is stored, a
repeat of a message already let in is never refused, and other authors are not affected."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import aiohttp

from adapters.verification import sha256_signature
from bot.messages import Conversation, Message
from bot.pipeline import Context
from bot.ratelimit_inbound import InboundRateLimit
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


async def test_a_message_let_in_is_marked_so_the_pipeline_does_not_ask_again(
        server_factory: Callable[..., Any]) -> None:
    """The ingress took the tokens: the stored message says so (`rate_checked`), and the
    pipeline's rate-limit stage lets it through without a Redis round trip."""
    srv = await server_factory(workers=0, bot_rate_user_per_min=6, bot_rate_user_burst=1,
                               bot_rate_conversation_per_min=0)
    assert (await _post(srv.url, envelope(id="m1", user="once")))[0] == 202
    entries = await srv.rt.redis.xrange(srv.rt.inbox.stream)
    message = Message.from_json(entries[0][1][b"m"])
    assert message.rate_checked
    # the user's only token is gone: asked again, the limiter would refuse this message
    assert await srv.rt.inbound_limiter.check_inbound(replace(message, id="webhook:x:other"))
    ctx = Context(message)
    calls_before = await _script_calls(srv.rt.redis)
    await InboundRateLimit(srv.rt.inbound_limiter, {})(ctx)
    assert not ctx.done
    assert await _script_calls(srv.rt.redis) == calls_before


async def _script_calls(redis: Any) -> int:
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_eval"))


def test_a_message_field_from_a_newer_version_is_ignored() -> None:
    raw = Message(id="webhook:s:1", conversation=Conversation("webhook", "c", "s"), user="u",
                  text="hi").to_json()
    newer = Message.from_json(raw.replace('"text":"hi"', '"text":"hi","priority":3'))
    assert newer.text == "hi" and not newer.rate_checked
