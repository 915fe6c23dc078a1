"""Ask latency: the whole path of a question (console adapter -> Redis inbox -> worker ->
memory -> retrieval -> generation -> transcript -> reply), against retrieval alone.

    python -m bench.ask [--questions N] [--llm fake] [SOURCE ...]

The corpus (default: docs/ and tests/fixtures/corpus/) is ingested into a fresh embedded
Postgres+Valkey first. Questions are the corpus's own section headings turned into questions.
Without --llm the answers are extractive; `--llm fake` adds a loopback OpenAI-compatible server
that answers at once, to include the chat round trip. Prints median and p99 of both paths and
their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench._common import DEFAULT_CORPUS, isolated_runtime, summary
from knowledge.loaders import expand_sources
from tests.fakes.openai_server import FakeOpenAI


async def main(args: argparse.Namespace) -> None:
    fake = await FakeOpenAI().start() if args.llm == "fake" else None
    overrides = {"llm_base_url": fake.base_url} if fake else {}
    try:
        async with isolated_runtime(**overrides) as rt:
            await rt.ingestor().ingest(expand_sources(args.sources or DEFAULT_CORPUS))
            sections = [r["section"] for r in await rt.pool.fetch(
                "SELECT DISTINCT section FROM chunks WHERE section <> '' ORDER BY section")]
            questions = [f"What does the documentation say about {s.split(' > ')[-1]}?"
                         for s in sections][: args.questions]
            while len(questions) < args.questions:
                questions += questions[: args.questions - len(questions)]
            retriever = rt.knowledge_retriever()
            await retriever.retrieve("warm-up", 5)
            rt.start_workers(1)
            retrieval, full = [], []
            for i, q in enumerate(questions):
                t0 = time.perf_counter()
                await retriever.retrieve(q, rt.settings.retrieval_top_k)
                retrieval.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                reply = await rt.console.ask(q, f"bench-{i}", 60)
                full.append(time.perf_counter() - t0)
                assert reply is not None, "no reply"
    finally:
        if fake:
            await fake.stop()
    print(f"questions: {len(questions)}, generation: {'fake LLM' if fake else 'extractive'}")
    print(f"baseline, retrieval alone: {summary(retrieval)}")
    print(f"bot ask path: {summary(full)}")
    med = sorted(full)[len(full) // 2] / sorted(retrieval)[len(retrieval) // 2]
    print(f"ratio full path/retrieval (median): {med:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--llm", choices=["none", "fake"], default="none")
    parser.add_argument("sources", nargs="*")
    asyncio.run(main(parser.parse_args()))
