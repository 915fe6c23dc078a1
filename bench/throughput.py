"""End-to-end throughput with 1, 2 and 4 worker processes: webhook -> inbox -> pipeline (fake
LLM, retrieval off) -> signed callback, with per-message latency (POST sent -> reply received).

    python -m bench.throughput [--messages 400] [--conversations 100] [--processes 1 2 4]

For each count K: a `bot run --workers 0` process (ingress only) and K `bot worker --workers 4`
processes on fresh embedded Postgres and Valkey; a fake OpenAI-compatible server and the
callback receiver run in this process. Messages of one conversation are sent in order, the
conversations concurrently. The K=1 run is the baseline of the ratios. On this project's
2-core machine more processes compete for the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import aiohttp

from adapters.verification import sha256_signature
from bench._common import summary, wait_ready
from tests.fakes.openai_server import CallbackRecorder, FakeOpenAI
from tests.fakes.processes import free_port

SECRET = "bench-webhook-secret"


async def run_once(args: argparse.Namespace, processes: int) -> tuple[float, list[float]]:
    llm = await FakeOpenAI().start()
    callback = await CallbackRecorder().start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sent_at: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as data_dir:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(BOT_DATA_DIR=data_dir, WEBHOOK_SECRET=SECRET, BOT_LOG_LEVEL="WARNING",
                   WEBHOOK_CALLBACK_URL=callback.url, LLM_BASE_URL=llm.base_url,
                   RETRIEVAL_TOP_K="0")
        procs = [subprocess.Popen([sys.executable, "-m", "bot", "run", "--workers", "0",
                                   "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)]
        try:
            async with aiohttp.ClientSession() as session:
                await wait_ready(session, url)
                procs += [subprocess.Popen([sys.executable, "-m", "bot", "worker", "--workers",
                                            "4"], env=env, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL)
                          for _ in range(processes)]
                await asyncio.sleep(3)  # workers connected and warm
                per_conv = args.messages // args.conversations

                async def conversation(c: int) -> None:
                    for seq in range(per_conv):
                        mid = f"{c}-{seq}"
                        body = json.dumps({"id": mid, "user": "u", "conversation": f"c{c}",
                                           "text": f"question {seq}"}).encode()
                        sent_at[f"webhook:load:{mid}"] = time.perf_counter()
                        async with session.post(url + "/webhooks/load", data=body, headers={
                                "X-Signature": sha256_signature(SECRET, body)}) as r:
                            assert r.status == 202, r.status

                started = time.perf_counter()
                await asyncio.gather(*[conversation(c) for c in range(args.conversations)])
                await callback.wait_for(len(sent_at), timeout_s=600)
                wall_s = time.perf_counter() - started
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(60)
            await llm.stop()
            await callback.stop()
    latencies = []
    received: set[str] = set()
    for (_body, headers), arrived in zip(callback.calls, callback.arrival_s, strict=True):
        key = headers["Idempotency-Key"]
        if key not in received:
            received.add(key)
            latencies.append(arrived - sent_at[key])
    return wall_s, latencies


async def main(args: argparse.Namespace) -> None:
    results: dict[int, float] = {}
    for k in args.processes:
        wall_s, latencies = await run_once(args, k)
        results[k] = args.messages / wall_s
        print(f"{k} worker process(es) x 4 tasks: {results[k]:.1f} messages/s "
              f"({args.messages} in {wall_s:.2f} s), ratio to {args.processes[0]}: "
              f"{results[k] / results[args.processes[0]]:.2f}; latency {summary(latencies)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    asyncio.run(main(parser.parse_args()))
