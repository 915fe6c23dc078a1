"""`bot worker`'s own health and metrics server, and start-up with BOT_MIGRATE_ON_START=false
(the deployment runs `bot migrate` as a separate step): real processes and services."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from bot.config import Settings
from bot.errors import ServiceUnavailable
from bot.runtime import Runtime
from tests.conftest import subprocess_env
from tests.fakes.processes import bot_command, free_port


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return r.status, await r.text()


async def test_bot_worker_serves_health_and_metrics_but_no_webhooks(
        env_settings: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = subprocess_env(env_settings, BOT_WORKER_HTTP_PORT=str(port))
    log = tmp_path / "worker.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(bot_command("worker", "--workers", "1"), env=env,
                                stdout=sink, stderr=sink)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                status, body = await _get(url + "/health/ready")
                if status == 200:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        else:
            pytest.fail("bot worker never got ready")
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
