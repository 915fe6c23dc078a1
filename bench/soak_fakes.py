"""The outside world of the soak test (bench/soak.py): a fake LLM whose answer delay is chosen
per message, a callback endpoint (the "platform API") that can be made to fail with 503 for a
while, the `bot run` process, and the RSS of every process involved."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from adapters.verification import verify_sha256_signature
from tests.fakes.openai_server import CallbackRecorder, FakeOpenAI

#: Put in a message's text; the fake LLM answers that message after `delay_ms` and names `id`
#: in its answer.
MARKER = re.compile(r"\[soak id=([A-Za-z0-9_-]+) delay_ms=(\d+)\]")


def marker(message_id: str, delay_ms: int) -> str:
    return f"[soak id={message_id} delay_ms={delay_ms}]"


def _question(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages", [])):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            return str(m["content"])
    return ""


class SoakLLM(FakeOpenAI):
    """FakeOpenAI whose delay is chosen per request by the `MARKER` in the question (the last
    user message), and whose answer is `ANSWER <id> r<n>`, n counting the model calls for that
    message: an answer generated twice differs in content.

    `calls[id]` holds the time.monotonic() of every chat request for message `id` (its
    processing start; a message processed again after a crash has several)."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = self._answer
        self.calls: dict[str, list[float]] = defaultdict(list)
        self.unmarked = 0

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()  # aiohttp keeps the body: the parent reads it again
        found = MARKER.search(_question(body))
        if found is None:
            self.unmarked += 1
        else:
            self.calls[found[1]].append(time.monotonic())
            delay_s = int(found[2]) / 1000
            if delay_s > 0:
                try:  # stop() releases waiting requests, as the parent's delay does
                    await asyncio.wait_for(self._released.wait(), delay_s)
                except TimeoutError:
                    pass
        return await super()._chat(request)

    def _answer(self, body: dict[str, Any]) -> str:
        found = MARKER.search(_question(body))
        if found is None:
            return "ANSWER (no marker)"
        return f"ANSWER {found[1]} r{len(self.calls[found[1]])}"


@dataclass(frozen=True)
class CallbackCall:
    """One POST to the callback endpoint."""

    at: float  # time.monotonic()
    key: str  # Idempotency-Key
    body: dict[str, Any]
    status: int  # what the endpoint answered
    signed: bool  # X-Signature verified


class FlakyCallbacks(CallbackRecorder):
    """A CallbackRecorder that answers 503 during `outage` (a time.monotonic() window) and 200
    otherwise. `log` keeps every call; `calls`/`arrival_s` (the parent's) only the accepted
    ones; `on_answer(call)` is called for each accepted one."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.outage: tuple[float, float] | None = None
        self.log: list[CallbackCall] = []
        self.on_answer: Callable[[CallbackCall], None] | None = None

    def failing(self, now: float) -> bool:
        return self.outage is not None and self.outage[0] <= now < self.outage[1]

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        now = time.monotonic()
        status = 503 if self.failing(now) else 200
        try:
            body: dict[str, Any] = json.loads(raw)
        except ValueError:
            body = {}
        call = CallbackCall(now, request.headers.get("Idempotency-Key", ""), body, status,
                            verify_sha256_signature(self.secret, raw,
                                                    request.headers.get("X-Signature")))
        self.log.append(call)
        if status == 200:
            async with self.arrived:
                self.arrival_s.append(time.perf_counter())
                self.calls.append((raw, dict(request.headers)))
                self.arrived.notify_all()
            if self.on_answer is not None:
                self.on_answer(call)
        return web.Response(status=status)


class BotRun:
    """`bot run` as a subprocess on a fixed loopback port, output appended to `log`."""

    def __init__(self, env: dict[str, str], log: Path, port: int, workers: int) -> None:
        self.env = env
        self.log = log
        self.port = port
        self.workers = workers
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "run", "--host", "127.0.0.1", "--port",
                 str(self.port), "--workers", str(self.workers)],
                env=self.env, stdout=sink, stderr=sink)
        self.pids.append(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL: no shutdown at all (the inbox and the embedded servers stay)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def stop(self, timeout_s: float = 90) -> int | None:
        """SIGTERM and wait (SIGKILL past `timeout_s`); the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode


def service_processes(data_dir: Path) -> dict[str, list[psutil.Process]]:
    """The embedded Valkey and Postgres (postmaster and its children) under `data_dir`."""
    found: dict[str, list[psutil.Process]] = {}
    try:
        found["valkey"] = [psutil.Process(int((data_dir / "valkey" / "valkey.pid")
                                              .read_text().strip()))]
    except (OSError, ValueError, psutil.Error):
        pass
    try:
        pid = int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])
        postmaster = psutil.Process(pid)
        found["postgres"] = [postmaster, *postmaster.children(recursive=True)]
    except (OSError, ValueError, IndexError, psutil.Error):
        pass
    return found


def rss_mib(processes: list[psutil.Process]) -> float | None:
    """Summed resident set size in MiB (shared pages count once per process); None if none
    of them is alive."""
    total, alive = 0, False
    for p in processes:
        try:
            total += p.memory_info().rss
            alive = True
        except psutil.Error:
            pass
    return total / 2**20 if alive else None


def stop_leftover_services(data_dir: Path) -> list[str]:
    """Terminate embedded servers of `data_dir` still running (the bench started them through
    `bot run`); names of those that had to be stopped."""
    stopped = []
    for name, procs in service_processes(data_dir).items():
        try:
            procs[0].terminate()
            procs[0].wait(60)
            stopped.append(name)
        except psutil.Error:
            pass
    return stopped


def log_summary(log: Path, limit: int = 12) -> list[tuple[int, str]]:
    """The most frequent (level >= warning) events of a JSON-lines bot log, most first."""
    counts: dict[str, int] = defaultdict(int)
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            if line.strip() and "Traceback" in line:
                counts["(traceback on stderr)"] += 1
            continue
        if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
            counts[f"{entry.get('level')}: {entry.get('event')}"] += 1
    return sorted(((n, e) for e, n in counts.items()), reverse=True)[:limit]


def log_lines(log: Path, needle: str, limit: int = 5) -> list[str]:
    """Up to `limit` lines of the bot log that contain `needle`."""
    try:
        return [line for line in log.read_text(errors="replace").splitlines()
                if needle in line][:limit]
    except OSError:
        return []


def logged_message_ids(log: Path, event: str) -> set[str]:
    """The `message_id`s of the bot log's JSON lines whose event is `event`."""
    ids: set[str] = set()
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ids
    for line in lines:
        if event not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            ids.add(str(entry.get("message_id")))
    return ids
