"""The hot path's cost per message: server CPU, Redis commands and SQL statements, per path.

    python -m bench.hotpath [--messages 1000] [--conversations 50] [--warmup 100]
        [--paths ingress command answer answer-rails] [--tree DIR ...] [--repeat N]

Each `--tree` is a source tree of this project (default: this checkout); give the commit
before a change as a `git worktree` to measure before and after in one run:

    git worktree add /tmp/hotpath-before <commit>
    python -m bench.hotpath --tree /tmp/hotpath-before .

Paths are measured one after the other, each on every tree in turn, so the before and after
rows of a path are minutes apart (a VM's CPU time per unit of work can drift by a third within
an hour). `--repeat N` goes over everything N times and also prints each tree's and path's
median CPU per message and msg/s, with the lowest and highest.

For each tree and path: fresh embedded Valkey and Postgres (with `pg_stat_statements` preloaded)
started by this process in a temporary `BOT_DATA_DIR`, and `bot run` from that tree as a
subprocess joining them. The loopback OpenAI-compatible model and the callback receiver run in
this process (their CPU is not server CPU). `--warmup` messages first, then `--messages` signed
webhook messages (`POST /webhooks/load`, `--conversations` conversations sending in order,
concurrently); a message is done when its callback arrives (for `ingress`, when its 202 does).

Paths:
- `ingress`: `bot run --workers 0`: verified, stored in the inbox, 202; nothing answers.
- `command`: `!help`, a built-in action: routed before retrieval and the model, one audit row.
- `answer`: a question answered by the model, guardrails off (`enabled = false`).
- `answer-rails`: the same with the default guardrails (the injection classifier on input).
- `floor`: not the bot but bench/floor.py, the same parts and nothing else (verify, XADD,
  202; XREADGROUP of up to 16, one transcript row each in one `executemany`, one callback
  each, XACK): what the minimal durable path costs on this machine, this checkout's only.
- `floor-rows`: the floor writing the bot's own rows (`bench/floor.py --rows bot`: the
  transcript's exchange and a finished audit row per message, with the bot's writers, on the
  migrated schema): the floor of any engine that keeps the bot's data model.
Retrieval is off (`RETRIEVAL_TOP_K=0`) on every path: the query embedding is the knowledge
base's cost, measured by bench/ask.py. Texts: `--texts questions` (default) cycles 16 user
questions; `--texts numbered` sends "question N?".

Printed per row: msg/s, latency p50/p99 (POST sent -> callback or 202), server CPU per message
(utime+stime from /proc, via psutil: the bot process and its children; Valkey; the postmaster,
its live children and its reaped ones), Redis commands per message (`INFO commandstats`, the
calls of every command but INFO, commands run inside scripts included), Redis round trips per
message (counted by a proxy in this process between the bot and Valkey: `RoundTrips`), SQL
statements per message (`pg_stat_statements` calls, utility statements included, this bench's
own excluded; an `executemany` counts once per row), write transactions per message (the
transaction ids Postgres assigned: each commit that wrote), and the ratio of CPU per message
to the first tree's `ingress` row.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import aiohttp
import asyncpg
import psutil
import redis.asyncio as aioredis

from adapters.verification import sha256_signature
from bench._common import wait_ready
from bot.config import Settings
from bot.services import EmbeddedPostgres, EmbeddedValkey
from tests.fakes.openai_server import CallbackRecorder, FakeOpenAI
from tests.fakes.processes import free_port

SECRET = "bench-hotpath-secret"
ROOT = Path(__file__).resolve().parent.parent
PATHS = ("ingress", "command", "answer", "answer-rails", "floor", "floor-rows")
#: `--texts questions`: what users of a team's bot ask (written for this bench), in turn
QUESTIONS = (
    "How do I reset my password?", "Where do I find the deployment runbook?",
    "What is the refund policy for annual plans?", "Can I change the billing e-mail?",
    "Why did my export fail last night?", "How long are conversation logs kept?",
    "Who approves access to the production database?", "Is there an API rate limit?",
    "How do I add a teammate to the workspace?", "What does error 504 mean here?",
    "Which regions is the service hosted in?", "How do I rotate the webhook secret?",
    "Can the bot answer in German?", "What changed in the last release?",
    "How do I cancel a scheduled job?", "Where are the invoices for March?",
)


def _text(path: str, seq: int, texts: str) -> str:
    """The message text of `path` for message `seq`: `!help` for the command path; else
    "question N?" (`--texts numbered`) or the user questions in turn."""
    if path in ("command", "floor", "floor-rows"):
        return "!help"
    return f"question {seq}?" if texts == "numbered" else QUESTIONS[seq % len(QUESTIONS)]


@dataclass
class Row:
    """One tree's figures on one path."""

    tree: str
    path: str
    messages: int
    wall_s: float
    latencies_s: list[float]
    cpu_s: dict[str, float] = field(default_factory=dict)  # process group -> CPU seconds
    redis_commands: int = 0
    redis_round_trips: int = 0
    redis_by_command: Counter[str] = field(default_factory=Counter)
    sql_statements: int = 0
    commits: int = 0  # write transactions
    #: statement (its first 60 characters) -> (calls, total execution ms), for --breakdown
    sql_by_statement: dict[str, tuple[int, float]] = field(default_factory=dict)


class Cpu:
    """utime+stime of the server processes, grouped: bot, valkey, postgres."""

    def __init__(self, bot: psutil.Process, valkey: psutil.Process,
                 postmaster: psutil.Process) -> None:
        self.roots = {"bot": bot, "valkey": valkey, "postgres": postmaster}

    def snapshot(self) -> dict[tuple[str, int, float], float]:
        """(group, pid, create time) -> CPU seconds; a root also counts its reaped children."""
        out: dict[tuple[str, int, float], float] = {}
        for group, root in self.roots.items():
            for proc in [root, *root.children(recursive=True)]:
                try:
                    t = proc.cpu_times()
                    total = t.user + t.system
                    if proc is root:
                        total += t.children_user + t.children_system
                    out[(group, proc.pid, proc.create_time())] = total
                except psutil.Error:
                    continue
        return out

    @staticmethod
    def delta(before: dict[tuple[str, int, float], float],
              after: dict[tuple[str, int, float], float]) -> dict[str, float]:
        """CPU seconds per group between two snapshots (a new process counts from 0)."""
        groups: dict[str, float] = {}
        for key, seconds in after.items():
            groups[key[0]] = groups.get(key[0], 0.0) + seconds - before.get(key, 0.0)
        return groups


class RoundTrips:
    """A Unix-socket proxy in front of Valkey that counts round trips: per connection, a client
    write that follows a server reply (or opens the connection) starts one. redis-py keeps one
    request in flight per connection (a pipeline or transaction is one write), so this is the
    number of waits the bot made on Valkey."""

    def __init__(self, target: str, path: Path) -> None:
        self.target, self.path, self.count = target, path, 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        """Listen; return the proxy's redis URL."""
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        return "unix://" + quote(str(self.path))

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_unix_connection(self.target)
        replied = [True]

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       from_client: bool) -> None:
            try:
                with contextlib.suppress(ConnectionError):  # either side hung up
                    while data := await reader.read(65536):
                        if from_client and replied[0]:
                            self.count += 1
                        replied[0] = not from_client
                        writer.write(data)
                        await writer.drain()
            finally:
                writer.close()

        await asyncio.gather(pump(c_reader, s_writer, True), pump(s_reader, c_writer, False))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


async def redis_calls(client: aioredis.Redis) -> Counter[str]:
    """Calls of every command but INFO since the server started, by command (INFO
    commandstats; commands run by scripts count too)."""
    stats = await client.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()
                    if isinstance(v, dict) and k != "cmdstat_info"})


async def next_xid(conn: asyncpg.Connection) -> int:
    """The next transaction id Postgres will assign, without assigning one: the difference
    between two readings counts the write transactions in between (each commit that wrote,
    or abort), at once (`pg_stat_database.xact_commit` lags until backends flush their
    statistics, up to 10 s for an idle one)."""
    value = await conn.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
    return int(value)


async def sql_by_statement(conn: asyncpg.Connection) -> dict[str, tuple[int, float]]:
    """Per statement (its first 60 characters, whitespace folded): calls and total execution
    time in ms, from pg_stat_statements, but this bench's own."""
    rows = await conn.fetch("SELECT query, calls, total_exec_time FROM pg_stat_statements "
                            "WHERE query NOT ILIKE '%pg_stat_statements%'")
    out: dict[str, tuple[int, float]] = {}
    for row in rows:
        key = " ".join(str(row["query"]).split())[:60]
        calls, ms = out.get(key, (0, 0.0))
        out[key] = (calls + int(row["calls"]), ms + float(row["total_exec_time"]))
    return out


def statements_between(before: dict[str, tuple[int, float]],
                       after: dict[str, tuple[int, float]]) -> dict[str, tuple[int, float]]:
    """The calls and execution ms of each statement between two `sql_by_statement`
    snapshots (statements that ran in between only)."""
    out: dict[str, tuple[int, float]] = {}
    for key, (calls, ms) in after.items():
        calls0, ms0 = before.get(key, (0, 0.0))
        if calls > calls0:
            out[key] = (calls - calls0, ms - ms0)
    return out


def start_services(data_dir: Path) -> tuple[EmbeddedValkey, EmbeddedPostgres, str, str]:
    """Embedded Valkey and Postgres in `data_dir`, Postgres restarted once with
    pg_stat_statements preloaded; returns the handles and their URLs."""
    valkey = EmbeddedValkey(data_dir)
    redis_url = valkey.start()
    pg = EmbeddedPostgres(data_dir)
    url = pg.start()

    async def preload() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        finally:
            await conn.close()

    asyncio.run(preload())
    pg.stop()
    pg = EmbeddedPostgres(data_dir)
    url = pg.start()
    return valkey, pg, redis_url, url


def _env(tree: Path, data_dir: Path, path: str, llm_url: str, callback_url: str,
         redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "GUARDRAILS_POLICY")}
    env.update(REDIS_URL=redis_url, BOT_DATA_DIR=str(data_dir), WEBHOOK_SECRET=SECRET,
               BOT_LOG_LEVEL="WARNING",
               WEBHOOK_CALLBACK_URL=callback_url, LLM_BASE_URL=llm_url, RETRIEVAL_TOP_K="0",
               PYTHONPATH=str(tree), OMP_NUM_THREADS="1",
               # the limits stay on (their cost is part of the path) but never refuse here
               BOT_RATE_USER_PER_MIN="1000000", BOT_RATE_USER_BURST="1000000",
               BOT_RATE_CONVERSATION_PER_MIN="1000000", BOT_RATE_CONVERSATION_BURST="1000000")
    if path == "answer":
        policy = data_dir / "rails-off.toml"
        policy.write_text("enabled = false\n")
        env["GUARDRAILS_POLICY"] = str(policy)
    return env


async def run_path(tree: Path, path: str, args: argparse.Namespace) -> Row:
    """Start the services and `bot run` from `tree`, send the traffic, measure."""
    llm = await FakeOpenAI().start()
    callback = await CallbackRecorder().start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="switchboard-hotpath-") as tmp:
        data_dir = Path(tmp)
        valkey, pg, redis_url, pg_url = await asyncio.to_thread(start_services, data_dir)
        proxy = RoundTrips(unquote(redis_url.removeprefix("unix://")), data_dir / "proxy.sock")
        proxy_url = await proxy.start()
        workers = "0" if path == "ingress" else str(args.workers)
        command = [sys.executable, "-m", "bot", "run", "--workers", workers, "--port", str(port)]
        if path.startswith("floor"):  # this checkout's (bench/floor.py), whatever the tree
            tree = ROOT
            command = [sys.executable, "-m", "bench.floor", "--port", str(port), "--redis-url",
                       proxy_url, "--database-url", pg_url, "--callback-url", callback.url,
                       "--workers", workers, "--rows", "bot" if path == "floor-rows" else "floor"]
        proc = subprocess.Popen(
            command, cwd=tree, env=_env(tree, data_dir, path, llm.base_url, callback.url,
                                        proxy_url),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rclient = aioredis.from_url(redis_url)
        conn = await asyncpg.connect(pg_url)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            valkey_proc = psutil.Process(int(valkey.pidfile.read_text().strip()))
            postmaster = psutil.Process(int((pg.pgdata / "postmaster.pid").read_text()
                                            .splitlines()[0]))
            cpu = Cpu(psutil.Process(proc.pid), valkey_proc, postmaster)
            async with aiohttp.ClientSession() as session:
                await wait_ready(session, url, timeout_s=120)
                expected = 0

                async def send(tag: str, count: int) -> tuple[dict[str, float], float]:
                    sent_at: dict[str, float] = {}
                    done_at: dict[str, float] = {}
                    per_conv = max(1, count // args.conversations)

                    async def conversation(c: int) -> None:
                        for seq in range(per_conv):
                            mid = f"{tag}-{c}-{seq}"
                            body = json.dumps({"id": mid, "user": f"u{c}",
                                               "conversation": f"{tag}{c}",
                                               "text": _text(path, seq, args.texts)}
                                              ).encode()
                            sent_at[f"webhook:load:{mid}"] = time.perf_counter()
                            async with session.post(url + "/webhooks/load", data=body, headers={
                                    "X-Signature": sha256_signature(SECRET, body)}) as r:
                                if r.status != 202:
                                    raise RuntimeError(f"{path}: webhook answered {r.status}")
                                done_at[f"webhook:load:{mid}"] = time.perf_counter()

                    started = time.perf_counter()
                    await asyncio.gather(*[conversation(c) for c in range(args.conversations)])
                    if path != "ingress":
                        nonlocal expected
                        expected += len(sent_at)
                        await callback.wait_for(expected, timeout_s=900)
                        for (_body, headers), arrived in zip(callback.calls, callback.arrival_s,
                                                             strict=True):
                            key = headers.get("Idempotency-Key", "")
                            if key in sent_at:
                                done_at[key] = arrived
                    wall = time.perf_counter() - started
                    return {k: done_at[k] - sent_at[k] for k in sent_at}, wall

                await send("warm", args.warmup)
                await asyncio.sleep(1.0)  # settle: background flushes of the warm-up
                cpu0, redis0 = cpu.snapshot(), await redis_calls(rclient)
                trips0, commits0 = proxy.count, await next_xid(conn)
                statements0 = await sql_by_statement(conn)
                latencies, wall_s = await send("run", args.messages)
                trips1, commits1 = proxy.count, await next_xid(conn)
                statements1 = await sql_by_statement(conn)
                cpu1, redis1 = cpu.snapshot(), await redis_calls(rclient)
            statements = statements_between(statements0, statements1)
            return Row(tree=str(tree), path=path, messages=len(latencies), wall_s=wall_s,
                       latencies_s=sorted(latencies.values()), cpu_s=Cpu.delta(cpu0, cpu1),
                       redis_commands=(redis1 - redis0).total(), redis_by_command=redis1 - redis0,
                       redis_round_trips=trips1 - trips0,
                       sql_statements=sum(calls for calls, _ in statements.values()),
                       commits=commits1 - commits0, sql_by_statement=statements)
        finally:
            await conn.close()
            await rclient.aclose()
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 60)
            except subprocess.TimeoutExpired:
                proc.kill()
            await proxy.stop()
            await asyncio.to_thread(pg.stop)
            await asyncio.to_thread(valkey.stop)
            await llm.stop()
            await callback.stop()


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table (CPU in ms per message, split bot/valkey/postgres)."""
    base = next((r for r in rows if r.path == "ingress"), rows[0])
    base_cpu = sum(base.cpu_s.values()) / max(base.messages, 1)
    lines = ["| tree | path | msg/s | p50 ms | p99 ms | CPU ms/msg (bot + valkey + postgres) "
             "| Redis cmds/msg | Redis round trips/msg | SQL stmts/msg | write commits/msg "
             "| CPU ratio to baseline |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        n = max(r.messages, 1)
        per = {g: r.cpu_s.get(g, 0.0) * 1000 / n for g in ("bot", "valkey", "postgres")}
        total = sum(per.values())
        lines.append(
            f"| {r.tree} | {r.path} | {r.messages / r.wall_s:,.0f} | "
            f"{_pct(r.latencies_s, 0.5) * 1000:.1f} | {_pct(r.latencies_s, 0.99) * 1000:.1f} | "
            f"{total:.2f} ({per['bot']:.2f} + {per['valkey']:.2f} + {per['postgres']:.2f}) | "
            f"{r.redis_commands / n:.1f} | {r.redis_round_trips / n:.1f} | "
            f"{r.sql_statements / n:.1f} | {r.commits / n:.2f} | "
            f"{total / (base_cpu * 1000) if base_cpu else 0:.2f} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    rows: list[Row] = []
    trees = [t.resolve() for t in args.tree or [ROOT]]
    # path by path, the trees in turn: a before and an after row of one path are measured
    # minutes apart, not a whole run apart (a VM's CPU time per unit of work drifts)
    for _ in range(args.repeat):
        for path in args.paths:
            for tree in trees[:1] if path.startswith("floor") else trees:
                row = await run_path(tree, path, args)
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
    print()
    print(f"{args.messages} messages per path after {args.warmup} warm-up, "
          f"{args.conversations} conversations, bot run --workers {args.workers}; "
          f"baseline: the first ingress row")
    print(table(rows))
    if args.repeat > 1:
        print()
        print(spread(rows))
    if args.breakdown:
        for r in rows:
            n = max(r.messages, 1)
            print(f"\n{r.tree} {r.path}: Redis commands per message: " + ", ".join(
                f"{name} {calls / n:.2f}" for name, calls in r.redis_by_command.most_common()))
            print(f"{r.tree} {r.path}: SQL per message (calls, execution ms): " + "; ".join(
                f"{stmt!r} {calls / n:.2f}, {ms / n:.3f}" for stmt, (calls, ms) in sorted(
                    r.sql_by_statement.items(), key=lambda kv: -kv[1][1])[:8]))


def spread(rows: list[Row]) -> str:
    """Per tree and path over the repeats: the median, lowest and highest CPU per message and
    msg/s (a Markdown table)."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.tree, r.path), []).append(r)
    lines = ["| tree | path | runs | CPU ms/msg median (min-max) | msg/s median (min-max) |",
             "|---|---|---|---|---|"]
    for (tree, path), group in groups.items():
        cpu = sorted(sum(r.cpu_s.values()) / max(r.messages, 1) * 1000 for r in group)
        rate = sorted(r.messages / r.wall_s if r.wall_s else 0.0 for r in group)
        lines.append(f"| {tree} | {path} | {len(group)} | {statistics.median(cpu):.2f} "
                     f"({cpu[0]:.2f}-{cpu[-1]:.2f}) | {statistics.median(rate):,.0f} "
                     f"({rate[0]:,.0f}-{rate[-1]:,.0f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--workers", type=int,
                        default=int(Settings.model_fields["bot_workers"].default),
                        help="worker tasks of bot run (default: the bot's default)")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--tree", nargs="+", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure every path and tree this many times, in turn, and print "
                             "the median and spread")
    parser.add_argument("--breakdown", action="store_true",
                        help="also print the Redis commands per message by command")
    parser.add_argument("--texts", choices=("questions", "numbered"), default="questions",
                        help="user questions in turn, or 'question N?' (which the input "
                             "rail's n-grams cannot settle: MiniLM runs for every one)")
    asyncio.run(main(parser.parse_args()))
