"""Figures of the passage model on passage sets of `bot.guardrails.passage_data` (JSON lines),
shared by `bot.guardrails.passage_training` (validation), bench/rails.py and the tests. Imports
without scikit-learn.

A passage is cut into the rail's own units (`bot.guardrails.units.split_units`). Two ways to
count, both with one scorer call per passage:

* `unit_figures` (fast, for choices in training): a plain benign passage is flagged when any
  unit scores >= the threshold; an injected passage is caught when a unit overlapping its
  `attack_span` does.
* `rail_figures` (the rail's real path, for the reported figures and the tests): the passage
  goes through `bot.guardrails.passages.check_passage` (cuts, neighbour joins, the drop rule);
  a benign passage is flagged when anything is cut or it is dropped; an injected passage is
  caught when it is dropped or a cut overlaps its `attack_span`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bot.guardrails.passages import check_passage
from bot.guardrails.units import Unit, split_units

Record = dict[str, Any]
Scorer = Callable[[list[str]], list[float]]
#: group -> key -> one bool per passage ("benign" by source, "decoy" by kind, "caught" by
#: placement).
Groups = dict[str, dict[str, list[bool]]]


def read_jsonl(path: Path) -> list[Record]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def source_group(r: Record) -> str:
    src = str(r.get("source", ""))
    return "READMEs (pypi:*)" if src.startswith("pypi:") else src


def overlaps(start: int, end: int, span: list[int] | None) -> bool:
    return span is not None and start < span[1] and span[0] < end


def attack_share(unit: Unit, span: list[int]) -> float:
    """Share of the unit's characters that belong to the attack span, in [0, 1]."""
    inter = max(0, min(unit.end, span[1]) - max(unit.start, span[0]))
    return inter / max(unit.end - unit.start, 1)


def passage_units(records: list[Record]) -> list[list[Unit]]:
    return [split_units(r["text"]) for r in records]


def _key(r: Record) -> tuple[str, str]:
    if r["label"]:
        return "caught", str(r["placement"])
    if r.get("decoy"):
        return "decoy", str(r["decoy"])
    return "benign", source_group(r)


def unit_figures(records: list[Record], units: list[list[Unit]],
                 scores: list[list[float]], thr: float) -> Groups:
    """Flags per group from unit scores (see the module docstring)."""
    out: Groups = {"benign": defaultdict(list), "decoy": defaultdict(list),
                   "caught": defaultdict(list)}
    for r, us, sc in zip(records, units, scores, strict=True):
        group, key = _key(r)
        if r["label"]:
            hit = any(s >= thr and overlaps(u.start, u.end, r["attack_span"])
                      for u, s in zip(us, sc, strict=True))
        else:
            hit = max(sc, default=0.0) >= thr
        out[group][key].append(hit)
    return out


def max_scores(records: list[Record], units: list[list[Unit]], scores: list[list[float]]
               ) -> tuple[list[float], list[float]]:
    """(highest unit score of each plain benign passage, highest score of a unit overlapping
    the attack of each injected passage)."""
    benign, attack = [], []
    for r, us, sc in zip(records, units, scores, strict=True):
        if r["label"]:
            attack.append(max((s for u, s in zip(us, sc, strict=True)
                               if overlaps(u.start, u.end, r["attack_span"])), default=0.0))
        elif not r.get("decoy"):
            benign.append(max(sc, default=0.0))
    return benign, attack


def operating_point(benign: list[float], max_flag: float) -> float:
    """Lowest threshold with a benign flag rate <= max_flag (just above the highest benign
    score allowed to stay under it)."""
    b = np.sort(np.array(benign))[::-1]
    k = int(np.floor(max_flag * len(b)))  # passages allowed at or above the threshold
    hi = float(b[k]) if k < len(b) else 0.0
    above = float(b[k - 1]) if k > 0 else 1.0
    return hi + min(1e-4, (above - hi) / 2) if above > hi else hi + 1e-6


def rail_figures(records: list[Record], scorer: Scorer, threshold: float
                 ) -> tuple[Groups, list[float]]:
    """Flags per group through `check_passage` (see the module docstring), and the seconds
    each passage took (split, score, cut)."""
    out: Groups = {"benign": defaultdict(list), "decoy": defaultdict(list),
                   "caught": defaultdict(list)}
    latencies: list[float] = []
    for r in records:
        started = time.perf_counter()
        check = check_passage(r["text"], scorer, threshold)
        latencies.append(time.perf_counter() - started)
        group, key = _key(r)
        if r["label"]:
            hit = check.dropped or any(overlaps(c.start, c.end, r["attack_span"])
                                       for c in check.cuts)
        else:
            hit = check.dropped or bool(check.cuts)
        out[group][key].append(hit)
    return out, latencies


def table(title: str, groups: dict[str, list[bool]], what: str) -> str:
    lines = [title]
    for k in sorted(groups):
        v = groups[k]
        lines.append(f"  {k:28s} {sum(v):5d}/{len(v):5d} {what} ({sum(v) / max(len(v), 1):.2%})")
    return "\n".join(lines)


def overall(g: Groups) -> tuple[float, float]:
    """(plain benign flag rate, recall over every placement)."""
    b = [x for v in g["benign"].values() for x in v]
    c = [x for v in g["caught"].values() for x in v]
    return sum(b) / max(len(b), 1), sum(c) / max(len(c), 1)


def report(name: str, records: list[Record], scorer: Scorer, threshold: float) -> Groups:
    """Print the rail-path figures of `records` (per source, decoy kind and placement, p50/p95
    per passage) and return them."""
    scorer(["warm up the embedder with a sentence"])
    g, lat = rail_figures(records, scorer, threshold)
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [lat[0] if lat else 0.0] * 99
    flag, recall = overall(g)
    print(f"{name}: {len(records)} passages, threshold {threshold:.4f}, per passage "
          f"p50 {q[49] * 1e3:.1f} ms p95 {q[94] * 1e3:.1f} ms")
    print(table("  benign passages by source", g["benign"], "flagged"))
    print(table("  benign with a decoy block", g["decoy"], "flagged"))
    print(table("  injected passages by placement", g["caught"], "caught"))
    print(f"  overall: plain benign flagged {flag:.2%}, recall {recall:.4f}")
    return g
