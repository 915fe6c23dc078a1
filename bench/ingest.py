"""Ingestion throughput: chunks/s of `bot ingest` on a corpus, against the embedder alone.

    python -m bench.ingest [--threads N] [SOURCE ...]   (default: docs/, tests/fixtures/corpus/)

Runs on a fresh embedded Postgres+Valkey (or DATABASE_URL/REDIS_URL when set). Prints: the
first ingestion (load + chunk + embed + write) with the process's peak memory before and after
it, a second ingestion of the unchanged corpus
(nothing to write), and, as the baseline in the same process, embedding the same chunk texts
with no I/O, so the ratio shows what loading and storing cost on top of the model. `--threads`
is the embedder's (default: every usable core, as `bot ingest` does).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time

from bench._common import DEFAULT_CORPUS, isolated_runtime
from bot.cli_common import usable_cores
from knowledge.loaders import expand_sources


async def main(sources: list[str], threads: int) -> None:
    expanded = expand_sources(sources)
    async with isolated_runtime(embedding_threads=threads) as rt:
        await rt.embedder.embed(["warm-up"])
        rss_before = _peak_rss_mib()
        first = await rt.ingestor().ingest(expanded)
        rss_after = _peak_rss_mib()
        again = await rt.ingestor().ingest(expanded)
        texts = [r["t"] for r in await rt.pool.fetch(
            "SELECT concat_ws(E'\\n', d.title, NULLIF(c.section, ''), c.text) AS t "
            "FROM chunks c JOIN documents d ON d.id = c.document_id")]
        started = time.perf_counter()
        await rt.embedder.embed(texts)
        embed_s = time.perf_counter() - started
    rate = first.chunks_added / first.seconds
    embed_rate = len(texts) / embed_s
    print(f"embedder: {rt.embedder.name}, threads={rt.settings.embedding_threads}")
    print(f"corpus: {first.documents} documents, {first.chunks_added} chunks")
    print(f"first ingest: {first.seconds:.2f} s, {rate:.1f} chunks/s; peak RSS of this "
          f"process {rss_before:.0f} MiB before it (model loaded), {rss_after:.0f} MiB after")
    print(f"unchanged re-ingest: {again.seconds:.2f} s, {again.chunks_added} chunks added")
    print(f"baseline, embedding alone: {embed_s:.2f} s, {embed_rate:.1f} chunks/s")
    print(f"ratio ingest/embedding-only throughput: {rate / embed_rate:.2f}")
    if first.failures:
        print(f"failures: {first.failures}")


def _peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=usable_cores())
    parser.add_argument("sources", nargs="*", default=DEFAULT_CORPUS)
    args = parser.parse_args()
    asyncio.run(main(args.sources, args.threads))
