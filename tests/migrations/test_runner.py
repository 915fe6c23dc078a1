"""The migration runner against real Postgres: once only under concurrency, recorded, checked."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from bot.errors import MigrationError
from migrations import runner


async def test_two_concurrent_runners_apply_each_migration_once(database_url: str) -> None:
    a = await asyncpg.connect(database_url)
    b = await asyncpg.connect(database_url)
    try:
        applied = await asyncio.gather(runner.migrate(a, embedding_dim=384),
                                       runner.migrate(b, embedding_dim=384))
        versions = [m.version for m in runner.discover()]
        assert sorted(applied[0] + applied[1]) == versions  # each applied by exactly one
        assert await runner.pending(a) == []
        rows = await a.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == versions
        assert await runner.migrate(a, embedding_dim=384) == []
        assert await a.fetchval("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                "WHERE attrelid = 'chunks'::regclass "
                                "AND attname = 'embedding'") == "vector(384)"
        indexes = {r["indexname"] for r in await a.fetch(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'chunks'")}
        assert {"chunks_embedding_hnsw", "chunks_tsv_gin"} <= indexes
    finally:
        await a.close()
        await b.close()


async def test_an_embedder_of_another_dimension_is_refused(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await runner.migrate(conn, embedding_dim=384)
        with pytest.raises(MigrationError, match="384-dimensional vectors but the configured "
                                                 "embedder produces 1536"):
            await runner.migrate(conn, embedding_dim=1536)
    finally:
        await conn.close()
