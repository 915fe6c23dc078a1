"""A conversation's review: its tags and whether (by whom, when) it was reviewed. This module
is the only writer of `conversation_reviews`."""

from __future__ import annotations

import re
from collections.abc import Sequence

import asyncpg

MAX_TAGS = 20
_TAG = re.compile(r"[a-z0-9_-]{1,40}")

#: Upsert of a conversation's review; no row when the conversation does not exist. Marking a
#: reviewed conversation reviewed again keeps who reviewed it and when.
SET_REVIEW_SQL = """
INSERT INTO conversation_reviews AS r (conversation_id, tags, reviewed_at, reviewed_by)
SELECT c.id, $2::text[], CASE WHEN $3::boolean THEN now() END,
       CASE WHEN $3::boolean THEN $4::text END
FROM conversations c WHERE c.id = $1
ON CONFLICT (conversation_id) DO UPDATE SET
    tags = EXCLUDED.tags,
    reviewed_at = CASE WHEN $3::boolean THEN coalesce(r.reviewed_at, now()) END,
    reviewed_by = CASE WHEN $3::boolean THEN coalesce(r.reviewed_by, $4::text) END,
    updated_at = now()
RETURNING r.conversation_id"""


def normalize_tags(tags: Sequence[str]) -> list[str]:
    """The tags stripped, lower-cased, deduplicated and sorted.

    Raises:
        ValueError: a tag that is not 1-40 characters of a-z, 0-9, _ and - (after stripping
            and lower-casing), or more than 20 distinct tags.
    """
    if isinstance(tags, str):
        raise ValueError("tags: a list of tags, not one string")
    found: set[str] = set()
    for raw in tags:
        tag = str(raw).strip().lower()
        if not _TAG.fullmatch(tag):
            raise ValueError(f"tag {str(raw)[:50]!r}: 1-40 characters of a-z, 0-9, _ and -")
        found.add(tag)
    if len(found) > MAX_TAGS:
        raise ValueError(f"tags: at most {MAX_TAGS}, not {len(found)}")
    return sorted(found)


async def set_review(pool: asyncpg.Pool, conversation_id: str, *, tags: Sequence[str],
                     reviewed: bool, by: str) -> bool:
    """Replace the conversation's tags and set its reviewed state (`reviewed` False clears who
    reviewed it and when); False when there is no such conversation.

    Raises:
        ValueError: a bad tag (`normalize_tags`), or no reviewer named while marking reviewed.
    """
    normalized = normalize_tags(tags)
    if reviewed and not by.strip():
        raise ValueError("by: the reviewer's name")
    if "\x00" in conversation_id:  # no id holds one (PostgreSQL text cannot)
        return False
    done = await pool.fetchval(SET_REVIEW_SQL, conversation_id, normalized, reviewed,
                               by.strip())
    return done is not None
