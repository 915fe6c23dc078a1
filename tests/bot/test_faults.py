"""Fault tests with real processes: `bot run` plus `bot worker` processes share 1,000 messages
over 100 conversations while workers are SIGKILLed and restarted, and while Redis restarts.
Every message is answered, each conversation in order; a repeat carries the same
Idempotency-Key and happens only to a message whose send was cut off (at most one per kill,
or per message in flight when Redis went away)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from adapters.verification import sha256_signature
from bot.services import EmbeddedValkey
from tests.conftest import subprocess_env
from tests.fakes.bot_server import TEST_WEBHOOK_SECRET
from tests.fakes.openai_server import CallbackRecorder
from tests.fakes.processes import BotProcess, bot_command

CONVERSATIONS, PER_CONVERSATION = 100, 10


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[EmbeddedValkey]:
    """A Valkey only this test uses, so it can be restarted mid-run."""
    valkey = EmbeddedValkey(tmp_path / "redis")
    valkey.start()
    yield valkey
    valkey.stop()


async def send_all(url: str, stop_after: int | None = None) -> int:
    """Post every message; each conversation's messages in order (retrying 503s, as a
    platform would)."""
    sent = 0

    async def conversation(session: aiohttp.ClientSession, c: int) -> None:
        nonlocal sent
        for seq in range(PER_CONVERSATION):
            body = json.dumps({"id": f"{c}-{seq}", "user": f"u{c}", "conversation": f"c{c}",
                               "text": f"message {seq} of conversation {c}"}).encode()
            headers = {"X-Signature": sha256_signature(TEST_WEBHOOK_SECRET, body)}
            for _attempt in range(200):
                try:
                    async with session.post(url + "/webhooks/load", data=body,
                                            headers=headers) as r:
                        if r.status in (200, 202):
                            sent += 1
                            break
                        assert r.status == 503, r.status
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"message {c}-{seq} never accepted")

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*[conversation(session, c) for c in range(CONVERSATIONS)])
    return sent


def check(callback: CallbackRecorder, max_repeats: int) -> None:
    by_key: dict[str, int] = defaultdict(int)
    order: dict[str, list[int]] = defaultdict(list)
    for body, headers in callback.calls:
        reply = json.loads(body)
        key = headers["Idempotency-Key"]
        by_key[key] += 1
        if by_key[key] == 1:
            c, seq = reply["id"].split("-")
            order[c].append(int(seq))
    assert len(by_key) == CONVERSATIONS * PER_CONVERSATION  # every message answered
    extra = sum(n - 1 for n in by_key.values())
    assert extra <= max_repeats  # a repeat only where a send was cut off right after it
    assert all(seqs == list(range(PER_CONVERSATION)) for seqs in order.values())


async def test_sigkilled_workers_lose_nothing_and_keep_order(
        env_settings: dict[str, str], own_valkey: EmbeddedValkey, callback: CallbackRecorder,
        tmp_path: Path) -> None:
    env = subprocess_env(env_settings, REDIS_URL=own_valkey.url, BOT_CLAIM_IDLE_S="1",
                         BOT_MESSAGE_TIMEOUT_S="15",
                         WEBHOOK_CALLBACK_URL=callback.url)
    ingress = BotProcess(env, tmp_path / "run.log", "--workers", "2")
    workers: list[subprocess.Popen[bytes]] = []

    logs: list[Path] = []

    def start_worker() -> None:
        logs.append(tmp_path / f"worker-{len(logs)}.log")
        with logs[-1].open("wb") as sink:
            workers.append(subprocess.Popen(bot_command("worker", "--workers", "4"), env=env,
                                            stdout=sink, stderr=sink))

    try:
        await ingress.ready()
        start_worker()
        start_worker()
        sending = asyncio.create_task(send_all(ingress.url))
        kills = 0
        for _ in range(4):  # kill a worker mid-run, then bring a new one up
            await asyncio.sleep(1.5)
            victim = workers.pop(0)
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            kills += 1
            start_worker()
        assert await sending == CONVERSATIONS * PER_CONVERSATION
        await callback.wait_for(CONVERSATIONS * PER_CONVERSATION, timeout_s=240)
        await asyncio.sleep(2)
        check(callback, max_repeats=kills)
        shares = [log.read_text().count('"message processed"') for log in logs]
        assert sum(1 for n in shares if n > 0) >= 2, shares  # worker processes shared the load
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for proc in workers:
            assert proc.wait(60) == 0
        ingress.proc.send_signal(signal.SIGTERM)
        assert ingress.proc.wait(60) == 0


async def test_a_redis_restart_mid_run_loses_nothing(
        env_settings: dict[str, str], own_valkey: EmbeddedValkey, callback: CallbackRecorder,
        tmp_path: Path) -> None:
    env = subprocess_env(env_settings, REDIS_URL=own_valkey.url, BOT_CLAIM_IDLE_S="1",
                         BOT_MESSAGE_TIMEOUT_S="15",
                         WEBHOOK_CALLBACK_URL=callback.url)
    ingress = BotProcess(env, tmp_path / "run.log", "--workers", "4")
    try:
        await ingress.ready()
        sending = asyncio.create_task(send_all(ingress.url))
        await asyncio.sleep(1.5)
        await asyncio.to_thread(own_valkey.stop)  # SIGTERM: Valkey flushes its AOF
        async with aiohttp.ClientSession() as session:
            for _ in range(50):
                async with session.get(ingress.url + "/health/ready") as r:
                    if r.status == 503:
                        break
                await asyncio.sleep(0.1)
            assert r.status == 503  # not ready while Redis is down
        await asyncio.sleep(1)
        await asyncio.to_thread(own_valkey.start)
        assert await sending == CONVERSATIONS * PER_CONVERSATION
        await callback.wait_for(CONVERSATIONS * PER_CONVERSATION, timeout_s=240)
        await asyncio.sleep(2)
        check(callback, max_repeats=4)  # at most the messages in flight at the outage
        assert ingress.proc.poll() is None  # rode it out, did not crash
    finally:
        ingress.proc.send_signal(signal.SIGTERM)
        assert ingress.proc.wait(60) == 0


async def test_a_postgres_restart_mid_run_loses_nothing(
        env_settings: dict[str, str], callback: CallbackRecorder, tmp_path: Path) -> None:
    from bot.services import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_path / "pg")
    database_url = await asyncio.to_thread(pg.start)
    env = subprocess_env(env_settings, DATABASE_URL=database_url, BOT_CLAIM_IDLE_S="1",
                         WEBHOOK_CALLBACK_URL=callback.url)
    bot = BotProcess(env, tmp_path / "run.log", "--workers", "4")
    try:
        await bot.ready()
        await asyncio.to_thread(pg.stop)
        async with aiohttp.ClientSession() as session:
            async with session.get(bot.url + "/health/ready") as r:
                assert r.status == 503 and (await r.json())["checks"]["redis"] == "ok"
            for i in range(20):  # Redis is up: messages are still accepted and kept
                body = json.dumps({"id": f"pg-{i}", "user": "u", "conversation": f"c{i % 4}",
                                   "text": f"message {i}"}).encode()
                async with session.post(bot.url + "/webhooks/load", data=body, headers={
                        "X-Signature": sha256_signature(TEST_WEBHOOK_SECRET, body)}) as r:
                    assert r.status == 202
        await asyncio.sleep(3)  # workers fail, back off, retry; nothing may be dead-lettered
        assert callback.calls == []
        database_url = await asyncio.to_thread(pg.start)
        await callback.wait_for(20, timeout_s=120)
        ids = sorted(json.loads(body)["id"] for body, _ in callback.calls)
        assert ids == sorted(f"pg-{i}" for i in range(20))
        assert bot.proc.poll() is None
    finally:
        bot.proc.send_signal(signal.SIGTERM)
        bot.proc.wait(60)
        await asyncio.to_thread(pg.stop)
