"""The admin console's conversation list: filters (`ConversationFilter`, from and to URL
parameters) and pages of conversations, newest first, by keyset pagination. One
conversation is `bot.admin.conversation`, the overview's figures `bot.admin.overview`.

Every query is one SQL statement with its values bound as parameters. The list's statement is
composed from constant fragments (`LIST_SQL`, `CONDITIONS`): each combination of filters is its
own statement text, so the planner sees only the conditions in use and picks the index that
fits them (migrations/0005_admin.sql; measured by bench/admin.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import asyncpg

__all__ = ["ConversationFilter", "ConversationPage", "ConversationRow", "list_conversations",
           "list_statement"]

#: One page of the list: the page's conversations first (`{where}`: the filters' conditions
#: joined by AND), then per-row figures by LATERAL lookups on those rows only.
LIST_SQL = """
SELECT p.id, p.platform, p.workspace, p.channel, p.thread, p.created_at, p.last_message_at,
       n.messages, f.user_id, coalesce(left(f.text, 200), '') AS first_text,
       coalesce(r.tags, '{{}}') AS tags, r.reviewed_at IS NOT NULL AS reviewed
FROM (SELECT c.id, c.platform, c.workspace, c.channel, c.thread, c.created_at,
             c.last_message_at
      FROM conversations c
      WHERE {where}
      ORDER BY c.last_message_at DESC, c.id DESC
      LIMIT {limit}) AS p
CROSS JOIN LATERAL (SELECT count(*) AS messages FROM messages m
                    WHERE m.conversation_id = p.id) AS n
LEFT JOIN LATERAL (SELECT m.user_id, m.text FROM messages m
                   WHERE m.conversation_id = p.id AND m.direction = 'in'
                   ORDER BY m.created_at, m.id LIMIT 1) AS f ON true
LEFT JOIN conversation_reviews r ON r.conversation_id = p.id
ORDER BY p.last_message_at DESC, p.id DESC"""

#: The condition of each filter on a conversation `c`; each `$?` becomes a bound parameter.
#: The message conditions are semi-joins the planner may run either way: probing the partial
#: indexes per conversation while walking the newest first, or collecting the matching
#: conversations from the index (rare matches) and sorting those.
CONDITIONS: dict[str, str] = {
    "cursor": "(c.last_message_at, c.id) < ($?, $?)",
    "platform": "c.platform = $?",
    "channel": "c.channel = $?",
    "since": "c.last_message_at >= $?",
    "until": "c.last_message_at < $?",
    "user": "EXISTS (SELECT FROM messages m WHERE m.conversation_id = c.id AND m.user_id = $?)",
    "feedback": "EXISTS (SELECT FROM messages m WHERE m.conversation_id = c.id "
                "AND m.feedback = $?::smallint)",
    "blocked": "EXISTS (SELECT FROM messages m WHERE m.conversation_id = c.id "
               "AND m.verdicts @> '[{\"action\": \"block\"}]')",
    # an action_runs row is in the conversation of the message it names, whose address it
    # keeps: its key (`Conversation.key`) is built from it. (Through that message's transcript
    # row instead, the planner hash-joins all of `messages`: 10x slower at 1M rows.)
    "action": "(EXISTS (SELECT FROM messages m WHERE m.conversation_id = c.id "
              "AND m.action IS NOT NULL) OR EXISTS (SELECT FROM action_runs a WHERE "
              "a.platform || ':' || coalesce(nullif(a.workspace, ''), '-') || ':' || a.channel "
              "|| ':' || coalesce(nullif(a.thread, ''), '-') = c.id))",
    "error": "EXISTS (SELECT FROM messages m WHERE m.conversation_id = c.id "
             "AND m.error IS NOT NULL)",
    "min_latency_ms": "EXISTS (SELECT FROM messages m WHERE m.conversation_id = c.id "
                      "AND m.direction = 'out' AND m.latency_ms > $?)",
    "text": "EXISTS (SELECT FROM messages m WHERE m.conversation_id = c.id "
            "AND m.tsv @@ websearch_to_tsquery('english', $?))",
    "tag": "EXISTS (SELECT FROM conversation_reviews r WHERE r.conversation_id = c.id "
           "AND r.tags @> ARRAY[$?::text])",
    "reviewed": "EXISTS (SELECT FROM conversation_reviews r WHERE r.conversation_id = c.id "
                "AND r.reviewed_at IS NOT NULL)",
    "not_reviewed": "NOT EXISTS (SELECT FROM conversation_reviews r "
                    "WHERE r.conversation_id = c.id AND r.reviewed_at IS NOT NULL)",
}

#: One conversation with its review and its last `$2` transcript rows (one result row per
#: transcript row; one row of NULL entry columns when it has none), in order: by time, then
#: the rows of one exchange (written in one statement: the same time and message id)
#: together, its 'in' row first. Inbound rows carry their action runs. Read backwards from
#: the index on (conversation_id, created_at): a long conversation costs its last rows only.


_MAX_LIMIT = 500
_MAX_VALUE_CHARS = 500
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TRUE, _FALSE = frozenset({"1", "true", "on", "yes"}), frozenset({"0", "false", "off", "no"})


@dataclass(frozen=True)
class ConversationFilter:
    """What the conversation list shows; every set field narrows it (AND).

    Attributes:
        platform, channel: the conversation's.
        user: a message of the conversation is by this user id.
        since, until: `since <= last_message_at < until` (aware datetimes).
        feedback: a reply of it was rated +1 ("up") / -1 ("down").
        blocked: a reply of it carries a rail verdict "block".
        action: an action ran: a reply written by an action, or an audit row (`action_runs`)
            for one of its inbound messages (a tool the model called).
        error: a reply of it records a model failure.
        min_latency_ms: a reply of it took longer than this.
        text: full-text search over its messages (`websearch_to_tsquery` syntax: words,
            "quoted phrases", -excluded, or).
        tag: its review carries this tag.
        reviewed: marked reviewed (True) / not (False).
    """

    platform: str | None = None
    channel: str | None = None
    user: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    feedback: Literal["up", "down"] | None = None
    blocked: bool = False
    action: bool = False
    error: bool = False
    min_latency_ms: int | None = None
    text: str | None = None
    tag: str | None = None
    reviewed: bool | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise ValueError(f"{name}: an aware datetime is needed")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since: must be before until")
        if self.feedback not in (None, "up", "down"):
            raise ValueError("feedback: up or down")
        if self.min_latency_ms is not None and not 0 <= self.min_latency_ms <= 2**31 - 1:
            raise ValueError("min_latency_ms: a whole number of milliseconds, 0 or more")

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> ConversationFilter:
        """The filter of the list page's URL query (see `to_query`). Empty values are unset;
        other parameters are ignored. `since`/`until` are UTC days (YYYY-MM-DD), `until`
        included, or ISO 8601 times with an offset (what `to_query` writes for times that are
        not midnight).

        Raises:
            ValueError: a value that is not one of the parameter's (the message names it).
        """
        def text(name: str) -> str | None:
            value = (query.get(name) or "").strip()
            if len(value) > _MAX_VALUE_CHARS:
                raise ValueError(f"{name}: at most {_MAX_VALUE_CHARS} characters")
            if "\x00" in value:  # PostgreSQL text cannot hold it
                raise ValueError(f"{name}: a NUL character")
            return value or None

        def flag(name: str) -> bool | None:
            value = (query.get(name) or "").strip().lower()
            if not value:
                return None
            if value in _TRUE or value in _FALSE:
                return value in _TRUE
            raise ValueError(f"{name}: 1 or 0, not {value[:40]!r}")

        feedback = text("feedback")
        if feedback not in (None, "up", "down"):
            raise ValueError(f"feedback: up or down, not {feedback[:40]!r}")
        latency = text("min_latency_ms")
        if latency is not None and not (latency.isascii() and latency.isdigit()):
            raise ValueError(f"min_latency_ms: a whole number of milliseconds, not "
                             f"{latency[:40]!r}")
        return cls(platform=text("platform"), channel=text("channel"), user=text("user"),
                   since=_instant(text("since"), "since", end_of_day=False),
                   until=_instant(text("until"), "until", end_of_day=True),
                   feedback="up" if feedback == "up" else "down" if feedback else None,
                   blocked=bool(flag("blocked")), action=bool(flag("action")),
                   error=bool(flag("error")),
                   min_latency_ms=int(latency) if latency is not None else None,
                   text=text("q"), tag=tag.lower() if (tag := text("tag")) else None,
                   reviewed=flag("reviewed"))

    def to_query(self) -> dict[str, str]:
        """The URL query of this filter (set fields only): `from_query(to_query())` is it."""
        values: dict[str, object] = {
            "platform": self.platform, "channel": self.channel, "user": self.user,
            "since": self.since and _write_instant(self.since, end_of_day=False),
            "until": self.until and _write_instant(self.until, end_of_day=True),
            "feedback": self.feedback, "blocked": self.blocked or None,
            "action": self.action or None, "error": self.error or None,
            "min_latency_ms": self.min_latency_ms, "q": self.text, "tag": self.tag,
            "reviewed": self.reviewed}
        return {k: str(int(v)) if isinstance(v, bool) else str(v)
                for k, v in values.items() if v is not None}


def _instant(value: str | None, name: str, *, end_of_day: bool) -> datetime | None:
    """A query's day (midnight UTC starting it, or ending it for `end_of_day`) or time."""
    if value is None:
        return None
    try:
        if _DATE.match(value):
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(
                days=1 if end_of_day else 0)
        moment = datetime.fromisoformat(value)
        if moment.utcoffset() is None:
            raise ValueError
        return moment.astimezone(UTC)  # out of range there (year 0 or 10000): OverflowError
    except (ValueError, OverflowError):
        raise ValueError(f"{name}: a date YYYY-MM-DD, not {value[:40]!r}") from None


def _write_instant(moment: datetime, *, end_of_day: bool) -> str:
    utc = moment.astimezone(UTC)
    if utc.time() == datetime.min.time():
        return (utc.date() - timedelta(days=1 if end_of_day else 0)).isoformat()
    return utc.isoformat()


@dataclass(frozen=True)
class ConversationRow:
    """One line of the list. `user` and `first_text` (at most 200 characters) are those of
    its first inbound message (None and "" when it has none)."""

    id: str
    platform: str
    workspace: str | None
    channel: str
    thread: str | None
    created_at: datetime
    last_message_at: datetime
    messages: int
    user: str | None
    first_text: str
    tags: list[str]
    reviewed: bool


@dataclass(frozen=True)
class ConversationPage:
    """`next_cursor` (opaque, URL-safe) asks for the page after this one; None on the last."""

    rows: list[ConversationRow]
    next_cursor: str | None


def _where(flt: ConversationFilter, after: tuple[datetime, str] | None
           ) -> tuple[list[str], list[object]]:
    """The conditions of `flt` (and of the cursor) and their parameters, in order."""
    conds: list[str] = []
    args: list[object] = []

    def add(name: str, *values: object) -> None:
        sql = CONDITIONS[name]
        for value in values:
            args.append(value)
            sql = sql.replace("$?", f"${len(args)}", 1)
        conds.append(sql)

    if after is not None:
        add("cursor", *after)
    for name in ("platform", "channel", "since", "until", "user", "min_latency_ms", "text",
                 "tag"):
        if (value := getattr(flt, name)) is not None:
            add(name, value)
    if flt.feedback is not None:
        add("feedback", 1 if flt.feedback == "up" else -1)
    for name in ("blocked", "action", "error"):
        if getattr(flt, name):
            add(name)
    if flt.reviewed is not None:
        add("reviewed" if flt.reviewed else "not_reviewed")
    return conds, args


def encode_cursor(last_message_at: datetime, conversation_id: str) -> str:
    """The cursor of the page after a row (URL-safe base64 of JSON, no padding)."""
    delta = last_message_at - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    raw = json.dumps([micros, conversation_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(last_message_at, id) of a cursor from `encode_cursor`.

    Raises:
        ValueError: not such a cursor.
    """
    try:
        if len(cursor) > 4096 or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, conversation_id = json.loads(raw)
        if type(micros) is not int or not isinstance(conversation_id, str) \
                or "\x00" in conversation_id:
            raise ValueError
        return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros),
                conversation_id)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise ValueError("malformed page cursor") from None


def list_statement(flt: ConversationFilter, *, limit: int, cursor: str | None
                   ) -> tuple[str, list[object]]:
    """The list's SQL statement for `flt` and its parameters (at most `limit` rows).

    Raises:
        ValueError: a malformed cursor.
    """
    after = decode_cursor(cursor) if cursor is not None else None
    conds, args = _where(flt, after)
    args.append(limit)
    return LIST_SQL.format(where=" AND ".join(conds) or "true", limit=f"${len(args)}"), args


async def _fetch_planned_for_values(conn: asyncpg.Connection, sql: str, args: list[object]
                                    ) -> list[asyncpg.Record]:
    """`sql` planned for these values every time: the best plan depends on them (a rare
    word: the text index; a common one: walk the newest conversations), and the prepared
    statement's generic plan took 2 s for a rare word at a million rows (bench/admin.py)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        records: list[asyncpg.Record] = await conn.fetch(sql, *args)
    return records


async def list_conversations(pool: asyncpg.Pool | asyncpg.Connection, flt: ConversationFilter,
                             *, limit: int = 50, cursor: str | None = None
                             ) -> ConversationPage:
    """A page of the conversations `flt` selects, newest first by (last_message_at, id);
    `cursor` (a page's `next_cursor`) continues after that page's last row (keyset
    pagination: a page never repeats or skips a row, even among equal times).

    Raises:
        ValueError: a malformed cursor, or `limit` outside 1-500.
    """
    if not 1 <= limit <= _MAX_LIMIT:
        raise ValueError(f"limit: 1 to {_MAX_LIMIT}")
    sql, args = list_statement(flt, limit=limit + 1, cursor=cursor)
    if isinstance(pool, asyncpg.Pool):
        async with pool.acquire() as conn:
            records = await _fetch_planned_for_values(conn, sql, args)
    else:  # one connection (bench/admin.py measures on one)
        records = await _fetch_planned_for_values(pool, sql, args)
    rows = [ConversationRow(
        id=r["id"], platform=r["platform"], workspace=r["workspace"], channel=r["channel"],
        thread=r["thread"], created_at=r["created_at"], last_message_at=r["last_message_at"],
        messages=r["messages"], user=r["user_id"], first_text=r["first_text"],
        tags=list(r["tags"]), reviewed=r["reviewed"]) for r in records[:limit]]
    more = len(records) > limit
    return ConversationPage(rows, encode_cursor(rows[-1].last_message_at, rows[-1].id)
                            if more else None)
