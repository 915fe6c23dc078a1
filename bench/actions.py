"""Action latency through the whole engine path (console adapter -> Redis inbox -> worker ->
action routing -> runner -> audit row -> reply), against a plain question in the same run.

    python -m bench.actions [--calls N]

Three paths, each N times, on fresh embedded Postgres+Valkey, with a loopback
OpenAI-compatible server that answers at once (no corpus is ingested, so retrieval finds
nothing and costs one empty query):
- baseline: a plain question, answered by the model without calling a tool;
- command: `!whoami` (routed before retrieval and generation; one audit row);
- tool call: a question the model answers by calling `whoami`, then answering from its
  result (two model round trips, one audit row).
Prints median and p99 of each and its ratio to the baseline's median.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from bench._common import isolated_runtime, summary
from bot.messages import Reply
from tests.fakes.openai_server import FakeOpenAI, ToolScript

Ask = Callable[[str, str, float], Awaitable[Reply | None]]


async def _timed(ask: Ask, texts: list[str], script: ToolScript | None,
                 tag: str, expect: str) -> list[float]:
    samples = []
    for i, text in enumerate(texts):
        if script is not None:
            script.plan.append(("whoami", {}))
        t0 = time.perf_counter()
        reply = await ask(text, f"bench-{tag}-{i}", 60)
        samples.append(time.perf_counter() - t0)
        assert reply is not None and expect in reply.text, (text, reply)
    return samples


async def main(args: argparse.Namespace) -> None:
    script = ToolScript("Model answer")
    fake = await FakeOpenAI(answer=script.answer, tool_calls=script.tool_calls).start()
    try:
        async with isolated_runtime(llm_base_url=fake.base_url,
                                    bot_action_modules="tests.actions.sample_actions",
                                    bot_action_entry_points=False) as rt:
            rt.start_workers(1)
            ask = rt.console.ask
            await ask("warm-up", "bench-warm", 60)
            n = args.calls
            baseline = await _timed(ask, [f"question {i}?" for i in range(n)], None, "q",
                                    "Model answer")
            command = await _timed(ask, ["!whoami"] * n, None, "c", "You are console:")
            questions = [f"which account is this, number {i}?" for i in range(n)]
            tool = await _timed(ask, questions, script, "t",
                                "Model says: [ok] You are console:")
            runs = await rt.pool.fetchval("SELECT count(*) FROM action_runs")
    finally:
        await fake.stop()
    base = statistics.median(baseline)
    print(f"calls per path: {n}; audit rows written: {runs} (expected {2 * n})")
    print(f"baseline, plain question (1 model round trip): {summary(baseline)}")
    print(f"command !whoami: {summary(command)}; "
          f"ratio {statistics.median(command) / base:.2f}")
    print(f"tool call whoami (2 model round trips): {summary(tool)}; "
          f"ratio {statistics.median(tool) / base:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
