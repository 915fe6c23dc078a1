"""`bot worker`'s own health and metrics server, and start-up with BOT_MIGRATE_ON_START=false
(the deployment runs `bot migrate` as a separate step): real processes and services."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.config import Settings
from bot.errors import ServiceUnavailable
from bot.http import Health, build_app
from bot.runtime import Runtime
from tests.conftest import subprocess_env
from tests.fakes.bot_server import envelope
from tests.fakes.openai_server import CallbackRecorder, FakeOpenAI
from tests.fakes.processes import (
    BotProcess,
    bot_command,
    free_port,
    ingress_and_worker,
    wait_ready,
)


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return r.status, await r.text()


async def test_bot_worker_serves_health_and_metrics_but_no_webhooks(
        env_settings: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = subprocess_env(env_settings, BOT_METRICS_PORT=str(port))
    log = tmp_path / "worker.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(bot_command("worker", "--workers", "1"), env=env,
                                stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    try:
        body = await wait_ready(url, proc, log)
        assert '"migrations": "ok"' in body
        assert (await _get(url + "/health/live"))[0] == 200
        status, metrics = await _get(url + "/metrics")
        assert status == 200 and "inbox_backlog" in metrics
        async with aiohttp.ClientSession() as session, session.post(
                url + "/webhooks/support", data=b"{}") as r:
            assert r.status == 404  # ingress is `bot run`'s job
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 30) == 0


async def test_no_migration_at_start_refuses_an_unmigrated_database_until_bot_migrate(
        make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(bot_migrate_on_start=False)
    with pytest.raises(ServiceUnavailable, match="bot migrate"):
        async with Runtime(settings):
            pass
    async with Runtime(settings, migrate=True) as rt:  # what `bot migrate` does
        groups = await rt.redis.xinfo_groups(rt.inbox.stream)
        assert [g["name"] for g in groups] == [b"engine"]  # and the inbox's consumer group
    async with Runtime(settings) as rt:  # now it starts, and migrates nothing
        async with rt.pool.acquire() as conn:
            assert await Runtime.pending_migrations(conn) == []


class _DownPool:
    """A Postgres pool whose server is gone: every borrow fails as asyncpg's would."""

    def acquire(self, timeout: float | None = None) -> Any:
        raise ConnectionRefusedError("database down (test)")


@pytest.mark.parametrize("needs_postgres", [True, False])
async def test_readiness_of_an_ingress_only_process_leaves_postgres_out(
        runtime: Runtime, needs_postgres: bool) -> None:
    """`bot run --workers 0` only stores messages in Redis: a database outage must not take
    its webhooks out of the load balancer; a process with workers is not ready without it."""
    app = build_app([], Health(cast(asyncpg.Pool, _DownPool()), runtime.redis,
                               needs_postgres=needs_postgres), max_body_bytes=1024)
    client: TestClient[Any, Any]
    async with TestServer(app) as server, TestClient(server) as client:
        response = await client.get("/health/ready")
        body = await response.json()
    if needs_postgres:
        assert response.status == 503
        assert body["checks"]["postgres"] == "unavailable: ConnectionRefusedError"
    else:
        assert (response.status, body["checks"]) == (200, {"redis": "ok"})


async def test_a_taken_port_is_one_line_and_exit_2(env_settings: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await asyncio.to_thread(
            subprocess.run, bot_command("worker", "--port", str(port)),
            env=subprocess_env(env_settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]  # (after the start-up log lines)
    assert line.startswith(f"error: BOT_METRICS_PORT: cannot listen on 127.0.0.1:{port} ")
    assert line.endswith("address already in use)")
    assert "Traceback" not in done.stdout + done.stderr


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _count(samples: Samples, name: str, **labels: str) -> float:
    """The observations of histogram `name` over the series with `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n == f"{name}_count" and labels.items() <= dict(ls).items())


async def test_a_worker_process_exports_latency_histograms_after_traffic(
        env_settings: dict[str, str], fake_llm: FakeOpenAI, callback: CallbackRecorder,
        processes: list[BotProcess], tmp_path: Path) -> None:
    """A webhook message taken in by a `bot run --workers 0` process and answered by a
    separate `bot worker`: the worker's /metrics holds the end-to-end, queue-wait, per-stage,
    model-latency and token histograms, and the inbox gauges."""
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    env = subprocess_env(env_settings, LLM_BASE_URL=fake_llm.base_url, OPENAI_API_KEY="sk-x",
                         WEBHOOK_CALLBACK_URL=callback.url, BOT_METRICS_PORT=str(port))
    ingress, worker = await ingress_and_worker(env, tmp_path, processes)
    try:
        for i in range(3):
            assert await ingress.post(envelope(id=f"m-{i}", text=f"What is plan {i}?")) == 202
        await callback.wait_for(3, timeout_s=90)
        # a message's latency is observed once it is acknowledged, just after its callback
        samples: Samples = {}
        for _ in range(100):
            status, text = await _get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for family in text_string_to_metric_families(text)
                       for s in family.samples}
            if _count(samples, "switchboard_message_latency_seconds", platform="webhook") >= 3:
                break
            await asyncio.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 30) == 0

    assert _count(samples, "switchboard_message_latency_seconds", platform="webhook") == 3
    assert _count(samples, "switchboard_queue_wait_seconds", platform="webhook") == 3
    assert _count(samples, "switchboard_stage_latency_seconds", stage="Generate") == 3
    assert _count(samples, "switchboard_stage_latency_seconds", stage="SendReply") == 3
    assert _count(samples, "switchboard_llm_request_seconds", provider="default") == 3
    assert _count(samples, "switchboard_llm_token_usage", type="input") == 3
    assert _count(samples, "switchboard_llm_token_usage", type="output") == 3
    assert ("switchboard_inbox_pending", ()) in samples
    assert ("switchboard_inbox_lag", ()) in samples
