"""A conversation's review on a real Postgres: tags normalized and validated, reviewed set and
cleared, an unknown conversation refused."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from bot.admin.reviews import normalize_tags, set_review
from migrations.runner import migrate

KEY = "slack:T1:general:-"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, embedding_dim=384)
        await conn.execute("INSERT INTO conversations (id, platform, workspace, channel) "
                           "VALUES ($1, 'slack', 'T1', 'general')", KEY)
    finally:
        await conn.close()
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield p
    await p.close()


async def review_row(pool: asyncpg.Pool) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT tags, reviewed_at, reviewed_by, updated_at FROM conversation_reviews "
        "WHERE conversation_id = $1", KEY)
    return row


async def test_tags_are_normalized_and_reviewed_is_set_then_kept_then_cleared(
        pool: asyncpg.Pool) -> None:
    assert await set_review(pool, KEY, tags=[" Bug ", "billing", "BUG", "a-b_9"],
                            reviewed=True, by="ann")
    first = await review_row(pool)
    assert first is not None
    assert (first["tags"], first["reviewed_by"]) == (["a-b_9", "billing", "bug"], "ann")
    assert first["reviewed_at"] is not None
    # saved again by someone else: the tags change, who reviewed it and when do not
    assert await set_review(pool, KEY, tags=["good"], reviewed=True, by="bob")
    again = await review_row(pool)
    assert again is not None
    assert (again["tags"], again["reviewed_by"], again["reviewed_at"]) == (
        ["good"], "ann", first["reviewed_at"])
    assert again["updated_at"] >= first["updated_at"]
    # not reviewed: cleared; no tags
    assert await set_review(pool, KEY, tags=[], reviewed=False, by="bob")
    cleared = await review_row(pool)
    assert cleared is not None
    assert (cleared["tags"], cleared["reviewed_at"], cleared["reviewed_by"]) == ([], None, None)
    # reviewed again later: a new reviewer and time
    assert await set_review(pool, KEY, tags=[], reviewed=True, by="cat")
    last = await review_row(pool)
    assert last is not None and last["reviewed_by"] == "cat"


async def test_an_unknown_conversation_is_false_and_writes_nothing(pool: asyncpg.Pool) -> None:
    assert not await set_review(pool, "slack:T1:nope:-", tags=["x"], reviewed=True, by="ann")
    assert await pool.fetchval("SELECT count(*) FROM conversation_reviews") == 0


@pytest.mark.parametrize("tags", [
    [""], ["  "], ["has space"], ["x" * 41], ["émoji"], ["semi;colon"], ["a/b"],
    [f"t{n}" for n in range(21)], "bug",
])
async def test_bad_tags_are_a_value_error_and_write_nothing(pool: asyncpg.Pool,
                                                            tags: list[str]) -> None:
    with pytest.raises(ValueError, match="tag"):
        await set_review(pool, KEY, tags=tags, reviewed=False, by="ann")
    assert await review_row(pool) is None


def test_limits_are_inclusive() -> None:
    assert normalize_tags(["x" * 40]) == ["x" * 40]
    twenty = [f"t{n:02d}" for n in range(20)]
    assert normalize_tags([*twenty, "T00"]) == twenty  # 21 given, 20 distinct


async def test_marking_reviewed_needs_a_reviewer(pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError, match="reviewer"):
        await set_review(pool, KEY, tags=[], reviewed=True, by=" ")
    assert await set_review(pool, KEY, tags=["x"], reviewed=False, by="")
