"""When no provider answers, the user gets an apology with a trace id, and the transcript and
the logs carry the same id; the apology is not remembered."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp

from adapters.verification import sha256_signature
from tests.fakes.bot_server import TEST_WEBHOOK_SECRET, envelope
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.processes import free_port


async def test_every_provider_down_gives_an_apology_recorded_in_the_transcript(
        server_factory: Callable[..., Any], fake_llm: FakeOpenAI) -> None:
    fake_llm.fail_next(503, count=10)
    providers = json.dumps([
        {"name": "flaky", "base_url": fake_llm.base_url, "model": "m1", "priority": 1},
        {"name": "gone", "base_url": f"http://127.0.0.1:{free_port()}/v1", "model": "m2",
         "priority": 2}])
    srv = await server_factory(llm_providers=providers, llm_retries=1,
                               llm_backoff_initial_s=0.01, llm_backoff_max_s=0.02,
                               retrieval_top_k=0)
    raw = envelope(id="o1", text="How do I reset my password?")
    async with aiohttp.ClientSession() as session, session.post(
            srv.url + "/webhooks/support?wait=true", data=raw,
            headers={"X-Signature": sha256_signature(TEST_WEBHOOK_SECRET, raw)}) as response:
        assert response.status == 200
        answer = (await response.json())["answer"]
    assert answer.startswith("Sorry, I can't reach a language model")
    assert fake_llm.failed == 2  # one attempt and one retry on the first provider
    row = await srv.rt.pool.fetchrow(
        "SELECT text, error, trace_id, model FROM messages "
        "WHERE message_id = 'webhook:support:o1' AND direction = 'out'")
    assert row["trace_id"] and f"trace id: {row['trace_id']}" in row["text"]
    assert "flaky: HTTP 503" in row["error"] and "gone: connection failed" in row["error"]
    assert row["model"] == "none"
    assert await srv.rt.memory.load("webhook:support:c1:-") == []
