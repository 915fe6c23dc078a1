"""Per-conversation ordering under load, through the real inbox and workers (embedded Valkey).

    python -m bench.ordering [--case fifo|hot|all]

`fifo`: 20 conversations x 20 messages, a handler that sleeps 200 ms, 20 worker tasks
(`--conversations`, `--messages`, `--workers`). Ideal wall time is messages x 0.2 s (each
conversation is serial, conversations in parallel): about 4 s, against 80 s if everything ran
one after another (the baseline the ratio uses). Prints the wall time, order violations and
messages processed more than once.

`hot`: `--hot` conversations whose senders send their next message as soon as the previous is
answered (the handler enqueues it before it returns, so the conversation's FIFO is never
empty), alongside `--quiet` conversations that send one message every `--quiet-every` seconds
on average; a handler that sleeps `--handler-ms`, with `bot run`'s default number of worker
tasks (BOT_WORKERS, 2) for `--seconds`, then a bounded drain. Prints the wait of the quiet
conversations' messages (enqueue -> processing start: worst, p99, median) and the totals, with
the default bounded turns (BOT_TURN_MESSAGES, BOT_TURN_S of bot/config.py) and, as the
baseline, with turns that never end (a worker keeps a conversation while it has work).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field

from bench._common import isolated_runtime
from bot.config import Settings
from bot.inbox import Inbox
from bot.messages import Conversation, Message
from bot.ordering import ConversationOrder
from bot.pipeline import Context, Pipeline
from bot.runtime import Runtime
from bot.worker import Worker

#: A turn that never ends, for the baseline of the hot case.
UNBOUNDED = 10**9


async def fifo_case(args: argparse.Namespace) -> None:
    seen: dict[str, list[int]] = defaultdict(list)

    async def handler(ctx: Context) -> None:
        await asyncio.sleep(0.2)
        seen[ctx.message.conversation.channel].append(int(ctx.message.text))

    total = args.conversations * args.messages
    async with isolated_runtime() as rt:
        for seq in range(args.messages):
            for c in range(args.conversations):
                await rt.inbox.enqueue(Message(
                    id=f"bench:{c}:{seq}", user="u", text=str(seq),
                    conversation=Conversation("bench", f"conv{c}")))
        workers = [Worker(rt.inbox, Pipeline([handler]), rt.order, index=i, claim_idle_s=30,
                          max_deliveries=5, block_ms=50) for i in range(args.workers)]
        stop = asyncio.Event()
        started = time.perf_counter()
        tasks = [asyncio.create_task(w.run(stop)) for w in workers]
        while sum(len(v) for v in seen.values()) < total:
            await asyncio.sleep(0.01)
        wall_s = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*tasks)
    violations = sum(1 for v in seen.values() for a, b in itertools.pairwise(v) if b <= a)
    duplicates = sum(len(v) - len(set(v)) for v in seen.values())
    ideal_s, serial_s = args.messages * 0.2, total * 0.2
    print(f"{args.conversations} conversations x {args.messages} messages, handler 200 ms, "
          f"{args.workers} worker tasks")
    print(f"wall time: {wall_s:.2f} s (ideal {ideal_s:.1f} s, serial baseline {serial_s:.0f} s, "
          f"ratio to serial {wall_s / serial_s:.3f})")
    print(f"order violations: {violations}; processed twice: {duplicates}")


@dataclass
class HotRun:
    """What one run of the hot case saw."""

    enqueued_at: dict[str, float] = field(default_factory=dict)  # message id -> perf_counter
    started_at: dict[str, float] = field(default_factory=dict)  # first processing start
    seen: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    processed: int = 0
    wall_s: float = 0.0
    unprocessed: int = 0
    ready_len: int = 0  # length of the ready list when sending stopped


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def hot_run(rt: Runtime, args: argparse.Namespace, prefix: str, turn_messages: int,
                  turn_s: float) -> HotRun:
    """One run of the hot case on its own key prefix (inbox, FIFOs, ready list)."""
    defaults = Settings.model_fields
    claim_idle_s = float(defaults["bot_claim_idle_s"].default)
    inbox = Inbox(rt.redis, prefix, dedupe_ttl_s=3600)
    await inbox.ensure_group()
    order = ConversationOrder(rt.redis, prefix, ttl_ms=int(claim_idle_s * 1000))
    run = HotRun()
    sending = True  # senders stop once the run's time is up; then the backlog drains
    rng = random.Random(12)

    async def enqueue(kind: str, c: int, seq: int) -> None:
        mid = f"{kind}:{c}:{seq}"
        run.enqueued_at[mid] = time.perf_counter()
        await inbox.enqueue(Message(id=mid, user=f"{kind}{c}", text=str(seq),
                                    conversation=Conversation("bench", f"{kind}{c}"),
                                    meta={"kind": kind, "c": str(c), "seq": str(seq)}))

    async def handler(ctx: Context) -> None:
        message = ctx.message
        run.started_at.setdefault(message.id, time.perf_counter())
        await asyncio.sleep(args.handler_ms / 1000)
        run.seen[message.conversation.channel].append(int(message.meta["seq"]))
        run.processed += 1
        if message.meta["kind"] == "hot" and sending:
            # the answer is out and its sender writes again at once, before the worker pops
            # this entry: the conversation's FIFO is never empty
            await enqueue("hot", int(message.meta["c"]), int(message.meta["seq"]) + 1)

    async def quiet_sender(c: int, until: float) -> None:
        for seq in itertools.count():
            await asyncio.sleep(rng.uniform(0.5, 1.5) * args.quiet_every)
            if time.perf_counter() >= until:
                return
            await enqueue("quiet", c, seq)

    workers = [Worker(inbox, Pipeline([handler]), order, index=i, claim_idle_s=claim_idle_s,
                      max_deliveries=5, turn_messages=turn_messages, turn_s=turn_s)
               for i in range(args.hot_workers)]
    stop = asyncio.Event()
    started = time.perf_counter()
    until = started + args.seconds
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    for c in range(args.hot):
        await enqueue("hot", c, 0)
    await asyncio.gather(*[quiet_sender(c, until) for c in range(args.quiet)])
    sending = False
    run.ready_len = int(await rt.redis.llen(order.ready_key))
    drain_until = time.perf_counter() + args.drain_s
    while run.processed < len(run.enqueued_at) and time.perf_counter() < drain_until:
        await asyncio.sleep(0.05)
    run.wall_s = time.perf_counter() - started
    run.unprocessed = len(run.enqueued_at) - len(run.started_at)
    stop.set()
    await asyncio.gather(*tasks)
    return run


def report_hot(label: str, run: HotRun, seconds: float) -> None:
    quiet = [mid for mid in run.enqueued_at if mid.startswith("quiet:")]
    waits = sorted(run.started_at[m] - run.enqueued_at[m] for m in quiet if m in run.started_at)
    hot_done = sum(len(v) for k, v in run.seen.items() if k.startswith("hot"))
    quiet_done = sum(len(v) for k, v in run.seen.items() if k.startswith("quiet"))
    violations = sum(1 for v in run.seen.values() for a, b in itertools.pairwise(v) if b <= a)
    duplicates = sum(len(v) - len(set(v)) for v in run.seen.values())
    print(f"{label}:")
    if waits:
        print(f"  quiet messages' wait (enqueue -> processing start): worst "
              f"{waits[-1] * 1000:.0f} ms, p99 {_quantile(waits, 0.99) * 1000:.0f} ms, median "
              f"{statistics.median(waits) * 1000:.0f} ms (n={len(waits)} of {len(quiet)})")
    print(f"  total processed: {run.processed} ({hot_done} hot, {quiet_done} quiet) in "
          f"{run.wall_s:.1f} s; hot messages per second while sending: "
          f"{hot_done / max(seconds, 1e-9):.1f}; never processed: {run.unprocessed}; ready list "
          f"length when sending stopped: {run.ready_len}")
    print(f"  order violations: {violations}; processed twice: {duplicates}")


async def hot_case(args: argparse.Namespace) -> None:
    defaults = Settings.model_fields
    turn_messages = int(args.turn_messages or defaults["bot_turn_messages"].default)
    turn_s = float(args.turn_s or defaults["bot_turn_s"].default)
    print(f"{args.hot} hot conversations (next message as soon as the previous is answered), "
          f"{args.quiet} quiet ones (one message every ~{args.quiet_every:g} s each), handler "
          f"{args.handler_ms:g} ms, {args.hot_workers} worker tasks, {args.seconds:g} s of "
          f"sending")
    async with isolated_runtime() as rt:
        bounded = await hot_run(rt, args, "hotbounded", turn_messages, turn_s)
        report_hot(f"bounded turns (BOT_TURN_MESSAGES={turn_messages}, BOT_TURN_S={turn_s:g})",
                   bounded, args.seconds)
        if not args.no_baseline:
            unbounded = await hot_run(rt, args, "hotunbounded", UNBOUNDED, float(UNBOUNDED))
            report_hot("baseline, turns that never end (a worker keeps a conversation while "
                       "it has work)", unbounded, args.seconds)


async def main(args: argparse.Namespace) -> None:
    if args.case in ("fifo", "all"):
        await fifo_case(args)
    if args.case in ("hot", "all"):
        await hot_case(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["fifo", "hot", "all"], default="all")
    parser.add_argument("--conversations", type=int, default=20, help="fifo case")
    parser.add_argument("--messages", type=int, default=20, help="fifo case")
    parser.add_argument("--workers", type=int, default=20, help="fifo case: worker tasks")
    parser.add_argument("--hot", type=int, default=4, help="hot conversations")
    parser.add_argument("--quiet", type=int, default=20, help="quiet conversations")
    parser.add_argument("--quiet-every", type=float, default=2.0,
                        help="mean seconds between two messages of one quiet conversation")
    parser.add_argument("--handler-ms", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0, help="hot case: sending time")
    parser.add_argument("--drain-s", type=float, default=120.0,
                        help="hot case: the longest wait for the backlog after sending")
    parser.add_argument("--hot-workers", type=int,
                        default=int(Settings.model_fields["bot_workers"].default),
                        help="hot case: worker tasks (default: bot run's BOT_WORKERS)")
    parser.add_argument("--turn-messages", type=int, default=0,
                        help="hot case: override BOT_TURN_MESSAGES")
    parser.add_argument("--turn-s", type=float, default=0.0,
                        help="hot case: override BOT_TURN_S")
    parser.add_argument("--no-baseline", action="store_true",
                        help="hot case: skip the run with turns that never end")
    asyncio.run(main(parser.parse_args()))
