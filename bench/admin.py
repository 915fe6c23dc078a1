"""The admin console's queries at scale: the conversation list with each filter, one
conversation, and the overview, over synthetic transcript rows (issue 16: the list answers in
under 100 ms at p95 with 1 million transcript rows).

    python -m bench.admin [--rows 1000000] [--database-url URL] [--runs 50] [--explain]

Database: a scratch database created on `--database-url`'s server (or DATABASE_URL's) and
dropped afterwards; without either, an embedded Postgres in a temporary directory. The schema
is this checkout's migrations. The rows are generated in SQL (`generate_series`, seeded
`random()`): about 10 messages per conversation over 60 days, 4 platforms, 200 channels, 20k
users; replies: ~1% blocked by a rail, ~0.5% a model error, ~5% written by an action (with its
`action_runs` row; ~0.5% of model replies ran a tool), ~3% rated (2% up, 1% down), latency
lognormal around 900 ms; texts from a small vocabulary ("password" is common, "zeppelin"
rare); ~3% of conversations reviewed, some tagged. The migration's secondary indexes are
dropped while loading and built again from their definitions (timed), then VACUUM ANALYZE.

Each case runs `--warmup` times, then `--runs` times on one connection (so the statement cache
and Postgres' plan cache behave as in a long-running console); printed: p50 and p95 in ms,
the rows of the page, whether p95 is under the 100 ms target, and the indexes it scanned
(`pg_stat_user_indexes`). `--explain` also prints each list case's EXPLAIN (ANALYZE, BUFFERS).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bot.admin.conversation import get_conversation
from bot.admin.overview import overview
from bot.admin.queries import ConversationFilter, list_conversations, list_statement
from bot.services import EmbeddedPostgres
from migrations.runner import migrate

TARGET_MS = 100.0
TABLES = ("conversations", "messages", "action_runs", "conversation_reviews")
#: the bench's "now": fixed, so runs are comparable
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

#: Words of the generated texts, most frequent first (a word's index is drawn skewed low).
VOCABULARY = (
    "how do i the my to a is what can password reset account login error deploy build "
    "release invoice billing refund plan team workspace channel export import report "
    "dashboard api key token webhook limit rate timeout server database backup restore "
    "migration schema index query slow fast cache memory disk cpu region cluster node pod "
    "service config setting admin user role permission access invite remove delete update "
    "change add create ticket issue bug feature request support help docs guide example "
    "policy security audit log trace metric alert notify email slack discord telegram "
    "calendar schedule job task queue retry failed success pending status version upgrade "
    "downgrade install linux windows mac mobile browser chrome firefox proxy network dns "
    "certificate ssl domain storage bucket file upload download size quota usage cost"
).split()

SETUP_SQL = [
    "SELECT setseed(0.42)",
    # sentences: 4000 of 5-14 words, skewed towards the first words of the vocabulary
    """CREATE TEMP TABLE gen_sentence AS
       SELECT n, (SELECT string_agg(($1::text[])[1 + floor(power(random(), 2) * $2)::int],
                                    ' ')
                  FROM generate_series(1, 5 + n % 10)) AS text
       FROM generate_series(0, 3999) AS n""",
    # conversations: ~5 exchanges each (1-9), within 60 days before NOW
    """CREATE TEMP TABLE gen_conversation AS
       SELECT i, p.platform, 'w' || (i % 7) AS workspace, 'c' || floor(random() * 200)::int
                  AS channel, 't' || i AS thread,
              'u' || floor(random() * 20000)::int AS user_id, 1 + floor(random() * 9)::int
                  AS exchanges,
              $1::timestamptz - interval '60 days' * random() - interval '2 hours' AS start
       FROM generate_series(1, $2::int) AS i
       CROSS JOIN LATERAL (SELECT (ARRAY['slack', 'slack', 'slack', 'slack', 'webhook',
                                         'webhook', 'webhook', 'discord', 'discord',
                                         'telegram'])[1 + floor(random() * 10)::int + i * 0]
                                  AS platform) AS p""",
    """CREATE TEMP TABLE gen_exchange AS
       SELECT row_number() OVER () AS e, c.*, j,
              c.start + make_interval(secs => (j - 1) * 600 + random() * 300) AS at,
              random() AS kind, random() AS rated, floor(random() * 4000)::int AS q,
              floor(random() * 4000)::int AS a, random() AS u1, random() AS u2,
              random() AS u3, random() AS u4
       FROM gen_conversation c CROSS JOIN LATERAL generate_series(1, c.exchanges) AS j""",
    "CREATE INDEX ON gen_exchange (i, j)",
]

LOAD_SQL = [
    """INSERT INTO conversations (id, platform, workspace, channel, thread, created_at,
                                  last_message_at)
       SELECT c.platform || ':' || c.workspace || ':' || c.channel || ':' || c.thread,
              c.platform, c.workspace, c.channel, c.thread, f.at, l.at
       FROM gen_conversation c
       JOIN gen_exchange f ON f.i = c.i AND f.j = 1
       JOIN gen_exchange l ON l.i = c.i AND l.j = c.exchanges
       ORDER BY f.at""",
    # kind: < .005 model error, < .055 action, < .065 blocked, else a model answer (70% with
    # sources; < .07 of those ran a tool); rated: < .02 up, < .03 down (model answers only)
    """INSERT INTO messages (conversation_id, direction, message_id, user_id, text, sources,
                             verdicts, model, latency_ms, tokens_in, tokens_out, feedback,
                             created_at, error, trace_id, action, filtered, stage_ms)
       SELECT x.platform || ':' || x.workspace || ':' || x.channel || ':' || x.thread, d.dir,
              x.platform || ':' || x.workspace || ':m' || x.e,
              CASE WHEN d.dir = 'in' THEN CASE WHEN x.u3 < 0.1
                   THEN 'u' || floor(x.u4 * 20000)::int ELSE x.user_id END END,
              CASE WHEN d.dir = 'in' THEN sq.text || CASE WHEN x.e % 20011 = 7
                   THEN ' zeppelin' ELSE '' END || '?'
                   WHEN x.kind < 0.005 THEN 'Sorry, I cannot answer right now.'
                   WHEN x.kind < 0.055 THEN 'Ticket created: ' || sa.text
                   WHEN x.kind < 0.065 THEN 'I cannot help with that.'
                   ELSE initcap(sa.text) || '.' END,
              CASE WHEN d.dir = 'out' AND x.kind >= 0.065 AND x.u4 < 0.7 THEN jsonb_build_array(
                   jsonb_build_object('uri', 'file:///kb/doc' || (x.q % 300) || '.md',
                                      'title', 'Doc ' || (x.q % 300), 'score',
                                      round((0.5 + x.u2 / 2)::numeric, 3), 'section', '',
                                      'page', NULL)) ELSE '[]' END,
              CASE WHEN d.dir = 'in' THEN '[]'
                   WHEN x.kind >= 0.055 AND x.kind < 0.065 THEN jsonb_build_array(
                   jsonb_build_object('action', 'block', 'rail',
                       (ARRAY['injection', 'topic', 'pii', 'toxicity'])[1 + x.q % 4],
                       'message', 'I cannot help with that.', 'reason', 'matched',
                       'score', 0.91))
                   ELSE '[{"action": "allow", "rail": "injection", "message": "",
                          "reason": "", "score": 0.02}]' END,
              CASE WHEN d.dir = 'out' AND (x.kind < 0.005 OR x.kind >= 0.065)
                   THEN 'gpt-4o-mini' END,
              CASE WHEN d.dir = 'in' THEN NULL
                   WHEN x.kind < 0.005 THEN 30000 + floor(x.u1 * 500)::int
                   WHEN x.kind < 0.065 THEN 20 + floor(x.u1 * 200)::int
                   ELSE least(600000, exp(ln(900) + 0.5 * sqrt(-2 * ln(1 - x.u1))
                                         * cos(2 * pi() * x.u2))::int) END,
              CASE WHEN d.dir = 'out' AND x.kind >= 0.065 THEN 300 + x.q % 1500 END,
              CASE WHEN d.dir = 'out' AND x.kind >= 0.065 THEN 20 + x.a % 400 END,
              CASE WHEN d.dir = 'out' AND x.kind >= 0.065 THEN
                   CASE WHEN x.rated < 0.02 THEN 1 WHEN x.rated < 0.03 THEN -1 END END,
              x.at,
              CASE WHEN d.dir = 'out' AND x.kind < 0.005 THEN 'provider timeout' END,
              CASE WHEN d.dir = 'out' THEN md5(x.e::text) END,
              CASE WHEN d.dir = 'out' AND x.kind >= 0.005 AND x.kind < 0.055
                   THEN (ARRAY['create_ticket', 'help', 'status'])[1 + x.q % 3] END,
              '[]',
              CASE WHEN d.dir = 'in' THEN '[]' ELSE jsonb_build_array(
                   jsonb_build_array('retrieve', 20 + x.q % 60),
                   jsonb_build_array('generate', 400 + x.a % 900),
                   jsonb_build_array('rails', 5 + x.q % 20)) END
       FROM gen_exchange x
       CROSS JOIN (VALUES ('in'), ('out')) AS d (dir)
       JOIN gen_sentence sq ON sq.n = x.q
       JOIN gen_sentence sa ON sa.n = x.a
       ORDER BY x.at, x.e, d.dir""",
    """INSERT INTO action_runs (call_id, message_id, action, via, platform, workspace, channel,
                                thread, user_id, args, status, trace_id, attempts, duration_ms,
                                started_at, finished_at)
       SELECT 'call-' || x.e, x.platform || ':' || x.workspace || ':m' || x.e,
              CASE WHEN x.kind < 0.055 THEN (ARRAY['create_ticket', 'help', 'status'])[1 + x.q % 3]
                   ELSE 'lookup_order' END,
              CASE WHEN x.kind < 0.055 THEN 'command' ELSE 'tool' END,
              x.platform, x.workspace, x.channel, x.thread, x.user_id,
              jsonb_build_object('title', 'ticket ' || x.e), 'ok', md5(x.e::text), 1,
              20 + x.q % 200, x.at, x.at + interval '50 ms'
       FROM gen_exchange x
       WHERE (x.kind >= 0.005 AND x.kind < 0.055) OR (x.kind >= 0.065 AND x.u2 < 0.005)
       ORDER BY x.at""",
    """INSERT INTO conversation_reviews (conversation_id, tags, reviewed_at, reviewed_by)
       SELECT c.platform || ':' || c.workspace || ':' || c.channel || ':' || c.thread,
              CASE WHEN c.i % 7 = 0 THEN ARRAY['billing'] WHEN c.i % 7 = 1 THEN ARRAY['bug']
                   WHEN c.i % 7 = 2 THEN ARRAY['good', 'docs'] WHEN c.i % 97 = 3
                   THEN ARRAY['hallucination'] ELSE '{}' END,
              CASE WHEN c.i % 4 <> 0 THEN c.start + interval '1 day' END,
              CASE WHEN c.i % 4 <> 0 THEN 'admin' END
       FROM gen_conversation c WHERE c.i % 25 = 0 OR c.i % 97 = 3""",
]

INDEXES_SQL = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
WHERE t.relname = ANY($1::text[])
  AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)
ORDER BY 1"""

INDEX_SCANS_SQL = """
SELECT indexrelname AS name, idx_scan FROM pg_stat_user_indexes
WHERE relname = ANY($1::text[])"""


@dataclass
class Result:
    name: str
    samples_ms: list[float]
    rows: int
    indexes: list[str]


def pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.asynccontextmanager
async def scratch_database(url: str | None) -> AsyncIterator[str]:
    """A new database on `url`'s server (dropped afterwards), or an embedded server's."""
    if url is None:
        with tempfile.TemporaryDirectory(prefix="switchboard-bench-admin-") as tmp:
            pg = EmbeddedPostgres(Path(tmp))
            try:
                yield await asyncio.to_thread(pg.start)
            finally:
                await asyncio.to_thread(pg.stop)
        return
    name = f"bench_admin_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def generate(conn: asyncpg.Connection, rows: int) -> None:
    """`rows` transcript rows (about: ~10 per conversation), with the secondary indexes built
    after the load."""
    await conn.execute("SET work_mem = '256MB'")
    await conn.execute("SET maintenance_work_mem = '512MB'")
    started = time.perf_counter()
    params: list[tuple[Any, ...]] = [(), (list(VOCABULARY), len(VOCABULARY)),
                                     (NOW, max(1, rows // 10)), (), ()]
    for sql, values in zip(SETUP_SQL, params, strict=True):
        await conn.execute(sql, *values)
    indexes = await conn.fetch(INDEXES_SQL, list(TABLES))
    for r in indexes:
        await conn.execute(f"DROP INDEX {r['name']}")
    for sql in LOAD_SQL:
        await conn.execute(sql)
    loaded = time.perf_counter()
    for r in indexes:
        await conn.execute(r["def"])
    built = time.perf_counter()
    for table in TABLES:
        await conn.execute(f"VACUUM ANALYZE {table}")
    print(f"generated in {loaded - started:.0f} s, indexes built in {built - loaded:.0f} s, "
          f"vacuum analyze {time.perf_counter() - built:.0f} s", flush=True)


async def sizes(conn: asyncpg.Connection) -> None:
    for table in TABLES:
        count = await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
        size = await conn.fetchval("SELECT pg_size_pretty(pg_table_size($1::regclass))", table)
        print(f"{table}: {count:,} rows, {size}")
    print("\n| index | size |\n|---|---|")
    for r in await conn.fetch(
            """SELECT indexrelid::regclass::text AS name,
                      pg_size_pretty(pg_relation_size(indexrelid)) AS size
               FROM pg_stat_user_indexes WHERE relname = ANY($1::text[])
               ORDER BY relname, indexrelid::regclass::text""", list(TABLES)):
        print(f"| {r['name']} | {r['size']} |")


async def index_scans(query: asyncpg.Connection, stats: asyncpg.Connection
                      ) -> dict[str, int]:
    """Index scans so far, by index, the query connection's own included (flushed first;
    nothing before Postgres 15, which has no way to flush them)."""
    try:
        await query.execute("SELECT pg_stat_force_next_flush()")
    except asyncpg.UndefinedFunctionError:
        return {}
    await asyncio.sleep(0.05)  # the flush happens when that backend goes idle
    await stats.execute("SELECT pg_stat_clear_snapshot()")
    return {r["name"]: r["idx_scan"] for r in await stats.fetch(INDEX_SCANS_SQL, list(TABLES))}


async def measure(query: asyncpg.Connection, stats: asyncpg.Connection, name: str,
                  call: Callable[[], Awaitable[int]], runs: int, warmup: int) -> Result:
    for _ in range(warmup):
        await call()
    before = await index_scans(query, stats)
    samples, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = await call()
        samples.append((time.perf_counter() - started) * 1000)
    after = await index_scans(query, stats)
    used = [k for k, v in after.items() if v > before.get(k, 0)]
    return Result(name, sorted(samples), rows, sorted(used))


def cases(sample: dict[str, Any]) -> list[tuple[str, ConversationFilter]]:
    week = (NOW - timedelta(days=14), NOW - timedelta(days=7))
    return [
        ("no filter", ConversationFilter()),
        ("platform=telegram", ConversationFilter(platform="telegram")),
        ("platform=slack", ConversationFilter(platform="slack")),
        (f"channel={sample['channel']}", ConversationFilter(channel=sample["channel"])),
        (f"user={sample['user']}", ConversationFilter(user=sample["user"])),
        ("since (last 7 days)", ConversationFilter(since=NOW - timedelta(days=7))),
        ("since+until (7 days, a week ago)", ConversationFilter(since=week[0], until=week[1])),
        ("until (30 days ago)", ConversationFilter(until=NOW - timedelta(days=30))),
        ("feedback=up", ConversationFilter(feedback="up")),
        ("feedback=down", ConversationFilter(feedback="down")),
        ("blocked", ConversationFilter(blocked=True)),
        ("action", ConversationFilter(action=True)),
        ("error", ConversationFilter(error=True)),
        ("min_latency_ms=1500", ConversationFilter(min_latency_ms=1500)),
        ("min_latency_ms=10000", ConversationFilter(min_latency_ms=10000)),
        ("min_latency_ms=100000", ConversationFilter(min_latency_ms=100000)),
        ("text common: password", ConversationFilter(text="password")),
        ("text rare: zeppelin", ConversationFilter(text="zeppelin")),
        ("text none: xylophone", ConversationFilter(text="xylophone")),
        ("text two words: reset password", ConversationFilter(text="reset password")),
        ("text phrase: \"reset password\"", ConversationFilter(text='"reset password"')),
        ("tag=hallucination", ConversationFilter(tag="hallucination")),
        ("tag=billing", ConversationFilter(tag="billing")),
        ("reviewed=1", ConversationFilter(reviewed=True)),
        ("reviewed=0", ConversationFilter(reviewed=False)),
        ("platform=telegram+feedback=down",
         ConversationFilter(platform="telegram", feedback="down")),
        (f"channel={sample['channel']}+text password",
         ConversationFilter(channel=sample["channel"], text="password")),
        ("since+until+blocked", ConversationFilter(since=week[0], until=week[1], blocked=True)),
        (f"user={sample['user']}+text password",
         ConversationFilter(user=sample["user"], text="password")),
        ("platform=discord+error+since 30 days",
         ConversationFilter(platform="discord", error=True, since=NOW - timedelta(days=30))),
        ("text zeppelin+platform=slack", ConversationFilter(text="zeppelin", platform="slack")),
        ("feedback=down+min_latency_ms=1500+action",
         ConversationFilter(feedback="down", min_latency_ms=1500, action=True)),
    ]


async def run(args: argparse.Namespace) -> None:
    async with scratch_database(args.database_url) as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn, embedding_dim=384)
            await generate(conn, args.rows)
            await sizes(conn)
            sample = dict(await conn.fetchrow(
                """SELECT (SELECT channel FROM conversations ORDER BY id LIMIT 1) AS channel,
                          (SELECT user_id FROM messages WHERE user_id IS NOT NULL
                           ORDER BY id LIMIT 1) AS user"""))
            ids = [r["id"] for r in await conn.fetch(
                "SELECT id FROM conversations TABLESAMPLE SYSTEM (1) LIMIT 500")]
        finally:
            await conn.close()
        query = await asyncpg.connect(url)  # one connection, as a pool's would be
        stats = await asyncpg.connect(url)
        try:
            results = await run_cases(query, stats, sample, ids, args)
        finally:
            await stats.close()
            await query.close()
    print(f"\n{args.rows:,} transcript rows requested; {args.runs} runs after {args.warmup} "
          f"warm-up per case; one connection; target p95 < {TARGET_MS:g} ms\n")
    print("| query | p50 ms | p95 ms | rows | p95 < 100 ms | indexes scanned |")
    print("|---|---|---|---|---|---|")
    for r in results:
        p95 = pct(r.samples_ms, 0.95)
        print(f"| {r.name} | {pct(r.samples_ms, 0.5):.1f} | {p95:.1f} | {r.rows} | "
              f"{'yes' if p95 < TARGET_MS else 'NO'} | {', '.join(r.indexes) or '-'} |")


async def run_cases(query: asyncpg.Connection, stats: asyncpg.Connection,
                    sample: dict[str, Any], ids: list[str], args: argparse.Namespace
                    ) -> list[Result]:
    """Each case measured on `query` (asyncpg's connection has the pool's query methods)."""
    results: list[Result] = []
    for name, flt in cases(sample):
        async def page(flt: ConversationFilter = flt) -> int:
            return len((await list_conversations(query, flt)).rows)
        results.append(await measure(query, stats, name, page, args.runs, args.warmup))
        if args.explain:
            await explain(query, name, flt, None)
    cursor = None
    for _ in range(20):
        cursor = (await list_conversations(query, ConversationFilter(),
                                           cursor=cursor)).next_cursor

    async def deep() -> int:
        return len((await list_conversations(query, ConversationFilter(),
                                             cursor=cursor)).rows)
    results.append(await measure(query, stats, "no filter, page 21 (cursor)", deep,
                                 args.runs, args.warmup))
    if args.explain:
        await explain(query, "no filter, page 21", ConversationFilter(), cursor)
    rng = random.Random(7)

    async def one() -> int:
        detail = await get_conversation(query, rng.choice(ids))
        return len(detail.entries) if detail else 0
    results.append(await measure(query, stats, "get_conversation (random ids)", one,
                                 args.runs, args.warmup))
    today: date = NOW.date()

    async def days14() -> int:
        return len((await overview(query, days=14, today=today)).per_day)
    results.append(await measure(query, stats, "overview, 14 days", days14,
                                 min(args.runs, 20), 2))
    return results


async def explain(conn: asyncpg.Connection, name: str, flt: ConversationFilter,
                  cursor: str | None) -> None:
    sql, params = list_statement(flt, limit=51, cursor=cursor)
    plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *params)
    print(f"\n--- {name}\n" + "\n".join(r[0] for r in plan), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--explain", action="store_true",
                        help="print EXPLAIN (ANALYZE, BUFFERS) of each list case")
    asyncio.run(run(parser.parse_args()))
