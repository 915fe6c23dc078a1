"""A message accepted by the inbox survives the death of the process handling it: real `bot run`
processes, SIGKILL between XADD and XACK, restart, exactly one answer."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

from tests.conftest import subprocess_env
from tests.fakes.bot_server import TEST_WEBHOOK_SECRET, envelope
from tests.fakes.openai_server import CallbackRecorder, FakeOpenAI
from tests.fakes.processes import BotProcess, bot_command


async def test_sigkill_between_xadd_and_xack_loses_nothing(
        env_settings: dict[str, str], fake_llm: FakeOpenAI, callback: CallbackRecorder,
        processes: list[BotProcess], tmp_path: Path) -> None:
    env = subprocess_env(env_settings, LLM_BASE_URL=fake_llm.base_url,
                         WEBHOOK_CALLBACK_URL=callback.url, BOT_CLAIM_IDLE_S="1",
                         OPENAI_API_KEY="sk-crash-test-secret", BOT_LOG_LEVEL="DEBUG")
    fake_llm.delay_s = 120  # the first worker hangs inside generation
    first = BotProcess(env, tmp_path / "bot.log", "--workers", "1")
    processes.append(first)
    await first.ready()
    assert await first.post(envelope(id="crash-1", text="How do I rotate my API key?")) == 202
    await asyncio.wait_for(fake_llm.received.wait(), 60)  # read from the inbox, not acked
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    assert callback.calls == []

    fake_llm.delay_s = 0
    second = BotProcess(env, tmp_path / "bot.log", "--workers", "1")
    processes.append(second)
    await second.ready()
    await callback.wait_for(1, timeout_s=60)
    await asyncio.sleep(2)  # a second answer would arrive within this time
    assert len(callback.calls) == 1
    reply = json.loads(callback.calls[0][0])
    assert reply["id"] == "crash-1"
    assert reply["answer"] == "ANSWER to: How do I rotate my API key? [1]"

    second.proc.send_signal(signal.SIGTERM)  # graceful: exits 0
    assert second.proc.wait(30) == 0
    logs = (tmp_path / "bot.log").read_text()
    assert "message processed" in logs and "crash-1" in logs
    for secret in ("sk-crash-test-secret", TEST_WEBHOOK_SECRET):
        assert secret not in logs


async def test_ingress_only_process_then_worker_process(
        env_settings: dict[str, str], callback: CallbackRecorder,
        processes: list[BotProcess], tmp_path: Path) -> None:
    env = subprocess_env(env_settings, WEBHOOK_CALLBACK_URL=callback.url)
    ingress = BotProcess(env, tmp_path / "bot.log", "--workers", "0")
    processes.append(ingress)
    await ingress.ready()
    for i in range(3):
        assert await ingress.post(envelope(id=f"q-{i}", text=f"question {i}")) == 202
    await asyncio.sleep(1)
    assert callback.calls == []  # nobody works in the ingress process
    ingress.proc.send_signal(signal.SIGKILL)
    ingress.proc.wait(10)

    worker = subprocess.Popen(bot_command("worker", "--workers", "2"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await callback.wait_for(3, timeout_s=60)
        assert sorted(json.loads(body)["id"] for body, _ in callback.calls) == [
            "q-0", "q-1", "q-2"]
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0


async def test_sigterm_finishes_the_message_in_hand_and_exits_0(
        env_settings: dict[str, str], fake_llm: FakeOpenAI, callback: CallbackRecorder,
        processes: list[BotProcess], tmp_path: Path) -> None:
    env = subprocess_env(env_settings, LLM_BASE_URL=fake_llm.base_url,
                         WEBHOOK_CALLBACK_URL=callback.url, BOT_SHUTDOWN_GRACE_S="20")
    fake_llm.delay_s = 2  # the model is still thinking when SIGTERM arrives
    bot = BotProcess(env, tmp_path / "bot.log", "--workers", "1")
    processes.append(bot)
    await bot.ready()
    assert await bot.post(envelope(id="in-flight", text="What does the Pro plan include?")) == 202
    await asyncio.wait_for(fake_llm.received.wait(), 30)
    bot.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(bot.proc.wait, 30) == 0
    assert len(callback.calls) == 1  # answered before exiting, not dropped
    assert json.loads(callback.calls[0][0])["id"] == "in-flight"
