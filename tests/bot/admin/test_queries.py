"""The console's read-only queries on a real, migrated Postgres: every filter of the
conversation list (a conversation it keeps, others it drops), keyset pagination, the URL query
of a filter, one conversation in order with its action runs, and the overview's figures."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from bot.admin.conversation import get_conversation
from bot.admin.overview import overview
from bot.admin.queries import ConversationFilter, list_conversations
from bot.admin.reviews import set_review
from bot.messages import Conversation, Filtered, Message, Reply, Source
from bot.protocols import Generated
from bot.transcript import Transcript
from migrations.runner import migrate

BLOCK = {"action": "block", "rail": "topic", "message": "no.", "reason": "off topic",
         "score": 0.9}
ALLOW = {"action": "allow", "rail": "injection", "message": "", "reason": "", "score": 0.01}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, embedding_dim=384)
    finally:
        await conn.close()
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield p
    await p.close()


def day(d: int, hour: int = 12, second: int = 0) -> datetime:
    return datetime(2024, 5, d, hour, 0, second, tzinfo=UTC)


async def exchange(pool: asyncpg.Pool, conv: Conversation, n: str, when: datetime, *,
                   user: str = "ann", text: str = "hello there", reply: str = "hi",
                   sources: tuple[Source, ...] = (), verdicts: tuple[dict[str, Any], ...] = (),
                   action: str | None = None, error: str = "", latency_ms: int = 100,
                   feedback: int | None = None, stage_ms: dict[str, int] | None = None,
                   filtered: tuple[Filtered, ...] = ()) -> str:
    """Record one exchange through the transcript, then move it to `when`; its message id."""
    message = Message(id=f"{conv.platform}:{conv.channel}:{n}", conversation=conv, user=user,
                      text=text)
    generated = Generated(text=reply, model="m1", tokens_in=7, tokens_out=3, error=error,
                          trace_id=f"trace-{n}" if error else "")
    await Transcript(pool).record(
        message, Reply(message_id=message.id, conversation=conv, text=reply, sources=sources),
        None if action else generated, latency_ms, list(verdicts), action=action,
        filtered=filtered, stage_ms=stage_ms)
    await pool.execute("UPDATE messages SET created_at = $2, feedback = CASE direction "
                       "WHEN 'out' THEN $3::smallint END WHERE message_id = $1",
                       message.id, when, feedback)
    await pool.execute("UPDATE conversations SET created_at = least(created_at, $2), "
                       "last_message_at = $2 WHERE id = $1", conv.key, when)
    return message.id


async def action_run(pool: asyncpg.Pool, conv: Conversation, message_id: str, action: str,
                     started: datetime, via: str = "command",
                     args: dict[str, Any] | None = None) -> None:
    """An audit row as actions/audit.py writes it: the message's id and address."""
    await pool.execute(
        "INSERT INTO action_runs (call_id, message_id, action, via, platform, workspace, "
        "channel, thread, user_id, args, status, trace_id, duration_ms, started_at) VALUES "
        "($1, $2, $3, $4, $5, $6, $7, $8, 'u', $9::jsonb, 'ok', 'tr', 12, $10)",
        f"{message_id}:{action}:{started}", message_id, action, via, conv.platform,
        conv.workspace, conv.channel, conv.thread, json.dumps(args or {}), started)


A = Conversation("slack", "general", "T1")
B = Conversation("webhook", "ops")
C = Conversation("discord", "general", "G1", thread="th")
D = Conversation("telegram", "chat9")
E = Conversation("webhook", "tools", "hooks")  # a tool run, no action reply


@pytest.fixture
async def five(pool: asyncpg.Pool) -> asyncpg.Pool:
    """Five conversations, each with what some filters look for."""
    await exchange(pool, A, "a1", day(1), user="ann", text="How do I reset my password?",
                   sources=(Source("file:///kb/pw.md", "Passwords", 0.8),), verdicts=(ALLOW,),
                   feedback=1, latency_ms=120)
    await exchange(pool, B, "b1", day(2), user="bob", text="deploy the cluster now",
                   verdicts=(BLOCK,), latency_ms=5000)
    c1 = await exchange(pool, C, "c1", day(3), user="cat", text="!ticket printer jammed",
                        action="create_ticket")
    await action_run(pool, C, c1, "create_ticket", day(3))
    await exchange(pool, D, "d1", day(4), user="dan", text="why so slow",
                   reply="Sorry, no answer now.", error="provider timeout", feedback=-1)
    e1 = await exchange(pool, E, "e1", datetime(2024, 5, 5, 23, 59, 59, tzinfo=UTC),
                        user="eve", text="what is the weather")
    await action_run(pool, E, e1, "weather", day(5), via="tool")
    assert await set_review(pool, A.key, tags=["billing"], reviewed=True, by="admin")
    assert await set_review(pool, B.key, tags=["bug", "billing"], reviewed=False, by="admin")
    return pool


async def keys(pool: asyncpg.Pool, flt: ConversationFilter) -> set[str]:
    page = await list_conversations(pool, flt)
    assert page.next_cursor is None
    return {r.id for r in page.rows}


ALL = {A.key, B.key, C.key, D.key, E.key}


@pytest.mark.parametrize(("flt", "expected"), [
    (ConversationFilter(), ALL),
    (ConversationFilter(platform="webhook"), {B.key, E.key}),
    (ConversationFilter(channel="general"), {A.key, C.key}),
    (ConversationFilter(user="bob"), {B.key}),
    (ConversationFilter(since=day(3, 0)), {C.key, D.key, E.key}),
    (ConversationFilter(until=day(3, 0)), {A.key, B.key}),
    (ConversationFilter(feedback="up"), {A.key}),
    (ConversationFilter(feedback="down"), {D.key}),
    (ConversationFilter(blocked=True), {B.key}),
    (ConversationFilter(action=True), {C.key, E.key}),  # an action's reply; a tool's run
    (ConversationFilter(error=True), {D.key}),
    (ConversationFilter(min_latency_ms=1000), {B.key}),
    (ConversationFilter(min_latency_ms=100), {A.key, B.key}),  # "slower than": not 100
    (ConversationFilter(text="passwords"), {A.key}),  # stemmed
    (ConversationFilter(text='"printer jammed"'), {C.key}),
    (ConversationFilter(text="zeppelin"), set()),
    (ConversationFilter(tag="billing"), {A.key, B.key}),
    (ConversationFilter(tag="bug"), {B.key}),
    (ConversationFilter(reviewed=True), {A.key}),
    (ConversationFilter(reviewed=False), ALL - {A.key}),
    (ConversationFilter(platform="webhook", action=True), {E.key}),
    (ConversationFilter(channel="general", text="password", feedback="up"), {A.key}),
    (ConversationFilter(channel="general", text="printer", feedback="up"), set()),
])
async def test_each_filter_keeps_what_it_names(five: asyncpg.Pool, flt: ConversationFilter,
                                               expected: set[str]) -> None:
    assert await keys(five, flt) == expected


async def test_until_from_the_query_includes_that_whole_day(five: asyncpg.Pool) -> None:
    flt = ConversationFilter.from_query({"since": "2024-05-04", "until": "2024-05-05"})
    assert await keys(five, flt) == {D.key, E.key}  # E at 23:59:59 on the 5th
    flt = ConversationFilter.from_query({"since": "2024-05-04", "until": "2024-05-04"})
    assert await keys(five, flt) == {D.key}


async def test_a_row_shows_the_first_inbound_message_and_the_review(pool: asyncpg.Pool
                                                                    ) -> None:
    await exchange(pool, A, "x1", day(1, 9), user="zed", text="first " + "x" * 300)
    await exchange(pool, A, "x2", day(1, 10), user="ann", text="second")
    await set_review(pool, A.key, tags=["Good", "bug"], reviewed=True, by="r")
    [row] = (await list_conversations(pool, ConversationFilter())).rows
    assert (row.id, row.platform, row.workspace, row.channel, row.thread) == (
        A.key, "slack", "T1", "general", None)
    assert (row.messages, row.user, row.first_text) == (4, "zed", ("first " + "x" * 300)[:200])
    assert (row.tags, row.reviewed, row.last_message_at) == (["bug", "good"], True, day(1, 10))


class CountingConnection:
    """Counts the queries a page takes (`fetch`); the transaction that sets the plan mode
    passes through."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn, self.calls = conn, 0

    def transaction(self) -> Any:
        return self.conn.transaction()

    async def execute(self, query: str, *args: Any) -> str:
        assert query.startswith("SET LOCAL ")  # nothing else runs beside the query
        result: str = await self.conn.execute(query, *args)
        return result

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        self.calls += 1
        result: list[asyncpg.Record] = await self.conn.fetch(query, *args)
        return result


async def test_a_page_is_one_statement_with_its_values_bound(five: asyncpg.Pool) -> None:
    flt = ConversationFilter(user="bob'; DROP TABLE messages; --", text="x", platform="slack")
    async with five.acquire() as conn:
        counting = CountingConnection(conn)
        page = await list_conversations(counting, flt)
    assert (page.rows, counting.calls) == ([], 1)
    assert await five.fetchval("SELECT count(*) FROM messages") == 10


async def test_keyset_pages_neither_repeat_nor_skip_rows_sharing_a_time(pool: asyncpg.Pool
                                                                       ) -> None:
    same = day(7)
    convs = [Conversation("slack", f"ch{n}") for n in range(7)]
    for n, conv in enumerate(convs):
        await exchange(pool, conv, f"s{n}", same)
    newer = Conversation("slack", "newest")
    await exchange(pool, newer, "new", day(8))
    seen: list[str] = []
    cursor = None
    sizes = []
    while True:
        page = await list_conversations(pool, ConversationFilter(platform="slack"), limit=3,
                                        cursor=cursor)
        sizes.append(len(page.rows))
        seen += [r.id for r in page.rows]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sizes == [3, 3, 2]
    assert seen == [newer.key, *sorted((c.key for c in convs), reverse=True)]
    # a page that ends exactly at the last row has no next page
    full = await list_conversations(pool, ConversationFilter(), limit=8)
    assert (len(full.rows), full.next_cursor) == (8, None)


@pytest.mark.parametrize("cursor", [
    "not a cursor!", "", base64.urlsafe_b64encode(b"not json").decode(),
    base64.urlsafe_b64encode(b"[1]").decode(), base64.urlsafe_b64encode(b'["1", "x"]').decode(),
    base64.urlsafe_b64encode(b"[1e3, \"x\"]").decode(), "A" * 5000,
])
async def test_a_malformed_cursor_is_a_value_error(pool: asyncpg.Pool, cursor: str) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await list_conversations(pool, ConversationFilter(), cursor=cursor)


def test_the_url_query_round_trips() -> None:
    query = {"platform": "slack", "channel": "general", "user": "U1", "since": "2024-05-01",
             "until": "2024-05-03", "feedback": "down", "blocked": "1", "action": "1",
             "error": "1", "min_latency_ms": "2500", "q": "reset password", "tag": "bug",
             "reviewed": "0"}
    flt = ConversationFilter.from_query(query)
    assert flt == ConversationFilter(
        platform="slack", channel="general", user="U1", since=day(1, 0), until=day(4, 0),
        feedback="down", blocked=True, action=True, error=True, min_latency_ms=2500,
        text="reset password", tag="bug", reviewed=False)
    assert flt.to_query() == query
    assert ConversationFilter.from_query(flt.to_query()) == flt
    # unset, empty and unknown parameters, and a time that is not a midnight
    assert ConversationFilter.from_query({"platform": "", "after": "x", "reviewed": ""}) \
        == ConversationFilter()
    assert ConversationFilter().to_query() == {}
    odd = ConversationFilter(since=datetime(2024, 5, 1, 10, 30, tzinfo=UTC))
    assert ConversationFilter.from_query(odd.to_query()) == odd


@pytest.mark.parametrize(("query", "message"), [
    ({"since": "2024-13-01"}, "since"), ({"until": "yesterday"}, "until"),
    ({"since": "2024-05-01T10:00:00"}, "since"),  # no offset
    ({"since": "2024-05-03", "until": "2024-05-01"}, "since"),
    ({"feedback": "meh"}, "feedback"), ({"blocked": "2"}, "blocked"),
    ({"reviewed": "maybe"}, "reviewed"), ({"min_latency_ms": "-5"}, "min_latency_ms"),
    ({"min_latency_ms": "1.5"}, "min_latency_ms"),
    ({"min_latency_ms": "99999999999"}, "min_latency_ms"), ({"q": "x" * 501}, "q"),
])
def test_a_bad_query_value_is_a_value_error_naming_it(query: dict[str, str],
                                                      message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConversationFilter.from_query(query)


def test_a_filter_needs_aware_times() -> None:
    with pytest.raises(ValueError, match="aware"):
        ConversationFilter(since=datetime(2024, 5, 1))


async def test_one_conversation_in_order_with_its_action_runs(pool: asyncpg.Pool) -> None:
    m1 = await exchange(pool, C, "q1", day(3, 9), user="cat", text="!ticket printer",
                        action="create_ticket")
    await action_run(pool, C, m1, "create_ticket", day(3, 9, 2), args={"title": "printer"})
    await action_run(pool, C, m1, "notify", day(3, 9, 1))
    await exchange(pool, C, "q2", day(3, 10), user="cat", text="and the toner?",
                   reply="See [1].", sources=(Source("file:///kb/t.md", "Toner", 0.7),),
                   verdicts=(ALLOW,), stage_ms={"retrieve": 30, "generate": 400},
                   filtered=(Filtered("file:///kb/x.md", "injection", 0.95, 120),))
    # an exchange whose reply row got the lower id: its inbound row still comes first
    for direction, text in (("out", "reply three"), ("in", "question three")):
        await pool.execute(
            "INSERT INTO messages (conversation_id, direction, message_id, user_id, text, "
            "created_at) VALUES ($1, $2, 'discord:x:q3', $3, $4, $5)",
            C.key, direction, "cat" if direction == "in" else None, text, day(3, 11))
    detail = await get_conversation(pool, C.key)
    assert detail is not None
    assert (detail.platform, detail.workspace, detail.channel, detail.thread) == (
        "discord", "G1", "general", "th")
    assert [(e.direction, e.text) for e in detail.entries] == [
        ("in", "!ticket printer"), ("out", "hi"), ("in", "and the toner?"), ("out", "See [1]."),
        ("in", "question three"), ("out", "reply three")]
    first, action_reply, _, answer = detail.entries[:4]
    assert [(r.action, r.via, r.status, r.args, r.started_at) for r in first.action_runs] == [
        ("notify", "command", "ok", {}, day(3, 9, 1)),
        ("create_ticket", "command", "ok", {"title": "printer"}, day(3, 9, 2))]
    assert action_reply.action == "create_ticket" and action_reply.action_runs == []
    assert answer.sources == [{"uri": "file:///kb/t.md", "title": "Toner", "score": 0.7,
                               "section": "", "page": None}]
    assert answer.verdicts == [ALLOW]
    assert answer.filtered == [{"uri": "file:///kb/x.md", "reason": "injection",
                                "score": 0.95, "removed_chars": 120}]
    assert list(answer.stage_ms.items()) == [("retrieve", 30), ("generate", 400)]
    assert first.stage_ms == {}
    assert (answer.model, answer.tokens_in, answer.tokens_out, answer.latency_ms) == (
        "m1", 7, 3, 100)
    assert first.user_id == "cat" and first.created_at == day(3, 9)
    # the last entries only, still in order
    last = await get_conversation(pool, C.key, max_entries=3)
    assert last is not None
    assert [e.text for e in last.entries] == ["See [1].", "question three", "reply three"]


async def test_an_unknown_conversation_is_none_and_an_empty_one_has_no_entries(
        pool: asyncpg.Pool) -> None:
    assert await get_conversation(pool, "slack:-:nope:-") is None
    await pool.execute("INSERT INTO conversations (id, platform, channel) "
                       "VALUES ('webhook:-:empty:-', 'webhook', 'empty')")
    await set_review(pool, "webhook:-:empty:-", tags=["x"], reviewed=True, by="ann")
    detail = await get_conversation(pool, "webhook:-:empty:-")
    assert detail is not None
    assert (detail.entries, detail.tags, detail.reviewed_by) == ([], ["x"], "ann")
    assert detail.reviewed_at is not None


async def test_the_overview_counts_each_day_with_zeros_on_empty_days(pool: asyncpg.Pool
                                                                     ) -> None:
    src = (Source("file:///kb/a.md", "A", 0.9),)
    await exchange(pool, A, "o1", day(1, 8), user="ann", sources=src, latency_ms=100,
                   feedback=1)
    await exchange(pool, A, "o2", day(1, 9), user="ann", latency_ms=300, feedback=-1)
    await exchange(pool, B, "o3", day(1, 10), user="bob", verdicts=(ALLOW, BLOCK),
                   latency_ms=200)
    await exchange(pool, C, "o4", day(3, 23), user="cat", action="create_ticket",
                   latency_ms=50)
    await exchange(pool, D, "o5", day(3, 1), user="dan", error="timeout", latency_ms=900,
                   verdicts=({**BLOCK, "rail": "pii"},))
    await exchange(pool, D, "o6", day(4, 1), user="dan")  # after the range
    await exchange(pool, D, "o7", datetime(2024, 4, 30, 23, 59, tzinfo=UTC))  # before it
    o = await overview(pool, days=3, today=date(2024, 5, 3))
    assert (o.since, o.until) == (date(2024, 5, 1), date(2024, 5, 3))
    assert [(p.day.day, p.platform, p.messages, p.conversations, p.users)
            for p in o.per_platform] == [
        (1, "discord", 0, 0, 0), (2, "discord", 0, 0, 0), (3, "discord", 1, 1, 1),
        (1, "slack", 2, 1, 1), (2, "slack", 0, 0, 0), (3, "slack", 0, 0, 0),
        (1, "telegram", 0, 0, 0), (2, "telegram", 0, 0, 0), (3, "telegram", 1, 1, 1),
        (1, "webhook", 1, 1, 1), (2, "webhook", 0, 0, 0), (3, "webhook", 0, 0, 0)]
    first, empty, third = o.per_day
    assert (first.day, first.replies, first.latency_p50_ms) == (date(2024, 5, 1), 3, 200.0)
    assert first.latency_p95_ms == pytest.approx(290.0)
    assert (first.from_knowledge, first.not_in_knowledge, first.by_action, first.errors,
            first.blocked, first.feedback_up, first.feedback_down) == (1, 1, 0, 0, 1, 1, 1)
    # o2 cites nothing: not in the knowledge base; o3 cites nothing either, but a rail
    # blocked it, which is not a knowledge-base miss
    assert (empty.day, empty.replies, empty.latency_p50_ms, empty.from_knowledge,
            empty.blocked) == (date(2024, 5, 2), 0, None, 0, 0)
    assert (third.replies, third.by_action, third.errors, third.from_knowledge,
            third.not_in_knowledge, third.blocked) == (2, 1, 1, 0, 0, 1)
    assert o.blocks_by_rail == {"topic": 1, "pii": 1}
    none = await overview(pool, days=2, today=date(2024, 6, 1))
    assert none.per_platform == [] and [d.replies for d in none.per_day] == [0, 0]
    assert none.blocks_by_rail == {}
    with pytest.raises(ValueError, match="days"):
        await overview(pool, days=0)


def test_the_cursor_is_url_safe() -> None:
    from bot.admin.queries import decode_cursor, encode_cursor

    cursor = encode_cursor(day(1, 10) + timedelta(microseconds=7), "slack:T/+:c h:é")
    assert cursor.replace("-", "").replace("_", "").isalnum()
    assert decode_cursor(cursor) == (day(1, 10) + timedelta(microseconds=7), "slack:T/+:c h:é")
