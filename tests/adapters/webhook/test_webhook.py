"""The generic webhook adapter over real HTTP on loopback: signatures, bad input, duplicates,
`?wait=true`, and signed callbacks. The engine runs with real Postgres and Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from adapters.verification import sha256_signature, verify_sha256_signature
from bot.runtime import Runtime
from tests.fakes.bot_server import TEST_WEBHOOK_SECRET, envelope
from tests.fakes.openai_server import CallbackRecorder, FakeOpenAI


async def _transcript_count(rt: Runtime, message_id: str) -> int:
    return int(await rt.pool.fetchval(
        "SELECT count(*) FROM messages WHERE message_id = $1", message_id))


async def test_wait_true_returns_the_answer(server_factory: Callable[..., Any],
                                            fake_llm: FakeOpenAI) -> None:
    srv = await server_factory(llm_base_url=fake_llm.base_url)
    async with aiohttp.ClientSession() as session:
        raw = envelope()
        async with session.post(srv.url + "/webhooks/support?wait=true", data=raw,
                                headers={"X-Signature": sha256_signature(
                                    TEST_WEBHOOK_SECRET, raw)}) as response:
            status, body = response.status, await response.json()
    assert status == 200
    assert body["id"] == "m1" and body["conversation"] == "c1"
    assert body["answer"] == "ANSWER to: What is zlib's CHUNK? [1]"
    assert isinstance(body["sources"], list)
    assert len(fake_llm.requests) == 1
    rows = await srv.rt.pool.fetch(
        "SELECT direction, user_id, text, model, tokens_in, tokens_out, latency_ms, sources "
        "FROM messages WHERE message_id = 'webhook:support:m1' ORDER BY direction")
    inbound, outbound = rows
    assert (inbound["direction"], inbound["user_id"], inbound["text"]) == (
        "in", "u1", "What is zlib's CHUNK?")
    assert outbound["direction"] == "out" and outbound["text"] == body["answer"]
    assert (outbound["model"], outbound["tokens_in"], outbound["tokens_out"]) == (
        "gpt-4o-mini", 11, 7)
    assert outbound["latency_ms"] >= 0 and json.loads(outbound["sources"]) == []


async def test_accepted_then_signed_callback(server_factory: Callable[..., Any],
                                             callback: CallbackRecorder) -> None:
    srv = await server_factory(webhook_callback_url=callback.url)
    status, body = await srv.post(envelope(id="cb-1", text="hello there"))
    assert status == 202 and body == {"id": "cb-1", "status": "accepted"}
    await callback.wait_for(1)
    raw, headers = callback.calls[0]
    assert verify_sha256_signature(TEST_WEBHOOK_SECRET, raw, headers.get("X-Signature"))
    assert headers["Idempotency-Key"] == "webhook:support:cb-1"
    reply = json.loads(raw)
    assert reply["id"] == "cb-1" and reply["conversation"] == "c1"
    assert "No language model is configured" in reply["answer"] or "nothing" in reply["answer"]


@pytest.mark.parametrize(("body", "sign", "headers", "status", "error"), [
    (envelope(), None, {}, 401, "invalid signature"),
    (envelope(), "wrong-secret", {}, 401, "invalid signature"),
    (envelope(), TEST_WEBHOOK_SECRET, {"X-Signature": "sha256=00"}, 401, "invalid signature"),
    (b"{not json", TEST_WEBHOOK_SECRET, {}, 400, "not valid JSON"),
    (b"\xff\xfe\x00", TEST_WEBHOOK_SECRET, {}, 400, "not valid JSON"),
    (b"[1, 2]", TEST_WEBHOOK_SECRET, {}, 400, "JSON object"),
    (json.dumps({"id": "x", "user": "u", "conversation": "c"}).encode(), TEST_WEBHOOK_SECRET, {},
     400, "text"),
    (json.dumps({"id": 5, "user": "u", "conversation": "c", "text": "t"}).encode(),
     TEST_WEBHOOK_SECRET, {}, 400, "id"),
    (envelope(text=""), TEST_WEBHOOK_SECRET, {}, 400, "text"),
    (json.dumps({"id": "x", "user": "u", "conversation": "c", "button": "a b"}).encode(),
     TEST_WEBHOOK_SECRET, {}, 400, "button"),
    (json.dumps({"id": "x", "user": "u", "conversation": "c", "button": 7}).encode(),
     TEST_WEBHOOK_SECRET, {}, 400, "button"),
])
async def test_bad_requests_get_clear_errors(server_factory: Callable[..., Any], body: bytes,
                                             sign: str | None, headers: dict[str, str],
                                             status: int, error: str) -> None:
    srv = await server_factory(workers=0)
    got_status, got = await srv.post(body, sign=sign, headers=headers)
    assert got_status == status
    assert error in got["error"]
    assert await srv.rt.inbox.backlog() == 0  # nothing was enqueued


async def test_oversize_body_is_413_and_unknown_name_404(server_factory: Callable[..., Any]
                                                         ) -> None:
    srv = await server_factory(workers=0, bot_max_body_bytes=2048)
    big = envelope(text="x" * 4000)
    status, body = await srv.post(big)
    assert status == 413 and body == {"error": "request body too large"}
    status, _ = await srv.post(envelope(), path="/webhooks/bad%20name!")
    assert status == 404
    assert await srv.rt.inbox.backlog() == 0


async def test_duplicate_id_is_processed_once(server_factory: Callable[..., Any],
                                              fake_llm: FakeOpenAI,
                                              callback: CallbackRecorder) -> None:
    srv = await server_factory(workers=0, llm_base_url=fake_llm.base_url,
                               webhook_callback_url=callback.url)
    first = await srv.post(envelope(id="dup"))
    second = await srv.post(envelope(id="dup"))
    assert first == (202, {"id": "dup", "status": "accepted"})
    assert second == (202, {"id": "dup", "status": "duplicate"})  # not answered yet
    srv.rt.start_workers(1)
    await callback.wait_for(1)
    await asyncio.sleep(0.5)  # give a wrongly enqueued duplicate time to be answered
    assert len(callback.calls) == 1
    assert len(fake_llm.requests) == 1
    assert await _transcript_count(srv.rt, "webhook:support:dup") == 2  # one in, one out
    # once answered, a repeat gets the answer itself
    status, body = await srv.post(envelope(id="dup"))
    assert status == 200 and body == json.loads(callback.calls[0][0])
    # the same id on another webhook name is another message
    assert (await srv.post(envelope(id="dup"), path="/webhooks/other"))[0] == 202


async def test_health_endpoints(server_factory: Callable[..., Any]) -> None:
    srv = await server_factory(workers=0)
    async with aiohttp.ClientSession() as session:
        async with session.get(srv.url + "/health/live") as r:
            assert r.status == 200 and (await r.json()) == {"live": True}
        async with session.get(srv.url + "/health/ready") as r:
            body = await r.json()
            assert r.status == 200
            assert body == {"ready": True, "checks": {"postgres": "ok", "migrations": "ok",
                                                      "redis": "ok"}}


async def test_a_waiting_duplicate_does_not_steal_the_reply(server_factory: Callable[..., Any],
                                                           callback: CallbackRecorder) -> None:
    srv = await server_factory(workers=0, webhook_callback_url=callback.url,
                               webhook_wait_timeout_s=1)
    assert (await srv.post(envelope(id="orig")))[0] == 202
    status, body = await srv.post(envelope(id="orig"), path="/webhooks/support?wait=true")
    assert (status, body) == (202, {"id": "orig", "status": "duplicate"})
    assert not await srv.rt.redis.exists(srv.rt.rendezvous.marker_key("webhook:support:orig"))
    srv.rt.start_workers(1)
    await callback.wait_for(1)
    assert json.loads(callback.calls[0][0])["id"] == "orig"


@pytest.mark.parametrize(("body", "error"), [
    (envelope(text="a\u0000b"), "text: Value error, must not contain NUL characters"),
    (b"[" * 100_000 + b"]" * 100_000, "body is not valid JSON"),
])
async def test_hostile_bodies_are_400(server_factory: Callable[..., Any], body: bytes,
                                      error: str) -> None:
    srv = await server_factory(workers=0, bot_max_body_bytes=1_000_000)
    status, got = await srv.post(body)
    assert (status, got) == (400, {"error": error})


async def test_a_non_ascii_signature_is_401(server_factory: Callable[..., Any]) -> None:
    srv = await server_factory(workers=0)
    reader, writer = await asyncio.open_connection("127.0.0.1", int(srv.url.rsplit(":", 1)[1]))
    body = envelope()
    writer.write(b"POST /webhooks/support HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nX-Signature: sha256=\xc3\xa9\xff\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    await writer.drain()
    response = await reader.read()
    writer.close()
    assert response.startswith(b"HTTP/1.1 401"), response[:200]
    assert b"invalid signature" in response


async def test_a_full_backlog_answers_503_with_retry_after(server_factory: Callable[..., Any]
                                                           ) -> None:
    srv = await server_factory(workers=0, bot_max_backlog=2)
    assert (await srv.post(envelope(id="b1")))[0] == 202
    assert (await srv.post(envelope(id="b2")))[0] == 202
    async with aiohttp.ClientSession() as session:
        raw = envelope(id="b3")
        async with session.post(srv.url + "/webhooks/support", data=raw, headers={
                "X-Signature": sha256_signature(TEST_WEBHOOK_SECRET, raw)}) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "5"
    assert await srv.rt.inbox.backlog() == 2
    srv.rt.start_workers(1)  # the backlog drains, and the refused message can come back
    for _ in range(100):
        if await srv.rt.inbox.backlog() == 0:
            break
        await asyncio.sleep(0.1)
    assert (await srv.post(envelope(id="b3")))[0] == 202


async def test_metrics_count_processed_messages_and_the_backlog(
        server_factory: Callable[..., Any], callback: CallbackRecorder) -> None:
    import re

    srv = await server_factory(workers=0, webhook_callback_url=callback.url)

    async def metric(name: str) -> float:
        async with aiohttp.ClientSession() as session, session.get(srv.url + "/metrics") as r:
            assert r.status == 200 and r.content_type == "text/plain"
            text = await r.text()
        found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    processed = 'switchboard_messages_processed_total{platform="webhook"}'
    before = await metric(processed)
    for i in range(3):
        assert (await srv.post(envelope(id=f"metrics-{i}")))[0] == 202
    assert await metric("switchboard_inbox_backlog") == 3
    srv.rt.start_workers(1)
    await callback.wait_for(3)
    await asyncio.sleep(0.2)
    assert await metric(processed) == before + 3
    assert await metric("switchboard_inbox_backlog") == 0
