"""Fit the passage model's context re-reading (rounds 10-12; a training-time script, numpy).

    python -m bot.guardrails.passage_context --weights bot/guardrails/data/passage.npz \\
        --calibrate /tmp/passages_b/heldout.jsonl /tmp/passages_c/heldout.jsonl \\
        /tmp/passages_d/heldout.jsonl --out /tmp/passage_ctx.npz [--every 3] \\
        [--context-chars 600] [--context-min-chars 120] [--fit-floor 0.4] [--flag 0.004] \\
        [--jobs 2] [--alone-threshold T]

An attack pasted into a passage does not belong to it: it shares few of the passage's words and
little of its meaning, while a sentence of documentation that reads like an order to the reader
("You must set the secret key ...") is about the same things as the sentences around it. The
context re-reading (`PassageModel.with_context`) turns each embedded unit's blended score p
into sigmoid(a * logit(p) + w_cos * cos + w_lex * lex + bias), where cos is the cosine of the
unit's embedding to the embedding of the passage's other units (cut to `--context-chars`) and
lex the share of its words found in them (`passage_model.lexical_overlap`).

The four weights are a logistic regression (Newton's method, a small L2 penalty) on the
embedded units with p >= `--fit-floor` of the `--calibrate` sets (`passage_data` JSON lines):
the units overlapping the attack of injected passages against every unit of plain benign
passages (decoys are left out: a decoy block is another passage's sentence, off-topic by
construction). Those sets must be passages the base weights never trained on (the held-out
sources of earlier splits), so that p is what the model gives unseen documentation. The
threshold is the lowest with at most `--flag` of the calibration sets' plain benign passages
flagged (a unit at or above it; the units that are not embedded keep their n-gram lower bound).
A passage without enough context (its other units hold fewer than `--context-min-chars`
characters: two or three sentences, or the text of a neighbour join) is left out of the fit:
its blend is only shifted onto the new scale, so that it is flagged where the base weights
flag it (`--alone-threshold`, default their threshold), and it counts at that point when the
threshold is chosen (round 11: round 10's fit read cos = 0 and lex = 0 there as "off topic",
which cut a one-sentence passage about a bot's prompt at a blend of 0.47; round 12: a context
of one short sentence did the same, so the minimum is 120 characters, not 1).
At inference the context is embedded only when some unit could reach the threshold with it,
at cos = `LOW_COS` (stored as `context_low_cos`) and its own lex, so skipping the embedding
never changes a verdict; `context_floor`, printed, is the blend under which no unit can.
Prints the figures per calibration set; writes the base
weights with the new meta to `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bot.guardrails.passage_eval import Record, operating_point, overlaps, read_jsonl
from bot.guardrails.passage_model import PassageModel, logit
from bot.guardrails.units import split_units

Array = npt.NDArray[np.float64]
#: The lowest cosine assumed when skipping the context (the lowest seen between a unit
#: and its context on 1,800 passages of split E was -0.18).
LOW_COS = -0.35


@dataclass(frozen=True)
class PassageRow:
    """One passage's embedded units: `x` (k, 3) = [logit(p), cos, lex], `attack` (k,) whether
    each overlaps the attack; `rest` the highest lower bound of the units that are not
    embedded (of those overlapping the attack, for an injected passage); `alone` when the
    passage has no context (`PassageModel.context_of`)."""

    label: int
    decoy: bool
    source: str
    x: Array
    attack: npt.NDArray[np.bool_]
    rest: float
    alone: bool = False


def passage_row(model: PassageModel, r: Record) -> PassageRow:
    units = split_units(r["text"])
    texts = [u.text for u in units]
    out, picked, mixed, vectors = model.parts(texts)
    span = r.get("attack_span") if r["label"] else None
    hit = [overlaps(u.start, u.end, span) for u in units]
    alone = False
    if picked:
        cos, lex, alone = model.context_of(texts, picked, mixed, vectors, force=True)
        x = np.stack([logit(mixed), cos, lex], axis=1)
    else:
        x = np.zeros((0, 3))
    rest = [float(out[i]) for i in range(len(units))
            if i not in picked and (hit[i] or not r["label"])]
    return PassageRow(int(r["label"]), bool(r.get("decoy")), str(r["source"]), x,
                      np.array([hit[i] for i in picked], dtype=bool), max(rest, default=0.0),
                      alone)


_MODEL: PassageModel | None = None


def _init(weights: str, context_chars: int, context_min_chars: int) -> None:
    global _MODEL
    _MODEL = PassageModel.load(Path(weights))
    _MODEL.context_chars = context_chars
    _MODEL.context_min_chars = context_min_chars


def _rows(records: list[Record]) -> list[PassageRow]:
    assert _MODEL is not None
    return [passage_row(_MODEL, r) for r in records]


def read_rows(weights: Path, records: list[Record], context_chars: int, jobs: int,
              context_min_chars: int = 1) -> list[PassageRow]:
    """`passage_row` of every record, in `jobs` processes (one embedder thread each)."""
    parts = [records[i::jobs] for i in range(jobs)]
    with ProcessPoolExecutor(jobs, initializer=_init,
                             initargs=(str(weights), context_chars, context_min_chars)) as pool:
        done = list(pool.map(_rows, parts))
    return [done[i % jobs][i // jobs] for i in range(len(records))]


def fit_logistic(x: Array, y: Array, l2: float = 1e-3, iters: int = 30) -> Array:
    """Weights (d + 1,) of a logistic regression of y on x (n, d), the bias last."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -40, 40)))
        grad = xb.T @ (p - y) + l2 * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + l2 * np.eye(len(w))
        w -= np.linalg.solve(hess, grad)
    return w


def training_set(rows: list[PassageRow], fit_floor: float) -> tuple[Array, Array]:
    """(x, y) of the regression: see the module docstring."""
    xs, ys = [], []
    floor = float(logit(np.array([fit_floor]))[0])
    for row in rows:
        if row.decoy or row.alone:
            continue
        keep = row.x[:, 0] >= floor
        if row.label:
            keep &= row.attack
        xs.append(row.x[keep])
        ys.append(np.full(int(keep.sum()), float(row.label)))
    return np.concatenate(xs), np.concatenate(ys)


def maxima(rows: list[PassageRow], w: Array, shift: float = 0.0
           ) -> tuple[list[float], list[float]]:
    """(highest score of each plain benign passage, highest score of an attack unit of each
    injected passage) under the re-reading weights `w` (a passage without context: its blend
    shifted by `shift` in logit)."""
    benign, attack = [], []
    for row in rows:
        if row.decoy:
            continue
        z = row.x[:, 0] + shift if row.alone else row.x @ w[:3] + w[3]
        s = 1.0 / (1.0 + np.exp(-z)) if len(row.x) else np.zeros(0)
        if row.label:
            attack.append(max([float(v) for v in s[row.attack]] + [row.rest]))
        else:
            benign.append(max([float(v) for v in s] + [row.rest]))
    return benign, attack


def choose_threshold(rows: list[PassageRow], w: Array, flag: float, alone_threshold: float
                     ) -> float:
    """The lowest threshold with at most `flag` of the plain benign passages flagged, where a
    passage without context is flagged when its blend reaches `alone_threshold` (whatever the
    threshold: the shift maps one onto the other)."""
    benign = [r for r in rows if not r.label and not r.decoy]
    alone = sum(1 for r in benign if r.alone and len(r.x)
                and float(np.max(r.x[:, 0])) >= float(logit(np.array([alone_threshold]))[0]))
    scores, _ = maxima([r for r in benign if not r.alone], w)
    allowed = max(int(np.floor(flag * len(benign))) - alone, 0)
    return operating_point(scores, (allowed + 0.5) / max(len(scores), 1))


def context_floor(w: Array, threshold: float) -> float:
    """The highest blended score that stays under `threshold` at cos = LOW_COS, lex = 0 (the
    most suspicious values: the weights of cos and lex must be negative, a's positive)."""
    if not (w[0] > 0 and w[1] < 0 and w[2] < 0):
        raise ValueError(f"context weights {w} have an unexpected sign; refusing to derive the "
                         "context floor")
    z = float(logit(np.array([threshold]))[0])
    return float(1.0 / (1.0 + np.exp(-(z - w[3] - w[1] * LOW_COS) / w[0]))) - 1e-3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--calibrate", type=Path, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--every", type=int, default=1, help="read every n-th passage")
    parser.add_argument("--context-chars", type=int, default=600)
    parser.add_argument("--context-min-chars", type=int, default=120,
                        help="a passage whose context is shorter is read without it")
    parser.add_argument("--fit-floor", type=float, default=0.4)
    parser.add_argument("--flag", type=float, default=0.004)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--alone-threshold", type=float,
                        help="blend threshold of a passage without context (default: the base "
                             "weights' threshold)")
    args = parser.parse_args()
    per_set = {}
    for path in args.calibrate:
        records = read_jsonl(path)[::args.every]
        per_set[str(path)] = read_rows(args.weights, records, args.context_chars, args.jobs,
                                       args.context_min_chars)
    rows = [row for part in per_set.values() for row in part]
    with np.load(args.weights, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
        meta = json.loads(str(z["meta"]))
    alone_threshold = args.alone_threshold or float(meta["threshold"])
    x, y = training_set(rows, args.fit_floor)
    w = fit_logistic(x, y)
    threshold = math.ceil(choose_threshold(rows, w, args.flag, alone_threshold) * 1e4) / 1e4
    shift = float(logit(np.array([threshold]))[0] - logit(np.array([alone_threshold]))[0])
    floor = context_floor(w, threshold)
    print(f"{len(y)} units ({int(y.sum())} attack), weights a {w[0]:.4f} cos {w[1]:.4f} "
          f"lex {w[2]:.4f} bias {w[3]:.4f}; threshold {threshold:.4f}, context floor {floor:.4f}"
          f", without context: blend >= {alone_threshold:.4f} (shift {shift:.4f})")
    for name, part in per_set.items():
        b, a = maxima(part, w, shift)
        print(f"  {name}: plain benign flagged {np.mean(np.array(b) >= threshold):.4f} "
              f"({len(b)}), recall {np.mean(np.array(a) >= threshold):.4f} ({len(a)})")
    meta.update(threshold=threshold, context_chars=args.context_chars, context_none_shift=shift,
                context_min_chars=args.context_min_chars, context_low_cos=LOW_COS,
                context_a=float(w[0]), context_cos=float(w[1]),
                context_lex=float(w[2]), context_bias=float(w[3]))
    np.savez_compressed(args.out, **arrays, meta=json.dumps(meta))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
