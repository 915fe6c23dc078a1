"""Soak test: mixed webhook traffic against a real `bot run` for N minutes, with faults.

    python -m bench.soak [--minutes 10] [--rate 2] [--conversations 10] [--workers 8]

Starts `bot run` as a subprocess (embedded Postgres and Valkey on a fresh data directory, or
the servers named by DATABASE_URL / REDIS_URL with a fresh key prefix), with WEBHOOK_SECRET,
WEBHOOK_CALLBACK_URL pointing at a callback endpoint in this process and LLM_BASE_URL at a fake
OpenAI-compatible server in this process (bench/soak_fakes.py), retrieval off, inbound rate
limits off, BOT_CLAIM_IDLE_S=5. Then sends `--rate` signed `POST /webhooks/soak` requests per
second, each to one of `--conversations` conversations with a per-conversation sequence
number:

- most answers fast (0.05-0.5 s), `--slow-share` of them after `--slow-s` (20 s); the fake
  reads the delay from a marker in the message text;
- callers that do not wait (the reply comes by callback), callers that wait (`?wait=true`)
  and callers that hang up after 0.1-2 s; a caller that hung up or got 202 gives the callback
  12 s, then asks again with the same id (docs/webhook.md, "Waiting, hanging up and asking
  again"); a caller whose request failed (connection refused, 503) sends it again;
- duplicate deliveries: the same id sent again 2-40 s later, or twice at once;
- the callback endpoint answers 503 for `--outage-s` (30 s) from 20% of the run;
- the bot is killed with SIGKILL at 60% of the run and restarted 2 s later.

After the sending time, a drain of at most `--drain-s` (ended early after `--idle-s` without
any callback or new answer) waits for the answers; then every message still unanswered is
asked for once more. Prints accepted, answered, lost, doubled,
reordered, stuck conversations, latency, and the RSS of every process at start and end
(definitions: bench/soak_report.py). The bot's log (JSON lines) and a per-message dump stay in
the directory printed at the end. Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from adapters.verification import sha256_signature
from bench._common import wait_ready
from bench.soak_fakes import (
    BotRun,
    CallbackCall,
    FlakyCallbacks,
    SoakLLM,
    log_lines,
    log_summary,
    logged_message_ids,
    marker,
    rss_mib,
    service_processes,
    stop_leftover_services,
)
from bench.soak_report import WEBHOOK, Msg, report
from tests.fakes.processes import free_port

SECRET = "soak-webhook-secret"
#: Longer than WEBHOOK_WAIT_TIMEOUT_S (30 s): a patient caller gets 200 or 202, never hangs up.
PATIENT_S = 45.0
#: How long a caller that hung up, or got 202 while waiting, gives the callback before it
#: sends the same request again.
CALLBACK_GRACE_S = 12.0
#: Requests per message at most (first, repeats, resends after connection errors).
MAX_POSTS = 40


class Soak:
    def __init__(self, args: argparse.Namespace, session: aiohttp.ClientSession, bot: BotRun,
                 llm: SoakLLM, callbacks: FlakyCallbacks, data_dir: Path) -> None:
        self.args = args
        self.session = session
        self.bot = bot
        self.llm = llm
        self.callbacks = callbacks
        self.data_dir = data_dir
        self.rng = random.Random(args.seed)
        self.msgs: list[Msg] = []
        self.by_key: dict[str, Msg] = {}
        self.next_seq: dict[str, int] = {}
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.minutes * 60 + args.drain_s
        self.rss: dict[str, dict[str, float | None]] = {}
        callbacks.on_answer = self.on_callback

    # ---- output -------------------------------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.1f} s] {text}", flush=True)

    def sample_rss(self, label: str) -> None:
        bot = self.bot.proc
        row: dict[str, float | None] = {"bot": None, "bench": rss_mib([psutil.Process()])}
        if bot is not None and bot.poll() is None:
            with contextlib.suppress(psutil.Error):
                row["bot"] = rss_mib([psutil.Process(bot.pid)])
        services = service_processes(self.data_dir)
        for name in ("valkey", "postgres"):
            row[name] = rss_mib(services.get(name, []))
        self.rss[label] = row

    # ---- the client -----------------------------------------------------------------------

    def new_message(self) -> Msg:
        a, rng = self.args, self.rng
        conv = f"c{rng.randrange(a.conversations)}"
        seq = self.next_seq.get(conv, 0)
        self.next_seq[conv] = seq + 1
        slow = rng.random() < a.slow_share
        roll = rng.random()
        mode = "callback" if roll < 0.4 else "wait" if roll < 0.75 else "hangup"
        roll = rng.random()
        dup = "later" if roll < 0.08 else "concurrent" if roll < 0.13 else ""
        m = Msg(conv=conv, seq=seq, id=f"{conv}-{seq}", slow=slow, mode=mode, dup=dup,
                delay_ms=int(a.slow_s * 1000) if slow else rng.randint(50, 500))
        self.msgs.append(m)
        self.by_key[m.key] = m
        return m

    def on_callback(self, call: CallbackCall) -> None:
        m = self.by_key.get(call.key)
        if m is not None:
            m.answer(call.at, "callback", str(call.body.get("answer", "")))

    async def post(self, m: Msg, wait: bool, timeout_s: float, path: str) -> str:
        """One POST of `m`; its outcome: answer, accepted, duplicate, hangup (our client
        timeout), unreachable (connection refused or dropped), unavailable (429/5xx), http-N
        (another status), bad-body."""
        body = json.dumps({"id": m.id, "user": f"user-{m.conv}", "conversation": m.conv,
                           "text": f"Question {m.seq} in {m.conv}: what does the knowledge "
                                   f"base say about item {m.seq}? "
                                   f"{marker(m.id, m.delay_ms)}"}).encode()
        if m.sent_at is None:
            m.sent_at = time.monotonic()
        try:
            async with self.session.post(
                    f"{self.bot.url}/webhooks/{WEBHOOK}{'?wait=true' if wait else ''}",
                    data=body, timeout=aiohttp.ClientTimeout(total=timeout_s),
                    headers={"X-Signature": sha256_signature(SECRET, body),
                             "Content-Type": "application/json"}) as r:
                status, text = r.status, await r.text()
            now = time.monotonic()
            if status == 200:
                m.answer(now, path, str(json.loads(text).get("answer", "")))
                outcome = "answer"
            elif status == 202:
                m.stored(now)
                outcome = str(json.loads(text).get("status"))
                m.accepted_new += outcome == "accepted"
            elif status == 429 or status >= 500:
                outcome = "unavailable"
            else:
                outcome = f"http-{status}"
        except TimeoutError:
            outcome = "hangup"
        except (aiohttp.ClientError, OSError):
            outcome = "unreachable"
        except (ValueError, AttributeError):  # a 200/202 body that is not the documented JSON
            outcome = "bad-body"
        m.outcomes.append(outcome)
        return outcome

    async def await_answer(self, m: Msg, timeout_s: float) -> None:
        timeout_s = min(timeout_s, self.deadline - time.monotonic())
        if timeout_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(m.answered.wait(), timeout_s)

    async def converse(self, m: Msg) -> None:
        """The safe client loop of docs/webhook.md, bounded by MAX_POSTS and the deadline."""
        wait = m.mode != "callback"
        timeout_s = self.rng.uniform(0.1, 2.0) if m.mode == "hangup" else PATIENT_S
        path = "response"
        for attempt in range(MAX_POSTS):
            if m.answered.is_set() or time.monotonic() >= self.deadline:
                return
            if attempt == 0 and m.dup == "concurrent":
                both = await asyncio.gather(self.post(m, wait, timeout_s, path),
                                            self.post(m, wait, timeout_s, path))
                rank = ["answer", "accepted", "duplicate", "hangup", "unavailable",
                        "unreachable"]
                outcome = min(both, key=lambda o: rank.index(o) if o in rank else 99)
            else:
                outcome = await self.post(m, wait, timeout_s, path)
            if outcome in ("answer", "bad-body") or outcome.startswith("http-"):
                return
            if outcome in ("accepted", "duplicate", "hangup"):
                if not wait and outcome != "hangup":
                    return  # the callback brings it
                await self.await_answer(m, CALLBACK_GRACE_S)
                wait, timeout_s, path = True, PATIENT_S, "repeat"  # then ask again
            else:  # not stored for sure: the same request again
                await asyncio.sleep(min(0.5 * (attempt + 1), 3.0))

    async def resend_later(self, m: Msg) -> None:
        """A duplicate delivery of `m` 2-40 s after it, resent while the bot is unreachable."""
        await asyncio.sleep(self.rng.uniform(2, 40))
        wait = self.rng.random() < 0.5
        for attempt in range(10):
            outcome = await self.post(m, wait, PATIENT_S if wait else 10.0, "repeat")
            if outcome not in ("unreachable", "unavailable"):
                return
            await asyncio.sleep(1.0 + attempt)

    # ---- the run ---------------------------------------------------------------------------

    async def faults(self) -> None:
        a = self.args
        duration_s = a.minutes * 60
        await asyncio.sleep(max(0.0, self.t0 + 0.15 * duration_s - time.monotonic()))
        self.sample_rss("warm (15% of the run)")
        await asyncio.sleep(max(0.0, self.t0 + 0.2 * duration_s - time.monotonic()))
        outage_s = min(a.outage_s, 0.25 * duration_s)
        now = time.monotonic()
        self.callbacks.outage = (now, now + outage_s)
        self.say(f"callback endpoint answers 503 for {outage_s:.0f} s")
        await asyncio.sleep(outage_s)
        self.say("callback endpoint recovered")
        await asyncio.sleep(max(0.0, self.t0 + 0.6 * duration_s - time.monotonic()))
        self.sample_rss("bot before kill -9")
        self.bot.kill()
        self.say(f"bot (pid {self.bot.pids[-1]}) killed with SIGKILL")
        await asyncio.sleep(2.0)
        self.bot.start()
        self.say(f"bot restarted (pid {self.bot.pids[-1]})")
        await wait_ready(self.session, self.bot.url, timeout_s=120)
        self.say("bot ready again")

    async def progress(self) -> None:
        for _ in range(int((self.deadline - self.t0) / 30) + 1):
            await asyncio.sleep(30)
            accepted = sum(m.stored_at is not None for m in self.msgs)
            answered = sum(bool(m.answers) for m in self.msgs)
            self.say(f"sent {len(self.msgs)}, accepted {accepted}, answered {answered}")

    async def run(self) -> None:
        a = self.args
        self.sample_rss("start")
        tasks: list[asyncio.Task[None]] = []
        background = [asyncio.create_task(self.faults()), asyncio.create_task(self.progress())]
        total = int(a.rate * a.minutes * 60)
        for i in range(total):
            await asyncio.sleep(max(0.0, self.t0 + i / a.rate - time.monotonic()))
            m = self.new_message()
            tasks.append(asyncio.create_task(self.converse(m)))
            if m.dup == "later":
                tasks.append(asyncio.create_task(self.resend_later(m)))
        await background[0]  # the restart is done
        self.say(f"sending done ({total} messages); draining for at most {a.drain_s:g} s")
        last_change, seen = time.monotonic(), -1
        for _ in range(int(a.drain_s) + 1):
            open_ = [m for m in self.msgs if m.stored_at is not None and not m.answers
                     and not m.dead_lettered]
            if not open_ and all(t.done() for t in tasks):
                break
            if len(self.callbacks.log) + len(open_) != seen:
                last_change, seen = time.monotonic(), len(self.callbacks.log) + len(open_)
            elif time.monotonic() - last_change > a.idle_s:
                self.say(f"nothing happened for {a.idle_s:g} s")
                break
            await asyncio.sleep(1.0)
        open_ = [m for m in self.msgs if m.stored_at is not None and not m.answers
                 and not m.dead_lettered]
        self.say(f"drain over: {len(open_)} accepted messages unanswered; asking for them "
                 f"once more")
        for t in [*tasks, background[1]]:
            t.cancel()
        await asyncio.gather(*tasks, background[1], return_exceptions=True)
        await asyncio.gather(*[self.post(m, False, 10.0, "final-repeat") for m in open_])
        for mid, calls in self.llm.calls.items():
            if (called := self.by_key.get(f"webhook:{WEBHOOK}:{mid}")) is not None:
                called.stored(min(calls))
        self.sample_rss("end")


def bot_env(args: argparse.Namespace, data_dir: Path, llm: SoakLLM,
            callbacks: FlakyCallbacks) -> dict[str, str]:
    env = dict(os.environ)
    env.update(BOT_DATA_DIR=str(data_dir), BOT_KEY_PREFIX=f"soak{os.getpid()}",
               WEBHOOK_SECRET=SECRET, WEBHOOK_CALLBACK_URL=callbacks.url,
               LLM_BASE_URL=llm.base_url, RETRIEVAL_TOP_K="0",
               BOT_CLAIM_IDLE_S=str(args.claim_idle_s), BOT_LOG_FORMAT="json",
               BOT_LOG_LEVEL="INFO", BOT_RATE_USER_PER_MIN="0",
               BOT_RATE_CONVERSATION_PER_MIN="0")
    return env


def print_rss(rss: dict[str, dict[str, float | None]]) -> None:
    print("RSS (MiB; postgres: postmaster and its backends summed):")
    for label, row in rss.items():
        cells = ", ".join(f"{name} {'-' if v is None else f'{v:.0f}'}" for name, v in row.items())
        print(f"  {label}: {cells}")


async def main(args: argparse.Namespace) -> None:
    out_dir = Path(tempfile.mkdtemp(prefix="switchboard-soak-"))
    data_dir, log = out_dir / "data", out_dir / "bot.log"
    llm = await SoakLLM().start()
    callbacks = await FlakyCallbacks(SECRET).start()
    external = [name for name in ("DATABASE_URL", "REDIS_URL") if os.environ.get(name)]
    bot = BotRun(bot_env(args, data_dir, llm, callbacks), log, free_port(), args.workers)
    print(f"soak: {args.minutes:g} min at {args.rate:g} messages/s over {args.conversations} "
          f"conversations, {args.slow_share:.0%} answered after {args.slow_s:g} s, bot run "
          f"--workers {args.workers}, BOT_CLAIM_IDLE_S={args.claim_idle_s:g}; services: "
          f"{'external ' + '+'.join(external) if external else 'embedded'}; logs in {out_dir}",
          flush=True)
    soak: Soak | None = None
    exit_code: int | None = None
    try:
        bot.start()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await wait_ready(session, bot.url, timeout_s=180)
            soak = Soak(args, session, bot, llm, callbacks, data_dir)
            await soak.run()
    finally:
        exit_code = await asyncio.to_thread(bot.stop)
        leftovers = await asyncio.to_thread(stop_leftover_services, data_dir)
        stops: list[Awaitable[None]] = [llm.stop(), callbacks.stop()]
        await asyncio.gather(*stops)
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    if soak is None:
        return
    print(f"bot pids {bot.pids}; last exit code after SIGTERM {exit_code}; embedded servers "
          f"left running and stopped by the bench: {leftovers or 'none'}; LLM requests "
          f"{len(llm.requests)} ({llm.unmarked} without a marker)")
    counts = report(soak.msgs, callbacks.log, llm.calls, soak.t0,
                    logged_message_ids(log, "callback after the caller hung up failed"))
    print_rss(soak.rss)
    print("bot log, most frequent warnings and errors:")
    for n, event in log_summary(log):
        print(f"  {n:5d}  {event}")
    for needle in ("callback after the caller hung up failed", "conversation lease lost"):
        for line in log_lines(log, needle, 3):
            print(f"  e.g. {line[:300]}")
    dump: dict[str, Any] = {"args": vars(args), "counts": counts, "rss": soak.rss,
                            "messages": [m.dump() for m in soak.msgs], "t0": soak.t0,
                            "llm_calls": soak.llm.calls,
                            "callbacks": [(c.at, c.key, c.status, c.body.get("answer"))
                                          for c in callbacks.log]}
    (out_dir / "messages.json").write_text(json.dumps(dump, indent=1))
    print(f"bot log: {log}; per-message dump: {out_dir / 'messages.json'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="sending time")
    parser.add_argument("--rate", type=float, default=2.0, help="messages per second")
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8, help="bot run --workers")
    parser.add_argument("--slow-share", type=float, default=0.05)
    parser.add_argument("--slow-s", type=float, default=20.0)
    parser.add_argument("--outage-s", type=float, default=30.0,
                        help="how long the callback endpoint answers 503")
    parser.add_argument("--claim-idle-s", type=float, default=5.0, help="BOT_CLAIM_IDLE_S")
    parser.add_argument("--drain-s", type=float, default=180.0,
                        help="the longest wait for outstanding answers after sending")
    parser.add_argument("--idle-s", type=float, default=60.0,
                        help="the drain also ends after this long without a new answer")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the embedded servers' data directory")
    asyncio.run(main(parser.parse_args()))
