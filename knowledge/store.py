"""The pgvector chunk store: every SQL statement about documents and chunks lives here.

Vectors are L2-normalized float32 arrays of the embedder's `dim`; the HNSW index uses cosine
distance (`<=>`), so a dense score is `1 - distance`, the cosine similarity. Full-text search
uses the `tsv` column (english configuration) with an OR of the query's lexemes (stemmed once,
by `to_tsvector`, and cast, not re-stemmed, to a tsquery), ranked by
`ts_rank_cd` normalized by document length (normalization 1|32).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import numpy as np
import numpy.typing as npt

from bot.messages import Passage
from knowledge.chunking import ChunkDraft
from knowledge.loaders import LoadedDocument


@dataclass(frozen=True)
class StoredDocument:
    id: int
    content_sha256: str
    deleted: bool
    chunk_count: int


@dataclass(frozen=True)
class ChunkDiff:
    """What an upsert changes: chunks to add, to keep (by sha) and to remove (by id)."""

    added: list[ChunkDraft]
    kept: list[ChunkDraft]
    removed_ids: list[int]


_PASSAGE_COLUMNS = """c.id AS chunk_id, c.document_id, c.text, c.section, c.page,
                      d.source_uri, d.title"""


class ChunkStore:
    """Documents and chunks in Postgres. All methods are coroutine-safe on a shared pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get_document(self, uri: str) -> StoredDocument | None:
        row = await self._pool.fetchrow(
            """SELECT d.id, d.content_sha256, d.deleted_at IS NOT NULL AS deleted,
                      (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS n
               FROM documents d WHERE d.source_uri = $1""", uri)
        if row is None:
            return None
        return StoredDocument(row["id"], row["content_sha256"], row["deleted"], row["n"])

    @asynccontextmanager
    async def writing(self, uri: str) -> AsyncIterator[None]:
        """Hold the document `uri` for writing, across processes: `get_document`, `diff` and
        `apply` of two ingestions of one source inside this never interleave (each would diff
        against the same stored chunks and the two versions' chunks would mix). A transaction
        advisory lock on a connection of its own: a cancelled holder's connection is rolled
        back when the pool takes it back, which releases the lock."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                               f"document:{uri}")
            yield

    async def diff(self, document_id: int | None, drafts: Sequence[ChunkDraft]) -> ChunkDiff:
        """Compare new drafts with the stored chunks of a document, by content hash."""
        existing: dict[str, int] = {}
        if document_id is not None:
            rows = await self._pool.fetch(
                "SELECT id, content_sha256 FROM chunks WHERE document_id = $1", document_id)
            existing = {r["content_sha256"]: r["id"] for r in rows}
        new_shas = {d.sha256 for d in drafts}
        return ChunkDiff(
            added=[d for d in drafts if d.sha256 not in existing],
            kept=[d for d in drafts if d.sha256 in existing],
            removed_ids=[cid for sha, cid in existing.items() if sha not in new_shas])

    async def apply(self, doc: LoadedDocument, version_sha: str, diff: ChunkDiff,
                    embeddings: npt.NDArray[np.float32]) -> int:
        """Write a document and its chunk diff in one transaction; return the document id.

        Args:
            doc: the loaded document (uri, title, type).
            version_sha: the hash that identifies this version (bytes and chunking settings).
            diff: from `diff()`.
            embeddings: shape (len(diff.added), dim), row i for diff.added[i].
        """
        async with self._pool.acquire() as conn, conn.transaction():
            doc_id: int = await conn.fetchval(
                """INSERT INTO documents (source_uri, title, mime_type, content_sha256)
                   VALUES ($1, $2, $3, $4)
                   ON CONFLICT (source_uri) DO UPDATE SET
                       title = EXCLUDED.title, mime_type = EXCLUDED.mime_type,
                       content_sha256 = EXCLUDED.content_sha256,
                       version = documents.version + 1, updated_at = now(), deleted_at = NULL
                   RETURNING id""", doc.uri, doc.title, doc.mime_type, version_sha)
            if diff.removed_ids:
                await conn.execute("DELETE FROM chunks WHERE id = ANY($1::bigint[])",
                                   diff.removed_ids)
            if diff.kept:
                await conn.executemany(
                    """UPDATE chunks SET ordinal = $3 WHERE document_id = $1
                       AND content_sha256 = $2 AND ordinal <> $3""",
                    [(doc_id, d.sha256, d.ordinal) for d in diff.kept])
            if diff.added:
                await conn.executemany(
                    """INSERT INTO chunks (document_id, ordinal, section, page, text,
                                           token_count, content_sha256, embedding)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                    [(doc_id, d.ordinal, d.section, d.page, d.text, d.token_count, d.sha256,
                      embeddings[i]) for i, d in enumerate(diff.added)])
            return doc_id

    async def forget(self, uri: str) -> bool:
        """Soft-delete a document (retrieval skips it); False when no live document has `uri`."""
        result: str = await self._pool.execute(
            """UPDATE documents SET deleted_at = now(), updated_at = now()
               WHERE source_uri = $1 AND deleted_at IS NULL""", uri)
        return result.endswith(" 1")

    async def search_dense(self, vector: npt.NDArray[np.float32], k: int) -> list[Passage]:
        """The `k` nearest chunks by cosine distance (HNSW), live documents only."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL hnsw.ef_search = 100")
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            rows = await conn.fetch(
                f"""SELECT {_PASSAGE_COLUMNS}, 1 - (c.embedding <=> $1) AS score
                    FROM chunks c JOIN documents d ON d.id = c.document_id
                    WHERE d.deleted_at IS NULL
                    ORDER BY c.embedding <=> $1 LIMIT $2""", vector, k)
        return [_passage(r) for r in rows]

    async def search_lexical(self, query: str, k: int) -> list[Passage]:
        """The `k` best chunks by full-text rank (any query lexeme matches), live documents."""
        rows = await self._pool.fetch(
            f"""WITH q AS (SELECT string_agg(quote_literal(lexeme), ' | ')::tsquery AS query
                           FROM unnest(tsvector_to_array(to_tsvector('english', $1))) lexeme)
                SELECT {_PASSAGE_COLUMNS}, ts_rank_cd(c.tsv, q.query, 1|32) AS score
                FROM q, chunks c JOIN documents d ON d.id = c.document_id
                WHERE q.query IS NOT NULL AND c.tsv @@ q.query AND d.deleted_at IS NULL
                ORDER BY score DESC, c.id LIMIT $2""", query, k)
        return [_passage(r) for r in rows]

    async def counts(self) -> dict[str, int]:
        """Live documents and their chunks."""
        row = await self._pool.fetchrow(
            """SELECT count(DISTINCT d.id) AS documents, count(c.id) AS chunks
               FROM documents d LEFT JOIN chunks c ON c.document_id = d.id
               WHERE d.deleted_at IS NULL""")
        return {"documents": row["documents"], "chunks": row["chunks"]}


def _passage(row: asyncpg.Record) -> Passage:
    return Passage(text=row["text"], uri=row["source_uri"], title=row["title"],
                   section=row["section"], page=row["page"], score=float(row["score"]),
                   chunk_id=row["chunk_id"], document_id=row["document_id"])
