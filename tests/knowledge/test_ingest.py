"""Ingestion into real Postgres+pgvector: counts, idempotency, incremental updates, forget."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np

from bot.runtime import Runtime
from knowledge.embedders import Embedder, Vectors
from knowledge.ingest import Ingestor
from knowledge.loaders import expand_sources
from tests.conftest import CORPUS
from tests.knowledge.unusable import write_unusable


async def _rows(rt: Runtime, uri: str) -> list[tuple[int, str]]:
    rows = await rt.pool.fetch(
        """SELECT c.id, c.content_sha256 FROM chunks c JOIN documents d ON d.id = c.document_id
           WHERE d.source_uri = $1 ORDER BY c.ordinal""", uri)
    return [(r["id"], r["content_sha256"]) for r in rows]


async def test_ingest_is_idempotent_and_incremental(runtime: Runtime, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    sources = expand_sources([str(corpus)])
    assert len(sources) == 4

    first = await runtime.ingestor().ingest(sources)
    assert first.failures == []
    assert (first.documents, first.documents_changed) == (4, 4)
    total = await runtime.pool.fetchval("SELECT count(*) FROM chunks")
    assert first.chunks_added == total > 10

    again = await runtime.ingestor().ingest(sources)
    assert again.wrote_nothing
    assert (again.chunks_added, again.chunks_unchanged) == (0, total)
    assert await runtime.pool.fetchval("SELECT max(version) FROM documents") == 1

    readme = corpus / "platformdirs-readme.md"
    before = await _rows(runtime, str(readme))
    others_before = await runtime.pool.fetch(
        "SELECT id FROM chunks WHERE document_id <> (SELECT id FROM documents "
        "WHERE source_uri = $1) ORDER BY id", str(readme))
    text = readme.read_text()
    readme.write_text(text.replace("## Documentation\n",
                                   "## Documentation\n\nThe answer to the edit test is 42.\n"))
    edited = await runtime.ingestor().ingest(sources)
    after = await _rows(runtime, str(readme))
    changed = {sha for _, sha in after} - {sha for _, sha in before}
    assert edited.documents_changed == 1
    assert edited.chunks_added == len(changed) >= 1
    assert edited.chunks_removed == len({sha for _, sha in before} - {sha for _, sha in after})
    assert edited.chunks_added < len(after)  # unchanged chunks were kept, not re-embedded
    kept_ids = {cid for cid, sha in after if sha not in changed}
    assert kept_ids <= {cid for cid, _ in before}
    others_after = await runtime.pool.fetch(
        "SELECT id FROM chunks WHERE document_id <> (SELECT id FROM documents "
        "WHERE source_uri = $1) ORDER BY id", str(readme))
    assert others_after == others_before  # other documents untouched
    assert await runtime.pool.fetchval(
        "SELECT version FROM documents WHERE source_uri = $1", str(readme)) == 2


async def test_forget_soft_deletes_and_reingest_revives(runtime: Runtime) -> None:
    html = str(CORPUS / "zlib-usage-example.html")
    await runtime.ingestor().ingest([html])
    retriever = runtime.knowledge_retriever()
    hits = await retriever.retrieve("CHUNK buffer size for deflate", 3)
    assert hits and hits[0].uri == html

    assert await runtime.store.forget(html)
    assert not await runtime.store.forget(html)  # already forgotten
    assert await retriever.retrieve("CHUNK buffer size for deflate", 3) == []
    assert await runtime.pool.fetchval(
        "SELECT deleted_at IS NOT NULL FROM documents WHERE source_uri = $1", html)

    report = await runtime.ingestor().ingest([html])
    assert report.documents_changed == 1 and report.chunks_added == 0  # chunks were kept
    assert (await retriever.retrieve("CHUNK buffer size for deflate", 3))[0].uri == html


async def test_a_broken_source_is_reported_and_the_rest_ingested(runtime: Runtime,
                                                                 tmp_path: Path) -> None:
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.7 not really")
    good = str(CORPUS / "platformdirs-readme.md")
    report = await runtime.ingestor().ingest([str(bad), good])
    assert [uri for uri, _ in report.failures] == [str(bad)]
    assert report.documents == 1 and report.chunks_added > 0


class RecordingEmbedder:
    """The runtime's embedder, recording the texts of every call and the vector of each."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.calls: list[list[str]] = []
        self.vectors: dict[str, Vectors] = {}

    async def embed(self, texts: list[str]) -> Vectors:
        self.calls.append(list(texts))
        vectors = await self.inner.embed(texts)
        self.vectors.update(zip(texts, vectors, strict=True))
        return vectors

    async def aclose(self) -> None:
        pass


class Events:
    """An `IngestProgress` that records what it is told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str] | tuple[str, str, int]] = []

    def started(self, source: str) -> None:
        self.seen.append(("started", source))

    def planned(self, source: str, chunks: int) -> None:
        self.seen.append(("planned", source, chunks))

    def embedded(self, source: str, chunks: int) -> None:
        self.seen.append(("embedded", source, chunks))

    def finished(self, source: str) -> None:
        self.seen.append(("finished", source))


def _handbook(paragraphs: int) -> str:
    rng = random.Random(5)
    words = "queue worker retry signing secret webhook chunk vector index replica".split()
    out = ["# Handbook\n"]
    for n in range(paragraphs):
        if n % 10 == 0:
            out.append(f"## Part {n // 10}\n")
        out.append(" ".join(rng.choice(words) for _ in range(rng.randint(8, 40))) + ".\n")
    return "\n".join(out)


async def _stored_vectors_match(rt: Runtime, uri: str, recorded: dict[str, Vectors]) -> int:
    rows = await rt.pool.fetch(
        """SELECT d.title, c.section, c.text, c.embedding FROM chunks c
           JOIN documents d ON d.id = c.document_id WHERE d.source_uri = $1""", uri)
    for row in rows:
        embed_text = "\n".join(p for p in (row["title"], row["section"], row["text"]) if p)
        assert np.allclose(row["embedding"].to_numpy(), recorded[embed_text], atol=1e-6)
    return len(rows)


async def test_new_chunks_stream_to_the_embedder_in_batches_with_progress_per_batch(
        runtime: Runtime, tmp_path: Path) -> None:
    # finding 11: a 5 MB file embedded every chunk in one call, and the bar stayed at 0/1
    doc = tmp_path / "handbook.md"
    doc.write_text(_handbook(40))
    embedder = RecordingEmbedder(runtime.embedder)
    ingestor = Ingestor(runtime.store, embedder, chunk_tokens=48, overlap_tokens=8,
                        max_bytes=10**6, fetch_timeout_s=5, batch_size=4)
    events = Events()
    report = await ingestor.ingest([str(doc)], events)
    added = report.chunks_added
    assert report.failures == [] and added > 12
    assert all(1 <= len(call) <= 4 for call in embedder.calls)
    assert len(embedder.calls) == -(-added // 4)
    assert events.seen[:2] == [("started", str(doc)), ("planned", str(doc), added)]
    assert events.seen[-1] == ("finished", str(doc))
    steps = events.seen[2:-1]
    assert [len(call) for call in embedder.calls] == [e[2] for e in steps]  # type: ignore[misc]
    assert await _stored_vectors_match(runtime, str(doc), embedder.vectors) == added

    # a changed paragraph: only its new chunks are embedded, and progress counts only those
    text = doc.read_text()
    doc.write_text(text.replace("## Part 2\n", "## Part 2\n\nThe edit test answer is 42.\n"))
    embedder.calls.clear()
    events = Events()
    edited = await ingestor.ingest([str(doc)], events)
    assert 1 <= edited.chunks_added < added and edited.chunks_unchanged > 0
    assert sum(len(call) for call in embedder.calls) == edited.chunks_added
    assert ("planned", str(doc), edited.chunks_added) in events.seen
    await _stored_vectors_match(runtime, str(doc), embedder.vectors)

    again = await ingestor.ingest([str(doc)], events)
    assert again.wrote_nothing and events.seen[-2:] == [("started", str(doc)),
                                                        ("finished", str(doc))]


async def test_binary_and_corrupt_files_are_failures_repairs_are_warnings(
        runtime: Runtime, tmp_path: Path) -> None:
    noise, cut, skewed = write_unusable(tmp_path)
    report = await runtime.ingestor().ingest([str(noise), str(cut), str(skewed)])
    assert [(uri, problem.split(" (")[0]) for uri, problem in report.failures] == [
        (str(noise), f"{noise}: not a text file"),
        (str(cut), f"{cut}: cannot read as application/pdf: Stream has ended unexpectedly")]
    assert "EOF marker not found" in report.failures[1][1]
    assert report.warnings[0] == (str(skewed), f"{skewed}: incorrect startxref pointer(3)")
    assert {uri for uri, _ in report.warnings} == {str(skewed)}
    assert report.documents == 1 and report.chunks_added > 0
    assert await runtime.pool.fetchval(
        "SELECT count(*) FROM documents WHERE source_uri = ANY($1::text[])",
        [str(noise), str(cut)]) == 0
