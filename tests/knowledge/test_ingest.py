"""Ingestion into real Postgres+pgvector: counts, idempotency, incremental updates, forget."""

from __future__ import annotations

import shutil
from pathlib import Path

from bot.runtime import Runtime
from knowledge.loaders import expand_sources
from tests.conftest import CORPUS


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
