"""Input-rail quality and latency on a labelled CSV (`text,label`, label 1 = attack).

    python -m bench.rails [--data CSV] [--threshold T]

Runs the default policy's input rails (length + the offline injection classifier) on every
row, one message at a time as the bot does, and prints precision, recall and false-positive
rate at the threshold, with p50/p95/p99 latency per message. The baseline, run in the same
process on the same rows, is the kind of keyword list offline guardrail kits fall back to;
the ratio line compares the two latencies. Default data: the S-Labs validation split, shipped
in tests/fixtures/prompt-injection/.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import re
import statistics
import time
from pathlib import Path

from bot.cli_rails import input_guardrails
from bot.guardrails.base import RailContext, run_rails
from bot.guardrails.policy import GuardrailPolicy
from bot.log import configure_logging

#: The dataset's validation split, shipped with the tests (tests/fixtures/SOURCES.md).
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "prompt-injection" \
    / "validation.csv"

KEYWORDS = re.compile(
    r"ignore (all )?(previous|prior|above) instructions|disregard (all )?(previous|prior)|"
    r"system prompt|jailbreak|\bDAN\b|developer mode|do anything now", re.IGNORECASE)


def figures(name: str, predicted: list[bool], labels: list[bool], latencies_s: list[float]
            ) -> str:
    tp = sum(p and y for p, y in zip(predicted, labels, strict=True))
    fp = sum(p and not y for p, y in zip(predicted, labels, strict=True))
    positives = sum(labels)
    negatives = len(labels) - positives
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / positives if positives else 0.0
    fpr = fp / negatives if negatives else 0.0
    ordered = sorted(latencies_s)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    return (f"{name:<22} precision {precision:.4f}  recall {recall:.4f}  FPR {fpr:.4f}  "
            f"(TP {tp}, FP {fp}, n={len(labels)})  latency p50 "
            f"{statistics.median(ordered) * 1000:.2f} ms  p95 {pct(0.95):.2f} ms  "
            f"p99 {pct(0.99):.2f} ms")


async def main(args: argparse.Namespace) -> None:
    configure_logging("WARNING", "console", [])  # one verdict line per attack is noise here
    with args.data.open(newline="", encoding="utf-8") as handle:
        rows = [(r["text"], r["label"].strip() == "1") for r in csv.DictReader(handle)]
    policy = GuardrailPolicy()
    if args.threshold is not None:
        policy = policy.model_copy(update={"input": policy.input.model_copy(
            update={"injection_threshold": args.threshold})})
    rails = input_guardrails(policy)
    assert rails.injection is not None
    for text, _ in rows[:20]:  # load the model and warm up
        await run_rails(rails.input_rails, text, RailContext(), stage="bench")
    labels = [y for _, y in rows]
    predicted, latencies = [], []
    for text, _ in rows:
        started = time.perf_counter()
        outcome = await run_rails(rails.input_rails, text, RailContext(), stage="bench")
        latencies.append(time.perf_counter() - started)
        predicted.append(outcome.blocked is not None)
    base_predicted, base_latencies = [], []
    for text, _ in rows:
        started = time.perf_counter()
        base_predicted.append(KEYWORDS.search(text) is not None)
        base_latencies.append(time.perf_counter() - started)
    rails.close()
    print(f"data: {args.data} ({len(rows)} rows, {sum(labels)} attacks); injection threshold "
          f"{rails.injection.threshold:.4f}")
    print(figures("input rails", predicted, labels, latencies))
    print(figures("keyword baseline", base_predicted, labels, base_latencies))
    ratio = statistics.median(latencies) / max(statistics.median(base_latencies), 1e-9)
    print(f"median latency ratio rails / keyword baseline: {ratio:.0f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threshold", type=float, default=None)
    asyncio.run(main(parser.parse_args()))
