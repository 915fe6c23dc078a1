"""The console's audit trail (bot/admin/audit.py) against real Postgres: rows written,
redacted, read back newest first; no other module writes the table."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from bot.admin import audit
from bot.admin.auth import Principal, Role
from migrations import runner

ROOT = Path(__file__).resolve().parents[3]
OPENAI_KEY = "sk-proj-" + "aB3xY9kLmN2pQ7rS5tU8vW1zC4dE6fG0"
CARD = "4111 1111 1111 1111"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(database_url)
    try:
        await runner.migrate(conn, embedding_dim=384)
    finally:
        await conn.close()
    created = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield created
    await created.close()


ALICE = Principal("alice@example.com", Role.ADMIN, "proxy", "proxy-x")
READER = Principal("readonly-token", Role.READ, "session", "s1")


async def test_rows_are_written_and_read_back_newest_first(pool: asyncpg.Pool) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    await audit.record(pool, ALICE, "document.upload", "handbook.pdf",
                       {"bytes": 1234, "version": 2, "replaced": True, "note": None},
                       remote_addr="10.0.0.7")
    await audit.record(pool, READER, "login")
    rows = await audit.recent(pool)
    assert [r.action for r in rows] == ["login", "document.upload"]
    login, upload = rows
    assert (login.actor, login.role, login.target, login.detail, login.remote_addr) == \
        ("readonly-token", "read", None, {}, None)
    assert (upload.actor, upload.role, upload.target, upload.remote_addr) == \
        ("alice@example.com", "admin", "handbook.pdf", "10.0.0.7")
    assert upload.detail == {"bytes": 1234, "version": 2, "replaced": True, "note": None}
    assert before < upload.at <= login.at < datetime.now(UTC) + timedelta(seconds=5)
    assert [r.action for r in await audit.recent(pool, limit=1)] == ["login"]


async def test_details_and_targets_are_redacted(pool: asyncpg.Pool) -> None:
    await audit.record(pool, ALICE, "settings.test", f"target {OPENAI_KEY}", {
        "api_key": "plain-value", "Authorization": "Bearer xyz", "csrf": "abc",
        "message": f"pay with {CARD} using {OPENAI_KEY}",
        "nested": {"password": "hunter2", "ids": ["doc-1", OPENAI_KEY]},
        "when": datetime(2024, 5, 1, tzinfo=UTC), "document": "27425fefec6545f99879724455f5fa13",
    })
    (row,) = await audit.recent(pool)
    stored = await pool.fetchval("SELECT detail::text || coalesce(target, '') FROM admin_audit")
    for secret in (OPENAI_KEY, "plain-value", "xyz", "hunter2", "4111", "abc"):
        assert secret not in stored
    assert row.target == "target [SECRET]"
    assert row.detail["api_key"] == "[REDACTED]"
    assert row.detail["Authorization"] == "[REDACTED]"
    assert row.detail["message"] == "pay with [CARD] using [SECRET]"
    assert row.detail["nested"] == {"password": "[REDACTED]", "ids": ["doc-1", "[SECRET]"]}
    assert row.detail["when"] == "2024-05-01 00:00:00+00:00"
    assert row.detail["document"] == "27425fefec6545f99879724455f5fa13"  # ids stay


async def test_long_texts_are_cut(pool: asyncpg.Pool) -> None:
    await audit.record(pool, ALICE, "review", "c" * 5000, {"tags": ["t" * 5000]})
    (row,) = await audit.recent(pool)
    assert row.target is not None and len(row.target) == audit.MAX_TEXT_CHARS
    assert len(row.detail["tags"][0]) == audit.MAX_TEXT_CHARS


def test_no_other_module_writes_admin_audit() -> None:
    writes = re.compile(r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+admin_audit", re.IGNORECASE)
    writers = {path.relative_to(ROOT).as_posix()
               for package in ("bot", "adapters", "actions", "knowledge")
               for path in (ROOT / package).rglob("*.py")
               if writes.search(path.read_text(encoding="utf-8"))}
    assert writers == {"bot/admin/audit.py"}
