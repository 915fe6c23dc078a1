"""Slack Events API throughput of `bot run`: acked/s, answered/s, ack latency p50/p99.

    python -m bench.webhooks [--events 500] [--concurrency 20] [--workers 2]

Starts a fake Slack Web API and a fake OpenAI-compatible LLM on 127.0.0.1 in this process,
and `bot run` as a real subprocess on fresh embedded Postgres and Valkey. Sends N signed
`message.im` events (distinct messages, from `--concurrency` concurrent senders), measures
each request's acknowledgement latency, and the time until every reply reached the fake
chat.postMessage. Baseline, in the same process and run: the latency of `GET /health/live`
on the same server, i.e. the HTTP round trip without verification or storage.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp

from bench._common import summary, wait_ready
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_api import FakeSlack

SECRET = "bench-signing-secret"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _signed(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/json"}


def _event(i: int) -> bytes:
    return json.dumps({"type": "event_callback", "team_id": "T0BENCH", "event_id": f"Ev{i}",
                       "event": {"type": "message", "channel_type": "im", "channel": f"D{i % 50}",
                                 "user": "U0HUMAN", "text": f"question number {i}",
                                 "ts": f"1700000000.{i:06d}"}}).encode()


async def main(args: argparse.Namespace) -> None:
    slack = await FakeSlack().start()
    llm = await FakeOpenAI().start()
    port = _port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as data_dir:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(BOT_DATA_DIR=data_dir, SLACK_BOT_TOKEN="xoxb-bench", BOT_LOG_LEVEL="WARNING",
                   SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=slack.api_url,
                   LLM_BASE_URL=llm.base_url, BOT_WORKERS=str(args.workers))
        proc = subprocess.Popen([sys.executable, "-m", "bot", "run", "--port", str(port)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            async with aiohttp.ClientSession() as session:
                await wait_ready(session, url)
                baseline = []
                for _ in range(200):
                    t0 = time.perf_counter()
                    async with session.get(url + "/health/live") as r:
                        await r.read()
                    baseline.append(time.perf_counter() - t0)
                acks: list[float] = []
                queue: asyncio.Queue[int] = asyncio.Queue()
                for i in range(args.events):
                    queue.put_nowait(i)

                async def sender() -> None:
                    while not queue.empty():
                        body = _event(queue.get_nowait())
                        t0 = time.perf_counter()
                        async with session.post(url + "/slack/events", data=body,
                                                headers=_signed(body)) as r:
                            await r.read()
                            assert r.status == 200, r.status
                        acks.append(time.perf_counter() - t0)

                started = time.perf_counter()
                await asyncio.gather(*[sender() for _ in range(args.concurrency)])
                acked_s = time.perf_counter() - started
                await slack.wait_for(lambda: len(slack.posts()) >= args.events, timeout_s=600)
                answered_s = time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            await slack.stop()
            await llm.stop()
    print(f"events: {args.events}, concurrency {args.concurrency}, "
          f"workers {args.workers}, fake LLM, embedded Postgres+Valkey")
    print(f"acked: {args.events / acked_s:.0f}/s; answered: {args.events / answered_s:.1f}/s "
          f"({answered_s:.1f} s for all)")
    print(f"ack latency: {summary(acks)}")
    print(f"baseline GET /health/live: {summary(baseline)}")
    print(f"ratio ack/baseline (median): "
          f"{statistics.median(acks) / statistics.median(baseline):.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    asyncio.run(main(parser.parse_args()))
