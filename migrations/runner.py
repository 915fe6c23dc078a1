"""Apply the numbered SQL files of this package in order, each in its own transaction.

Applied versions are recorded in `schema_migrations`. The runner holds a session-level
Postgres advisory lock while it works, so two processes starting at once do not both migrate:
the second waits, then finds nothing left to do.

Templates: `{{embedding_dim}}` in a file is replaced by the embedder's vector length. After
migrating, the runner checks that `chunks.embedding` has that length, because an index built
for one embedder cannot serve another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from bot.errors import MigrationError

# pg_advisory_lock key: the first 8 bytes of sha256("switchboard.migrations"), as a bigint.
ADVISORY_LOCK_KEY = 0x2F6C_1B7E_5A44_0C13
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def discover() -> list[Migration]:
    """All migration files of this package, ordered by version.

    Raises:
        MigrationError: two files share a version number.
    """
    found: dict[int, Migration] = {}
    for entry in resources.files("migrations").iterdir():
        match = _NAME.match(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations numbered {version:04d}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def applied_versions(conn: asyncpg.Connection) -> set[int]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return set()
    return {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}


async def migrate(conn: asyncpg.Connection, *, embedding_dim: int) -> list[int]:
    """Bring the schema up to date; return the versions applied by this call.

    Args:
        conn: a connection to the target database (not inside a transaction).
        embedding_dim: the embedder's vector length, substituted for `{{embedding_dim}}`.

    Raises:
        MigrationError: a migration failed (it is rolled back), or the stored embedding length
            differs from `embedding_dim`.
    """
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY, name text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now())""")
        done = await applied_versions(conn)
        for migration in discover():
            if migration.version in done:
                continue
            sql = migration.sql.replace("{{embedding_dim}}", str(int(embedding_dim)))
            try:
                async with conn.transaction():
                    await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version, migration.name)
            except asyncpg.PostgresError as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name} failed: {exc}") from exc
            applied_now.append(migration.version)
        await check_dim(conn, embedding_dim)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    return applied_now


async def pending(conn: asyncpg.Connection) -> list[int]:
    """Versions not yet applied (empty when the schema is current)."""
    done = await applied_versions(conn)
    return [m.version for m in discover() if m.version not in done]


async def stored_dim(conn: asyncpg.Connection, *, timeout_s: float | None = None
                     ) -> int | None:
    """The vector length of `chunks.embedding`, or None before the table exists."""
    stored = await conn.fetchval("""SELECT atttypmod FROM pg_attribute
        WHERE attrelid = to_regclass('chunks') AND attname = 'embedding'""", timeout=timeout_s)
    return int(stored) if stored is not None else None


async def check_dim(conn: asyncpg.Connection, embedding_dim: int) -> None:
    """Raises MigrationError when `chunks.embedding` holds vectors of another length than
    `embedding_dim` (an index built for one embedder cannot serve another)."""
    stored = await stored_dim(conn)
    if stored is not None and stored != embedding_dim:
        raise MigrationError(
            f"chunks.embedding holds {stored}-dimensional vectors but the configured embedder "
            f"produces {embedding_dim}; use the embedder the knowledge base was built with, "
            "or ingest into a new database")
