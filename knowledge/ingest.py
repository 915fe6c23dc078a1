"""Ingestion: load -> chunk -> diff against the store -> embed only new chunks -> write.

Idempotent: a source whose bytes (and chunking settings) are unchanged writes nothing; a
changed source keeps its unchanged chunks (by content hash), embeds and inserts the new ones,
and deletes the ones that are gone. Parsing and embedding run off the event loop.

New chunks go to the embedder `batch_size` at a time (shortest first, so a batch pads little),
and progress is reported per batch, so a large document shows its chunks moving instead of one
step at the end. The vectors of one document are held until its single write transaction:
`dim` float32 each (1.5 KB at 384 dimensions), 11 MB for the 7,486 chunks of 5 MB of
Markdown; with its drafts and sections, about 11 KB per chunk. The embedder's own working
memory is bounded by its largest batch (knowledge/embedders/onnx.py), the Markdown parser's by
its piece (knowledge/markdown.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import asyncpg
import numpy as np

from bot.errors import KnowledgeError
from bot.log import get_logger
from knowledge.chunking import ChunkDraft, chunk_sections
from knowledge.embedders import Embedder, Vectors
from knowledge.embedders.tokenizer import count_tokens
from knowledge.loaders import LoadedDocument, is_url, load_file, mime_for, parse
from knowledge.store import ChunkStore

log = get_logger("knowledge.ingest")

#: Bump when chunking changes in a way that must re-chunk every document.
CHUNKER_VERSION = 1


@dataclass
class IngestReport:
    """Counts of one ingestion run; `seconds` is wall time.

    `failures` and `warnings` are (source, message) pairs; each message starts with the source.
    A failed source wrote nothing; a warning (a PDF pypdf had to repair) did not stop it.
    """

    documents: int = 0
    documents_changed: int = 0
    chunks_added: int = 0
    chunks_unchanged: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)

    @property
    def wrote_nothing(self) -> bool:
        return self.chunks_added == 0 and self.chunks_removed == 0 and self.documents_changed == 0


class IngestProgress(Protocol):
    """What `Ingestor.ingest` tells its caller while it runs, in this order per source:
    `started`, then (when it has new chunks) `planned` once and `embedded` after each batch,
    then `finished` (also after a failure). Called on the event loop; must not block."""

    def started(self, source: str) -> None: ...

    def planned(self, source: str, chunks: int) -> None:
        """`chunks` new chunks of `source` are about to be embedded."""

    def embedded(self, source: str, chunks: int) -> None:
        """`chunks` more (one batch, at most `batch_size`) were embedded."""

    def finished(self, source: str) -> None: ...


class _Silent:
    def started(self, source: str) -> None:
        pass

    def planned(self, source: str, chunks: int) -> None:
        pass

    def embedded(self, source: str, chunks: int) -> None:
        pass

    def finished(self, source: str) -> None:
        pass


class Ingestor:
    """Ingests sources into a `ChunkStore` with an `Embedder`.

    Args:
        chunk_tokens, overlap_tokens: chunk size and overlap, in embedder tokens.
        max_bytes: sources larger than this are refused.
        fetch_timeout_s: total timeout of one URL download.
        batch_size: texts per `Embedder.embed` call (EMBEDDING_BATCH_SIZE); also how often
            progress moves.

    Raises:
        ValueError: batch_size < 1.
    """

    def __init__(self, store: ChunkStore, embedder: Embedder, *, chunk_tokens: int,
                 overlap_tokens: int, max_bytes: int, fetch_timeout_s: float,
                 batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._store = store
        self._embedder = embedder
        self._chunk_tokens = chunk_tokens
        self._overlap_tokens = overlap_tokens
        self._max_bytes = max_bytes
        self._fetch_timeout_s = fetch_timeout_s
        self._batch_size = batch_size

    async def ingest(self, sources: Sequence[str], progress: IngestProgress | None = None
                     ) -> IngestReport:
        """Ingest expanded sources (see `loaders.expand_sources`). A source that fails is
        recorded in `failures` (and logged at info level: reporting it is the caller's job)
        and the others go on."""
        report = IngestReport()
        tell = progress or _Silent()
        started = time.perf_counter()
        async with aiohttp.ClientSession() as session:
            for source in sources:
                tell.started(source)
                try:
                    await self._ingest_one(source, session, report, tell)
                except KnowledgeError as exc:
                    report.failures.append((source, str(exc)))
                    log.info("ingest failed", source=source, error=str(exc))
                except (asyncpg.PostgresError, ValueError, RuntimeError) as exc:
                    # the store or the embedder refused this source; the others go on
                    problem = f"{source}: {type(exc).__name__}: {exc}"
                    report.failures.append((source, problem))
                    log.info("ingest failed", source=source, error=problem)
                tell.finished(source)
        report.seconds = time.perf_counter() - started
        return report

    async def ingest_upload(self, data: bytes, uri: str, filename: str,
                            content_type: str | None) -> IngestReport:
        """Ingest one document given as bytes (an upload to the admin console), parsed by the
        same loaders as files, its type from `content_type` or the suffix of `filename`. A
        new `uri` is a new document; a known one a new version of it (only changed chunks are
        embedded again; a forgotten one comes back).

        Raises:
            KnowledgeError: larger than `max_bytes`, an unsupported type, or unreadable
                as that type (nothing is stored).
        """
        if len(data) > self._max_bytes:
            raise KnowledgeError(f"{uri}: larger than INGEST_MAX_BYTES={self._max_bytes}")
        mime_type = mime_for(filename, content_type)
        doc = await asyncio.to_thread(parse, data, uri, mime_type)
        report = IngestReport()
        started = time.perf_counter()
        await self._store_document(uri, doc, report, _Silent())
        report.seconds = time.perf_counter() - started
        return report

    async def _ingest_one(self, source: str, session: aiohttp.ClientSession,
                          report: IngestReport, progress: IngestProgress) -> None:
        doc = await (self._fetch(source, session) if is_url(source)
                     else asyncio.to_thread(self._load_file, source))
        await self._store_document(source, doc, report, progress)

    async def _store_document(self, source: str, doc: LoadedDocument, report: IngestReport,
                              progress: IngestProgress) -> None:
        report.documents += 1
        async with self._store.writing(doc.uri):
            await self._write(source, doc, report, progress)

    async def _write(self, source: str, doc: LoadedDocument, report: IngestReport,
                     progress: IngestProgress) -> None:
        for warning in doc.warnings:
            report.warnings.append((source, f"{doc.uri}: {warning}"))
            log.info("ingest warning", source=source, warning=warning)
        settings_tag = f"{CHUNKER_VERSION}:{self._chunk_tokens}:{self._overlap_tokens}"
        version_sha = hashlib.sha256(f"{doc.sha256}:{settings_tag}".encode()).hexdigest()
        stored = await self._store.get_document(doc.uri)
        if stored and stored.content_sha256 == version_sha and not stored.deleted:
            report.chunks_unchanged += stored.chunk_count
            return
        drafts = await asyncio.to_thread(
            chunk_sections, doc.title, doc.sections, chunk_tokens=self._chunk_tokens,
            overlap_tokens=self._overlap_tokens, count_tokens=count_tokens)
        diff = await self._store.diff(stored.id if stored else None, drafts)
        embeddings = await self._embed(source, diff.added, progress)
        await self._store.apply(doc, version_sha, diff, embeddings)
        report.documents_changed += 1
        report.chunks_added += len(diff.added)
        report.chunks_unchanged += len(diff.kept)
        report.chunks_removed += len(diff.removed_ids)
        log.info("ingested", source=doc.uri, added=len(diff.added), kept=len(diff.kept),
                 removed=len(diff.removed_ids))

    async def _embed(self, source: str, drafts: Sequence[ChunkDraft],
                     progress: IngestProgress) -> Vectors:
        """Vectors of `drafts`, shape (len(drafts), dim), row i for drafts[i], computed
        `batch_size` texts per embedder call. Batches are formed shortest first, so texts of
        similar length share one and little padding is computed.

        Raises:
            RuntimeError: the embedder returned another number of vectors than texts.
        """
        vectors = np.empty((len(drafts), self._embedder.dim), dtype=np.float32)
        if not drafts:
            return vectors
        progress.planned(source, len(drafts))
        order = sorted(range(len(drafts)), key=lambda i: drafts[i].token_count)
        for start in range(0, len(order), self._batch_size):
            rows = order[start:start + self._batch_size]
            batch = await self._embedder.embed([drafts[i].embed_text for i in rows])
            if batch.shape != (len(rows), self._embedder.dim):
                raise RuntimeError(f"the embedder returned shape {batch.shape} for "
                                   f"{len(rows)} texts of dimension {self._embedder.dim}")
            vectors[rows] = batch
            progress.embedded(source, len(rows))
        return vectors

    def _load_file(self, path: str) -> LoadedDocument:
        try:
            if os.path.getsize(path) > self._max_bytes:
                raise KnowledgeError(f"{path}: larger than INGEST_MAX_BYTES={self._max_bytes}")
            return load_file(path)
        except OSError as exc:
            raise KnowledgeError(f"{path}: {exc.strerror or exc}") from exc

    async def _fetch(self, url: str, session: aiohttp.ClientSession) -> LoadedDocument:
        timeout = aiohttp.ClientTimeout(total=self._fetch_timeout_s)
        try:
            async with session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise KnowledgeError(f"{url}: HTTP {response.status}")
                data = bytearray()
                async for block in response.content.iter_chunked(64 * 1024):
                    data.extend(block)
                    if len(data) > self._max_bytes:
                        raise KnowledgeError(f"{url}: larger than INGEST_MAX_BYTES")
                mime = mime_for(url, response.headers.get("Content-Type"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KnowledgeError(f"{url}: {type(exc).__name__}: {exc}") from exc
        return await asyncio.to_thread(parse, bytes(data), url, mime)
