"""Per-conversation ordering under load: 20 conversations x 20 messages, a handler that sleeps
200 ms, through the real inbox and workers.

    python -m bench.ordering [--conversations 20] [--messages 20] [--workers 20]

Ideal wall time is messages x 0.2 s (each conversation is serial, conversations in parallel):
about 4 s, against 80 s if everything ran one after another (the baseline the ratio uses).
Prints the wall time, order violations and messages processed more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import defaultdict

from bench._common import isolated_runtime
from bot.messages import Conversation, Message
from bot.pipeline import Context, Pipeline
from bot.worker import Worker


async def main(args: argparse.Namespace) -> None:
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--workers", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
