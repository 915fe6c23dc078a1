"""Input-rail quality and latency on a labelled CSV (`text,label`, label 1 = attack), and
passage-rail quality and latency on a passage set (JSON lines).

    python -m bench.rails [--data CSV] [--threshold T]
    python -m bench.rails --passages JSONL [--passage-threshold T] [--passage-weights NPZ]
        [--no-input] [--top N]

Runs the default policy's input rails (length + the offline injection classifier) on every
row, one message at a time as the bot does, and prints precision, recall and false-positive
rate at the threshold, with p50/p95/p99 latency per message. The baseline, run in the same
process on the same rows, is the kind of keyword list offline guardrail kits fall back to;
the ratio line compares the two latencies. Default data: the S-Labs validation split, shipped
in tests/fixtures/prompt-injection/.

`--passages` adds the passage rail: every passage goes through the injection rail's
`filter_passages` alone, as the `CheckPassages` stage runs it (a passage's verdict does not
depend on the others retrieved with it), with the policy's passage model
(`bot.guardrails.passage_model`; `--passage-weights NPZ` replaces the shipped weights) at the
policy's passage threshold (`--passage-threshold` overrides it). The file is what
`bot.guardrails.passage_data` writes (`text`, `label`, `source`, `placement`, `attack_span`,
`decoy`; the held-out sample is tests/fixtures/passages/heldout_sample.jsonl). A benign passage
is flagged when anything in it is cut (or it is dropped); an injected passage is caught when it
is dropped or a cut overlaps its `attack_span` (cutting only a documentation sentence beside
the attack is no catch). Printed: precision, recall, FPR and latency per passage (split, score,
cut), the flag rate of benign passages per source (`pypi:*` groups the READMEs of Python
distributions) and per decoy block, recall per placement, and the highest-scoring benign
passages.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from bot.cli_rails import input_guardrails
from bot.guardrails.base import RailContext, run_rails
from bot.guardrails.policy import GuardrailPolicy
from bot.log import configure_logging
from bot.messages import Passage

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


def _group(source: str) -> str:
    return "pypi:*" if source.startswith("pypi:") else source


def _rates(title: str, rows: dict[str, list[bool]], what: str) -> list[str]:
    lines = [f"{title:<34} {'n':>6} {what:>8} {'rate':>8}"]
    for key in sorted(rows):
        hits = rows[key]
        lines.append(f"  {key:<32} {len(hits):>6} {sum(hits):>8} {sum(hits) / len(hits):>8.4f}")
    return lines


async def passage_report(args: argparse.Namespace) -> None:
    """The passage rail on `args.passages` (see the module docstring)."""
    from bot.guardrails import passage_model

    if getattr(args, "passage_weights", None):
        passage_model.DEFAULT_WEIGHTS = Path(args.passage_weights)
    with args.passages.open(encoding="utf-8") as handle:
        records: list[dict[str, Any]] = [json.loads(line) for line in handle if line.strip()]
    policy = GuardrailPolicy()
    if args.passage_threshold is not None:
        policy = policy.model_copy(update={"passages": policy.passages.model_copy(
            update={"injection_threshold": args.passage_threshold})})
    rails = input_guardrails(policy)
    injection = rails.injection
    assert injection is not None and rails.passage_injection

    def passage(r: dict[str, Any]) -> Passage:
        return Passage(text=r["text"], uri=str(r.get("source", "")), title=str(r.get("doc", "")),
                       section="", page=None, score=0.0)

    for r in records[:20]:  # load the model and warm up
        await injection.filter_passages([passage(r)])
    flagged: list[bool] = []
    scores: list[float] = []
    latencies: list[float] = []
    for r in records:
        started = time.perf_counter()
        [check] = await injection.filter_passages([passage(r)])
        latencies.append(time.perf_counter() - started)
        span = r.get("attack_span")
        if r["label"] and span:
            hit = check.dropped or any(c.start < span[1] and span[0] < c.end
                                       for c in check.cuts)
        else:
            hit = check.dropped or bool(check.cuts)
        flagged.append(hit)
        scores.append(check.score)
    rails.close()
    labels = [bool(r["label"]) for r in records]
    print(f"passages: {args.passages} ({len(records)} passages, {sum(labels)} injected); "
          f"passage weights {passage_model.DEFAULT_WEIGHTS.name}, threshold "
          f"{injection.passage_threshold:.4f}")
    print(figures("passage rail", flagged, labels, latencies))
    by_source: dict[str, list[bool]] = defaultdict(list)
    by_decoy: dict[str, list[bool]] = defaultdict(list)
    by_place: dict[str, list[bool]] = defaultdict(list)
    for r, hit in zip(records, flagged, strict=True):
        if r["label"]:
            by_place[str(r.get("placement"))].append(hit)
        elif r.get("decoy"):
            by_decoy[str(r["decoy"])].append(hit)
        else:
            by_source[_group(str(r.get("source", "")))].append(hit)
    plain = [h for hits in by_source.values() for h in hits]
    print(f"plain benign passages flagged: {sum(plain)}/{len(plain)} "
          f"({sum(plain) / max(len(plain), 1):.2%}); injected caught: "
          f"{sum(flagged[i] for i, y in enumerate(labels) if y)}/{sum(labels)}")
    print("\n".join(_rates("benign passages by source", by_source, "flagged")))
    if by_decoy:
        print("\n".join(_rates("benign with a decoy block, by kind", by_decoy, "flagged")))
    print("\n".join(_rates("injected passages by placement", by_place, "caught")))
    benign = sorted(((s, r) for r, s in zip(records, scores, strict=True)
                     if not r["label"] and not r.get("decoy")), key=lambda x: -x[0])
    if benign and args.top:
        print(f"highest-scoring plain benign passages (of {len(benign)}):")
    for s, r in benign[:args.top]:
        snippet = " ".join(r["text"].split())[:160]
        print(f"  {s:.4f} {r.get('source')} {r.get('doc')}: {snippet}")


async def main(args: argparse.Namespace) -> None:
    configure_logging("WARNING", "console", [])  # one verdict line per attack is noise here
    if not args.no_input:
        await input_report(args)
    if args.passages is not None:
        await passage_report(args)


async def input_report(args: argparse.Namespace) -> None:
    """The input rails on `args.data` against the keyword baseline, then on the held-out input
    set per category (`args.heldout_input`, default
    tests/fixtures/injection_heldout/heldout.csv, columns text,label,category,source; an empty
    path skips it): precision, recall, FPR and p50/p95 latency per category, one message at a
    time through the rails. `args.injection_weights` (an .npz) replaces the shipped classifier
    weights, e.g. the model before a retrain: `git show HEAD:bot/guardrails/data/injection.npz
    > /tmp/before.npz; python -m bench.rails --injection-weights /tmp/before.npz`."""
    from bot.guardrails import injection as injection_module

    weights = getattr(args, "injection_weights", None)
    if weights:
        injection_module.DEFAULT_WEIGHTS = Path(weights)
    heldout = getattr(args, "heldout_input", None)
    if heldout is None:
        heldout = DEFAULT_DATA.parents[1] / "injection_heldout" / "heldout.csv"

    def read_heldout(path: Path) -> list[dict[str, str]]:
        if not str(path) or not path.is_file():
            return []
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

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
    held = await asyncio.to_thread(read_heldout, Path(heldout))
    held_hits: list[bool] = []
    held_lat: list[float] = []
    held_base: list[bool] = []
    for r in held:
        started = time.perf_counter()
        outcome = await run_rails(rails.input_rails, r["text"], RailContext(), stage="bench")
        held_lat.append(time.perf_counter() - started)
        held_hits.append(outcome.blocked is not None)
        held_base.append(KEYWORDS.search(r["text"]) is not None)
    rails.close()
    print(f"injection weights: {weights or 'shipped'}")
    print(f"data: {args.data} ({len(rows)} rows, {sum(labels)} attacks); injection threshold "
          f"{rails.injection.threshold:.4f}")
    print(figures("input rails", predicted, labels, latencies))
    print(figures("keyword baseline", base_predicted, labels, base_latencies))
    ratio = statistics.median(latencies) / max(statistics.median(base_latencies), 1e-9)
    print(f"median latency ratio rails / keyword baseline: {ratio:.0f}x")
    if not held:
        return
    held_labels = [r["label"].strip() == "1" for r in held]
    print(f"held-out input set: {heldout} ({len(held)} rows, {sum(held_labels)} attacks; "
          f"never trained on); per category (keyword baseline: no latency)")
    print(figures("all: input rails", held_hits, held_labels, held_lat))
    print(figures("all: keyword baseline", held_base, held_labels, [0.0] * len(held)))
    cats: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(held):
        cats[r["category"]].append(i)
    print(f"  {'category':<22} {'attacks':>7} {'recall':>7} {'benign':>6} {'FPR':>7} "
          f"{'precision':>9} {'p50 ms':>7} {'p95 ms':>7}")

    def rate(part: int, whole: int) -> str:
        return f"{part / whole:.3f}" if whole else "-"

    for cat in sorted(cats):
        idx = cats[cat]
        pos = [held_hits[i] for i in idx if held_labels[i]]
        neg = [held_hits[i] for i in idx if not held_labels[i]]
        lat = sorted(held_lat[i] for i in idx)
        p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
        print(f"  {cat:<22} {len(pos):>7} {rate(sum(pos), len(pos)):>7} {len(neg):>6} "
              f"{rate(sum(neg), len(neg)):>7} {rate(sum(pos), sum(pos) + sum(neg)):>9} "
              f"{statistics.median(lat) * 1000:>7.2f} {p95 * 1000:>7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--heldout-input", type=Path, default=None,
                        help="held-out input set (text,label,category); '' skips it")
    parser.add_argument("--injection-weights", type=Path, default=None,
                        help="injection classifier weights instead of the shipped ones")
    parser.add_argument("--passages", type=Path, default=None,
                        help="also report the passage rail on these JSON lines")
    parser.add_argument("--passage-threshold", type=float, default=None)
    parser.add_argument("--passage-weights", type=Path, default=None,
                        help="passage model weights (.npz) instead of the shipped ones")
    parser.add_argument("--no-input", action="store_true", help="skip the input rails")
    parser.add_argument("--top", type=int, default=0,
                        help="highest-scoring benign passages to print (default none: on the "
                             "held-out split, reading them is looking at the evaluation set)")
    asyncio.run(main(parser.parse_args()))
