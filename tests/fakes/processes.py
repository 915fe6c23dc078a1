"""Real `bot run` processes for tests, with their output in a log file."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from adapters.verification import sha256_signature
from tests.fakes.bot_server import TEST_WEBHOOK_SECRET


def bot_command(*args: str, python: str | Path = sys.executable) -> list[str]:
    """argv that runs the `bot` CLI with `python` (default: this interpreter)."""
    return [str(python), "-m", "bot", *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-5000:]


async def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path,
                     timeout_s: float = 60) -> str:
    """Poll `url`/health/ready until it answers 200 (its body is returned); fails the test
    when `proc` exits first (with the end of `log`) or after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with aiohttp.ClientSession() as session:
        while True:
            assert proc.poll() is None, _tail(log)
            try:
                async with session.get(url + "/health/ready") as r:
                    if r.status == 200:
                        return await r.text()
            except aiohttp.ClientError:
                pass
            assert asyncio.get_running_loop().time() < deadline, f"{url} never got ready"
            await asyncio.sleep(0.2)


class BotProcess:
    """`bot run` on a free loopback port, output appended to `log`; `python` and `cwd` run it
    from another environment (a venv with a plugin installed)."""

    def __init__(self, env: dict[str, str], log: Path, *args: str,
                 python: str | Path = sys.executable, cwd: Path | None = None) -> None:
        self.port = free_port()
        self.log = log
        with log.open("ab") as sink:
            self.proc = subprocess.Popen(
                bot_command("run", "--host", "127.0.0.1", "--port", str(self.port), *args,
                            python=python),
                env=env, cwd=cwd, stdout=sink, stderr=sink)
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self, timeout_s: float = 60) -> None:
        await wait_ready(self.url, self.proc, self.log, timeout_s)

    async def post(self, body: bytes) -> int:
        async with aiohttp.ClientSession() as session, session.post(
                self.url + "/webhooks/support", data=body,
                headers={"X-Signature": sha256_signature(TEST_WEBHOOK_SECRET, body)}) as r:
            return r.status

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


async def ingress_and_worker(env: dict[str, str], logs: Path, processes: list[BotProcess]
                             ) -> tuple[BotProcess, subprocess.Popen[bytes]]:
    """A ready `bot run --workers 0` (registered in `processes`) and a `bot worker --workers
    1` process beside it, their output in `logs`/ingress.log and worker.log. The caller stops
    the worker."""
    ingress = BotProcess(env, logs / "ingress.log", "--workers", "0")
    processes.append(ingress)
    await ingress.ready()
    with (logs / "worker.log").open("ab") as sink:
        worker = subprocess.Popen(bot_command("worker", "--workers", "1"), env=env,
                                  stdout=sink, stderr=sink)
    return ingress, worker


@pytest.fixture
def processes() -> Iterator[list[BotProcess]]:
    """`BotProcess`es a test starts; killed at teardown if still running."""
    started: list[BotProcess] = []
    yield started
    for p in started:
        p.stop()
