"""Ingestion throughput: chunks/s of `bot ingest` on a corpus, against the embedder alone.

    python -m bench.ingest [--threads N] [SOURCE ...]   (default: docs/, tests/fixtures/corpus/)

Runs on a fresh embedded Postgres+Valkey (or DATABASE_URL/REDIS_URL when set). Prints: the
first ingestion (load + chunk + embed + write) with the process's peak memory before and after
it, a second ingestion of the unchanged corpus
(nothing to write), and, as the baseline in the same process, embedding the same chunk texts
with no I/O, in the same batches as the ingestion (each document's chunks shortest first,
EMBEDDING_BATCH_SIZE per call), so the ratio shows what loading and storing cost on top of the
model. `--threads` is the embedder's (default: every usable core, as `bot ingest` does).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time

import asyncpg

from bench._common import DEFAULT_CORPUS, isolated_runtime
from bot.cli_common import usable_cores
from knowledge.loaders import expand_sources


async def main(sources: list[str], threads: int) -> None:
    expanded = expand_sources(sources)
    async with isolated_runtime(embedding_threads=threads) as rt:
        await rt.embedder.embed(["warm-up"])
        rss_before, cpu = _peak_rss_mib(), _cpu_s()
        first = await rt.ingestor().ingest(expanded)
        rss_after, ingest_cpu = _peak_rss_mib(), _cpu_s() - cpu
        again = await rt.ingestor().ingest(expanded)
        rows = await rt.pool.fetch(
            "SELECT c.document_id, c.token_count, concat_ws(E'\\n', NULLIF(d.title, ''), "
            "NULLIF(c.section, ''), c.text) AS t FROM chunks c "
            "JOIN documents d ON d.id = c.document_id ORDER BY c.document_id, c.ordinal")
        documents: dict[int, list[asyncpg.Record]] = {}
        for row in rows:
            documents.setdefault(row["document_id"], []).append(row)
        batch = rt.settings.embedding_batch_size
        started, cpu = time.perf_counter(), _cpu_s()
        for chunks in documents.values():  # as the ingestor batches them: shortest first
            texts = [r["t"] for r in sorted(chunks, key=lambda r: r["token_count"])]
            for at in range(0, len(texts), batch):
                await rt.embedder.embed(texts[at:at + batch])
        embed_s, embed_cpu = time.perf_counter() - started, _cpu_s() - cpu
    rate = first.chunks_added / first.seconds
    embed_rate = len(rows) / embed_s
    print(f"embedder: {rt.embedder.name}, threads={rt.settings.embedding_threads}")
    print(f"corpus: {first.documents} documents, {first.chunks_added} chunks")
    print(f"first ingest: {first.seconds:.2f} s ({ingest_cpu:.0f} s of CPU in this process), "
          f"{rate:.1f} chunks/s; peak RSS of this process {rss_before:.0f} MiB before it "
          f"(model loaded), {rss_after:.0f} MiB after")
    print(f"unchanged re-ingest: {again.seconds:.2f} s, {again.chunks_added} chunks added")
    print(f"baseline, embedding alone (same batches): {embed_s:.2f} s ({embed_cpu:.0f} s of "
          f"CPU), {embed_rate:.1f} chunks/s")
    print(f"ratio ingest/embedding-only throughput: {rate / embed_rate:.2f}")
    if first.failures:
        print(f"failures: {first.failures}")


def _cpu_s() -> float:
    """CPU seconds this process has used so far (user + system, all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
