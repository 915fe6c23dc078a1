"""Ingestion: load -> chunk -> diff against the store -> embed only new chunks -> write.

Idempotent: a source whose bytes (and chunking settings) are unchanged writes nothing; a
changed source keeps its unchanged chunks (by content hash), embeds and inserts the new ones,
and deletes the ones that are gone. Parsing and embedding run off the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp
import asyncpg

from bot.errors import KnowledgeError
from bot.log import get_logger
from knowledge.chunking import chunk_sections
from knowledge.embedders import Embedder
from knowledge.embedders.tokenizer import count_tokens
from knowledge.loaders import LoadedDocument, is_url, load_file, mime_for, parse
from knowledge.store import ChunkStore

log = get_logger("knowledge.ingest")

#: Bump when chunking changes in a way that must re-chunk every document.
CHUNKER_VERSION = 1


@dataclass
class IngestReport:
    """Counts of one ingestion run; `seconds` is wall time."""

    documents: int = 0
    documents_changed: int = 0
    chunks_added: int = 0
    chunks_unchanged: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def wrote_nothing(self) -> bool:
        return self.chunks_added == 0 and self.chunks_removed == 0 and self.documents_changed == 0


Progress = Callable[[str], None]


class Ingestor:
    """Ingests sources into a `ChunkStore` with an `Embedder`.

    Args:
        chunk_tokens, overlap_tokens: chunk size and overlap, in embedder tokens.
        max_bytes: sources larger than this are refused.
        fetch_timeout_s: total timeout of one URL download.
    """

    def __init__(self, store: ChunkStore, embedder: Embedder, *, chunk_tokens: int,
                 overlap_tokens: int, max_bytes: int, fetch_timeout_s: float) -> None:
        self._store = store
        self._embedder = embedder
        self._chunk_tokens = chunk_tokens
        self._overlap_tokens = overlap_tokens
        self._max_bytes = max_bytes
        self._fetch_timeout_s = fetch_timeout_s

    async def ingest(self, sources: Sequence[str], progress: Progress | None = None
                     ) -> IngestReport:
        """Ingest expanded sources (see `loaders.expand_sources`). A source that fails is
        recorded in `failures` and the others go on."""
        report = IngestReport()
        started = time.perf_counter()
        async with aiohttp.ClientSession() as session:
            for source in sources:
                try:
                    await self._ingest_one(source, session, report)
                except KnowledgeError as exc:
                    report.failures.append((source, str(exc)))
                    log.warning("ingest failed", source=source, error=str(exc))
                except (asyncpg.PostgresError, ValueError, RuntimeError) as exc:
                    # the store or the embedder refused this source; the others go on
                    problem = f"{source}: {type(exc).__name__}: {exc}"
                    report.failures.append((source, problem))
                    log.warning("ingest failed", source=source, error=problem)
                if progress:
                    progress(source)
        report.seconds = time.perf_counter() - started
        return report

    async def _ingest_one(self, source: str, session: aiohttp.ClientSession,
                          report: IngestReport) -> None:
        doc = await (self._fetch(source, session) if is_url(source)
                     else asyncio.to_thread(self._load_file, source))
        report.documents += 1
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
        embeddings = await self._embedder.embed([d.embed_text for d in diff.added])
        await self._store.apply(doc, version_sha, diff, embeddings)
        report.documents_changed += 1
        report.chunks_added += len(diff.added)
        report.chunks_unchanged += len(diff.kept)
        report.chunks_removed += len(diff.removed_ids)
        log.info("ingested", source=doc.uri, added=len(diff.added), kept=len(diff.kept),
                 removed=len(diff.removed_ids))

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
