"""The console's overview: figures per UTC day over a range of days, from the transcript.

Three statements (module constants), each one scan of the range's transcript rows of one
direction through the index on (UTC day, direction) (migrations/0005_admin.sql): inbound
traffic per day and platform, replies per day, and rail blocks by rail. Days without rows are
filled with zeros here. At 1 million transcript rows over 60 days, 14 days take ~0.4 s
(bench/admin.py): a page to cache, not to poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg

#: Inbound messages per UTC day and platform, with distinct conversations and users; the
#: inner grouping shrinks the rows before the join and the distinct counts' sorts.
PER_PLATFORM_SQL = """
SELECT g.day, c.platform, sum(g.n)::bigint AS messages,
       count(DISTINCT g.conversation_id) AS conversations, count(DISTINCT g.user_id) AS users
FROM (SELECT (m.created_at AT TIME ZONE 'UTC')::date AS day, m.conversation_id, m.user_id,
             count(*) AS n
      FROM messages m
      WHERE (m.created_at AT TIME ZONE 'UTC')::date BETWEEN $1 AND $2 AND m.direction = 'in'
      GROUP BY 1, 2, 3) AS g
JOIN conversations c ON c.id = g.conversation_id
GROUP BY 1, 2"""

#: Replies per UTC day: latency percentiles (replies that recorded one) and where they came
#: from. A model reply is one neither an action wrote nor a model failure left.
PER_DAY_SQL = """
SELECT (m.created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS replies,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY m.latency_ms) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY m.latency_ms) AS p95,
       count(*) FILTER (WHERE m.action IS NULL AND m.error IS NULL AND m.sources <> '[]')
           AS from_knowledge,
       count(*) FILTER (WHERE m.action IS NULL AND m.error IS NULL AND m.sources = '[]'
                        AND NOT m.verdicts @> '[{"action": "block"}]') AS not_in_knowledge,
       count(*) FILTER (WHERE m.action IS NOT NULL) AS by_action,
       count(*) FILTER (WHERE m.error IS NOT NULL) AS errors,
       count(*) FILTER (WHERE m.verdicts @> '[{"action": "block"}]') AS blocked,
       count(*) FILTER (WHERE m.feedback > 0) AS feedback_up,
       count(*) FILTER (WHERE m.feedback < 0) AS feedback_down
FROM messages m
WHERE (m.created_at AT TIME ZONE 'UTC')::date BETWEEN $1 AND $2 AND m.direction = 'out'
GROUP BY 1"""

#: Verdicts "block" over the range, by rail (a reply blocked by two rails counts for each).
BLOCKS_BY_RAIL_SQL = """
SELECT coalesce(v->>'rail', '') AS rail, count(*) AS blocks
FROM messages m CROSS JOIN LATERAL jsonb_array_elements(m.verdicts) AS v
WHERE m.verdicts @> '[{"action": "block"}]'
  AND (m.created_at AT TIME ZONE 'UTC')::date BETWEEN $1 AND $2
  AND v->>'action' = 'block'
GROUP BY 1"""


@dataclass(frozen=True)
class DayPlatform:
    """Inbound messages of one UTC day on one platform; conversations and users distinct."""

    day: date
    platform: str
    messages: int
    conversations: int
    users: int


@dataclass(frozen=True)
class DayStats:
    """Replies of one UTC day.

    Attributes:
        replies: every reply.
        latency_p50_ms, latency_p95_ms: over the replies that recorded a latency; None
            without any.
        from_knowledge: model replies (not by an action, no model error) citing a source.
        not_in_knowledge: model replies citing none (a rail's block is neither).
        by_action: replies an action wrote.
        errors: replies recording a model failure.
        blocked: replies with a rail verdict "block".
        feedback_up, feedback_down: replies rated +1 / -1.
    """

    day: date
    replies: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    from_knowledge: int
    not_in_knowledge: int
    by_action: int
    errors: int
    blocked: int
    feedback_up: int
    feedback_down: int


@dataclass(frozen=True)
class Overview:
    """Figures of the UTC days `since` to `until` (both included). `per_platform` holds every
    day for each platform seen in the range, `per_day` every day (zeros where none)."""

    since: date
    until: date
    per_platform: list[DayPlatform]
    per_day: list[DayStats]
    blocks_by_rail: dict[str, int]


async def overview(pool: asyncpg.Pool, *, days: int = 14, today: date | None = None
                   ) -> Overview:
    """The last `days` UTC days up to `today` (default: today in UTC), both included.

    Raises:
        ValueError: `days` below 1.
    """
    if days < 1:
        raise ValueError("days: 1 or more")
    until = today or datetime.now(UTC).date()
    since = until - timedelta(days=days - 1)
    platform_rows = await pool.fetch(PER_PLATFORM_SQL, since, until)
    day_rows = await pool.fetch(PER_DAY_SQL, since, until)
    rail_rows = await pool.fetch(BLOCKS_BY_RAIL_SQL, since, until)
    all_days = [since + timedelta(days=n) for n in range(days)]

    seen = {(r["day"], r["platform"]): r for r in platform_rows}
    per_platform = []
    for platform in sorted({r["platform"] for r in platform_rows}):
        for day in all_days:
            r = seen.get((day, platform))
            per_platform.append(DayPlatform(
                day, platform, r["messages"] if r else 0, r["conversations"] if r else 0,
                r["users"] if r else 0))

    by_day: dict[date, Any] = {r["day"]: r for r in day_rows}
    per_day = []
    for day in all_days:
        r = by_day.get(day)
        if r is None:
            per_day.append(DayStats(day, 0, None, None, 0, 0, 0, 0, 0, 0, 0))
            continue
        per_day.append(DayStats(
            day, r["replies"], r["p50"], r["p95"], r["from_knowledge"],
            r["not_in_knowledge"], r["by_action"], r["errors"], r["blocked"],
            r["feedback_up"], r["feedback_down"]))
    return Overview(since, until, per_platform, per_day,
                    {r["rail"]: r["blocks"] for r in rail_rows})

