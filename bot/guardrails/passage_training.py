"""Train the passage-unit injection model of `bot.guardrails.passage_model` (a training-time
script; `main` needs scikit-learn and scipy, which the runtime does not).

    python -m bot.guardrails.passage_training --data /tmp/passages \\
        --attacks-data DIR --out bot/guardrails/data/passage.npz [--cache DIR] \\
        [--fold 0|1|-1 [--threshold T]] [--window 12] [--case-split 1] [--heldout] \\
        [--c-ngram 30] [--alpha 0.35] [--shares 0.4 0.6] [--min-words 2] [--pieces 1] \\
        [--markup 1] [--read-pieces 0]

Data: `--data` is the output of `bot.guardrails.passage_data` (`train.jsonl`; `heldout.jsonl`
is read only with `--heldout`, once, for the final figures, never for a choice). `--attacks-data`
holds the S-Labs prompt-injection `train.csv` (MIT); its label-1 rows in the passage builder's
train attack split (`passage_data.load_attacks`) are positives, its label-0 rows and the
hand-written `augment_benign.csv` / `augment_chat.csv` beside the weights are chat-register
negatives (weight `CHAT_WEIGHT`). Evaluation helpers are in `bot.guardrails.passage_eval`.

Units: the rail's own, `bot.guardrails.units.split_units` (the same splitter at training,
validation, bench/rails.py and runtime). Training rows (`build_rows`): the units of the
training passages that do not overlap an attack (negatives; decoy passages included: benign
sentences in element positions are the hardest negatives) with up to `NEG_WINDOWS` of their
readings (`passage_model.word_windows`: 12-word windows, case-boundary pieces, sentences,
capitalized lines, the words outside markup); units that
are >= `MIN_ATTACK_SHARE` attack and windows whose words are >= `MIN_WINDOW_SHARE` the
attack's (positives), windows of those units without attack words (negatives); each attack
text and, when it has several sentences, its last one. Rows of at least `MIN_WORDS` words:
about 93,000 (fold 0), 9,900 attacks.

Validation (`--fold`, every choice below): carved from the TRAIN split by source: fold 0 (the
default) is all of git-doc and the README sources with `passage_data.bucket(source, 3) == 0`,
and the attacks with `bucket(attack, 10) == 0` are left out of training, so validation recall
is on unseen attack texts (2,385 plain benign passages, 1,503 injected). Fold 1 swaps in
python-django-doc (a check that the threshold transfers). Operating point: the lowest
threshold with validation benign passage flag rate <= `SHIP_FLAG` (0.5%), a margin under the
acceptance's 1% for sources unlike the validation ones. Seeds are fixed.

Rounds 1-2 (fold 0, then fold 1; recall at benign passages flagged <= 1% / <= 0.5%, and the
<= 0.5% threshold; one change at a time):

* first model (a splitter of its own, no windows): LR alone 0.826 / 0.792; blended (alpha
  0.35) 0.888 / 0.882; line breaks ending a unit, attack-heavy units as positives 0.928 / 0.914.
* the rail's splitter, windows and case-boundary pieces at inference and as training rows:
  windows of 8 words 0.936 / 0.909; 12 words 0.951 / 0.927; 16 + case pieces 0.954 / 0.932;
  **12 + case pieces 0.959 / 0.932** (case pieces alone 0.949 / 0.936, alpha 0.5 0.942 / 0.916,
  top 5 embedded no change). Tried, not kept: line prefixes and suffixes (up to 30 words) as
  readings 0.947 / 0.909; the first and last k words as readings (k 6, 8, 4+8): worse.
* `C_NGRAM` (was 3): C 10 0.961 / 0.944 (0.6509), fold 1 0.949 / 0.938 (0.6121); **C 30 0.963 /
  0.949 (0.6606), fold 1 0.956 / 0.950 (0.6072)**; C 100 0.975 / 0.954 (0.7238), fold 1 0.957 /
  0.939 (0.6616): above C 30 the folds' thresholds drift apart. `--shares 0.25 0.5`: worse;
  alpha 0.25 / 0.45: no better on both folds.

Round 3 (issue 13's shipped-sample recall; `passage_data` rebuilt on another machine, so the
baseline is re-measured: fold 0 0.968 / 0.959 (0.6402), fold 1 0.955 / 0.930 (0.6813)):

* training rows of 2 words (the rail scores 2-word units; "Print prompt" was never a row):
  0.969 / 0.958, neutral alone. With it, as readings at inference and as rows:
* + the sentences and all the lines of a unit, of >= 2 words (and case pieces of 2 words):
  0.979 / 0.939 (0.7631): a wrapped line read alone ("would show you what") scores high; with
  every reading of a benign unit as a negative 0.979 / 0.943. Sentences only: 0.971 / 0.962.
* + sentences and the lines starting with a capital: 0.980 / 0.966 (0.6768), fold 1 0.965 /
  0.943 (0.6940); + 1,500 training passages with an attack glued to a wrapped line: 0.978 /
  0.961, not kept; + the words outside markup (tags, URLs; `word_windows`): 0.980 / 0.977
  (0.6415), fold 1 0.972 / 0.939 (0.7263); case pieces back at >= 3 words: **0.982 / 0.977
  (0.6683), fold 1 0.968 / 0.953 (0.6704)** (model version 1).
* version 1 (trained on all, at 0.6694) failed held-out: plain benign flagged 1.50% (recall
  0.906; sample 4 of 300 flagged, 136 of 150 caught). Neither the folds (their thresholds
  agreed) nor 5,120 benign passages of other installed docs (nodejs, valgrind, libxslt: 0.31%
  flagged, the previous weights 0.49%) showed it. So version 2 keeps the rows and drops the
  new readings at inference (`READ_PIECES` 0: the previous model's readings): fold 0 0.973 /
  0.963 (0.6563), fold 1 0.964 / 0.952 (0.6428), still above the baseline on both folds.
  (Pieces read at a score handicap d, max with the plain readings: at <= 0.5%, d 0.1-0.2
  within 0.005 of d 0 on both folds.)

The shipped weights (version 2) are trained with `--fold -1` (all of the training split) at
`--threshold 0.6496`, the mean of the folds' operating points; no validation figure is measured
on them. Held-out (bench/rails.py, through the rail; 2 versions evaluated, each once): plain
benign passages flagged 0.89% (36 of 4,059: PostgreSQL 0.80%, debian-reference 1.33%, READMEs
0.73%); recall 0.9015 (start 0.86, middle 0.83, end 0.89, elements 0.90-0.94). Shipped sample:
benign 2 of 300 (0.67%), recall 134 of 150 (0.893; middle 12 of 17): the sample's recall target
(135) is still missed by one passage. (Before: held-out 0.82% / 0.904 on the earlier build of
the split, sample 3 of 300 / 131 of 150.)
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from bot.guardrails.injection import EMBED_CHARS, EMBED_DIM, N_FEATURES, featurize, normalize
from bot.guardrails.passage_data import bucket, load_attacks
from bot.guardrails.passage_eval import (
    Record,
    attack_share,
    max_scores,
    operating_point,
    overall,
    overlaps,
    passage_units,
    rail_figures,
    read_jsonl,
    report,
    table,
    unit_figures,
)
from bot.guardrails.passage_model import N_CONTEXT, PassageModel, context_features, word_windows
from knowledge.embedders.onnx import OnnxMiniLM

if TYPE_CHECKING:
    from scipy import sparse

SEED = 20241204
MAX_FLAG = 0.01
#: The shipped operating point: validation flag rate <= 0.5%, a margin for sources unlike the
#: validation ones (acceptance is <= 1% on sources never trained on).
SHIP_FLAG = 0.005
C_NGRAM = 30.0
ALPHA = 0.35
TOP_K = 3
EMBED_FLOOR = -4.0
WINDOW_WORDS = 12
CASE_SPLIT = 1
#: Training rows also read a unit's sentence and capitalized-line pieces and the words outside
#: markup (`word_windows`); `READ_PIECES` 0: the shipped model does not read them at inference.
PIECES = 1
MARKUP = 1
READ_PIECES = 0
#: Training rows need this many words (`--min-words`; the rail scores units of 2 words).
MIN_WORDS = 2
MLP_SEEDS = (0, 1, 2)
MLP_HIDDEN = 32
#: Doc-register benign rows embedded for the networks: the hardest by n-gram score, plus random.
HARD_NEG = 8000
RANDOM_NEG = 4000
CHAT_WEIGHT = 0.5
#: A training unit that overlaps an attack is a positive when this share of it is the attack.
MIN_ATTACK_SHARE = 0.4
#: A window of a unit that overlaps an attack is a positive when this share of its words are
#: the attack's, a negative when none are.
MIN_WINDOW_SHARE = 0.6
#: Windows of a benign unit added as negatives (random ones, per unit).
NEG_WINDOWS = 2
DATA_DIR = Path(__file__).with_name("data")
_WORD = re.compile(r"\w+")


def read_csv(path: Path) -> list[tuple[str, int]]:
    with path.open(encoding="utf-8", newline="") as f:
        return [(r["text"], int(r["label"])) for r in csv.DictReader(f)]


#: Validation carve-outs of the training split (`is_validation`): fold 0 is git-doc, fold 1
#: python-django-doc, each with a third of the READMEs and a tenth of the attacks.
FOLD_SOURCES = ("git-doc", "python-django-doc")


def is_validation(r: Record, fold: int = 0) -> bool:
    """Whether a training-split passage is in validation fold `fold` (-1: none)."""
    if fold < 0:
        return False
    src = str(r["source"])
    if src == FOLD_SOURCES[fold] or (src.startswith("pypi:") and bucket(src, 3) == fold):
        return True
    return bool(r["label"]) and bucket(str(r["attack"]).lower(), 10) == fold


def val_attack(text: str, fold: int = 0) -> bool:
    return fold >= 0 and bucket(" ".join(text.split()).lower(), 10) == fold


class CachedEmbedder:
    """OnnxMiniLM (1 thread) with an on-disk cache keyed by text, for training only."""

    def __init__(self, path: Path) -> None:
        self._model = OnnxMiniLM(threads=1, batch_size=64)
        self._path = path
        self._cache: dict[str, npt.NDArray[np.float32]] = {}
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                self._cache = dict(zip(z["texts"].tolist(), z["vectors"], strict=True))

    def __call__(self, texts: list[str]) -> npt.NDArray[np.float32]:
        texts = [t[:EMBED_CHARS] for t in texts]
        todo = sorted({t for t in texts if t not in self._cache}, key=len)
        for i in range(0, len(todo), 2048):
            part = todo[i:i + 2048]
            for t, v in zip(part, self._model.embed(part), strict=True):
                self._cache[t] = v
            if len(todo) > 256:
                self.save()
        if not texts:
            return np.zeros((0, EMBED_DIM), np.float32)
        return np.stack([self._cache[t] for t in texts])

    def save(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        texts = list(self._cache)
        vectors = np.stack([self._cache[t] for t in texts])
        np.savez(self._path, texts=np.array(texts), vectors=vectors)


def design(texts: list[str]) -> sparse.csr_matrix:
    from scipy import sparse  # training-time only, like scikit-learn

    rows, cols, vals = [], [], []
    for i, t in enumerate(texts):
        idx, val = featurize(t)
        rows.append(np.full(len(idx), i))
        cols.append(idx)
        vals.append(val)
    x = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(len(texts), N_FEATURES))
    ctx = np.stack([context_features(t) for t in texts])
    return sparse.hstack([x, sparse.csr_matrix(ctx)], format="csr")


class Rows:
    """Training rows: normalized text, label, weight, kind."""

    def __init__(self, min_words: int = MIN_WORDS) -> None:
        self.min_words = min_words
        self.texts: list[str] = []
        self.labels: list[int] = []
        self.weights: list[float] = []
        self.kinds: list[str] = []

    def add(self, text: str, label: int, weight: float, kind: str, *, normalized: bool = False
            ) -> None:
        t = text if normalized else normalize(text)
        if len(_WORD.findall(t)) >= self.min_words:
            self.texts.append(t)
            self.labels.append(label)
            self.weights.append(weight)
            self.kinds.append(kind)


def build_rows(train: list[Record], attacks_data: Path, window: int, case_split: bool,
               fold: int, rng: np.random.Generator,
               shares: tuple[float, float] = (MIN_ATTACK_SHARE, MIN_WINDOW_SHARE), *,
               pieces: bool = bool(PIECES), markup: bool = bool(MARKUP),
               min_words: int = MIN_WORDS) -> Rows:
    """Units of the training passages (benign, and the attack-carrying ones as positives),
    their windows, the attack texts, S-Labs rows and the hand-written chat rows."""
    rows = Rows(min_words)
    for r, us in zip(train, passage_units(train), strict=True):
        span = r["attack_span"]
        attack_words = set(normalize(str(r["attack"])).lower().split()) if span else set()
        for u in us:
            readings = word_windows(normalize(u.text), window, case_split, pieces, markup)
            text, wins = readings[0], readings[1:]
            if not overlaps(u.start, u.end, span):
                rows.add(text, 0, 1.0, "doc", normalized=True)
                for i in rng.permutation(len(wins))[:NEG_WINDOWS]:
                    rows.add(wins[i], 0, 1.0, "doc-window", normalized=True)
                continue
            if attack_share(u, span) >= shares[0]:
                rows.add(text, 1, 1.0, "attack-unit", normalized=True)
            for w in wins:
                words = w.lower().split()
                share = sum(x in attack_words for x in words) / len(words)
                if share >= shares[1]:
                    rows.add(w, 1, 1.0, "attack-window", normalized=True)
                elif share == 0:
                    rows.add(w, 0, 1.0, "doc-window", normalized=True)
        if r["label"]:
            attack = str(r["attack"])
            rows.add(attack, 1, 1.0, "attack")
            sents = [s for s in re.split(r"(?<=[.!?])\s+", attack) if s.strip()]
            if len(sents) > 1:
                rows.add(sents[-1], 1, 1.0, "attack")
    train_attacks, _ = load_attacks(attacks_data / "train.csv")
    for attack_text in train_attacks:
        if not val_attack(attack_text, fold):
            rows.add(attack_text, 1, 1.0, "slabs")
    for text, label in read_csv(attacks_data / "train.csv"):
        if label == 0:
            rows.add(text, 0, CHAT_WEIGHT, "chat")
    for name in ("augment_benign.csv", "augment_chat.csv"):
        for text, label in read_csv(DATA_DIR / name):
            rows.add(text, label, CHAT_WEIGHT, "chat")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--attacks-data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=DATA_DIR / "passage.npz")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/passage-cache"))  # noqa: S108
    ap.add_argument("--window", type=int, default=WINDOW_WORDS)
    ap.add_argument("--case-split", type=int, default=CASE_SPLIT)
    ap.add_argument("--pieces", type=int, default=PIECES, help="piece readings as rows")
    ap.add_argument("--markup", type=int, default=MARKUP, help="markup readings as rows")
    ap.add_argument("--read-pieces", type=int, default=READ_PIECES,
                    help="1: the model also reads those at inference (validation, stored)")
    ap.add_argument("--min-words", type=int, default=MIN_WORDS)
    ap.add_argument("--fold", type=int, default=0, choices=(-1, 0, 1),
                    help="validation carve-out; -1: train on all of the training split")
    ap.add_argument("--threshold", type=float, default=None,
                    help="with --fold -1: the threshold to store (from the folds' runs)")
    ap.add_argument("--ship-flag", type=float, default=SHIP_FLAG)
    ap.add_argument("--c-ngram", type=float, default=C_NGRAM)
    ap.add_argument("--alpha", type=float, default=ALPHA)
    ap.add_argument("--shares", type=float, nargs=2, default=(MIN_ATTACK_SHARE, MIN_WINDOW_SHARE),
                    metavar=("UNIT", "WINDOW"), help="attack shares of a positive unit/window")
    ap.add_argument("--heldout", action="store_true", help="report held-out figures once")
    args = ap.parse_args(argv)
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    started = time.time()
    rng = np.random.default_rng(SEED)
    embed = CachedEmbedder(args.cache / "embeddings.npz")
    records = read_jsonl(args.data / "train.jsonl")
    val = [r for r in records if is_validation(r, args.fold)]
    train = [r for r in records if not is_validation(r, args.fold)]
    print(f"passages: train {len(train)}, validation {len(val)}; window {args.window} words, "
          f"case split {args.case_split}")
    rows = build_rows(train, args.attacks_data, args.window, bool(args.case_split), args.fold,
                      rng, tuple(args.shares), pieces=bool(args.pieces),
                      markup=bool(args.markup), min_words=args.min_words)
    read = {"pieces": args.pieces * args.read_pieces, "markup": args.markup * args.read_pieces}
    texts, kinds = rows.texts, np.array(rows.kinds)
    y, w = np.array(rows.labels), np.array(rows.weights)
    print(f"training rows: {len(texts)} ({int(y.sum())} attack); "
          + ", ".join(f"{k} {int((kinds == k).sum())}" for k in sorted(set(rows.kinds))))
    x = design(texts)
    lr = LogisticRegression(C=args.c_ngram, solver="liblinear", max_iter=3000, random_state=SEED)
    lr.fit(x, y, sample_weight=w)
    print(f"n-gram model fitted ({time.time() - started:.0f}s)")

    # Embedding networks: every non-doc row, the hardest doc rows, random doc rows.
    train_logit = lr.decision_function(x)
    doc = np.flatnonzero(np.char.startswith(kinds.astype(str), "doc"))
    hard = doc[np.argsort(-train_logit[doc])[:HARD_NEG]]
    rest = np.setdiff1d(doc, hard)
    pick = np.concatenate([np.setdiff1d(np.arange(len(texts)), doc), hard,
                           rng.choice(rest, min(RANDOM_NEG, len(rest)), replace=False)])
    print(f"embedding {len(pick)} training rows ({time.time() - started:.0f}s)")
    e_train = embed([texts[i] for i in pick])
    mlps = [MLPClassifier(hidden_layer_sizes=(MLP_HIDDEN,), alpha=1e-3, max_iter=300,
                          early_stopping=True, random_state=s).fit(e_train, y[pick])
            for s in MLP_SEEDS]
    embed.save()
    coef = lr.coef_.ravel()
    assert coef.shape == (N_FEATURES + N_CONTEXT,)
    weights: dict[str, Any] = {
        "ngram_w": coef[:N_FEATURES].astype(np.float16),
        "ngram_b": np.float32(lr.intercept_[0]),
        "ctx_w": coef[N_FEATURES:].astype(np.float32),
        "mlp_w1": np.stack([m.coefs_[0] for m in mlps]).astype(np.float32),
        "mlp_b1": np.stack([m.intercepts_[0] for m in mlps]).astype(np.float32),
        "mlp_w2": np.stack([m.coefs_[1][:, 0] for m in mlps]).astype(np.float32),
        "mlp_b2": np.array([m.intercepts_[1][0] for m in mlps], dtype=np.float32)}

    def model(alpha: float, window: int, threshold: float = 0.5) -> PassageModel:
        meta = {"threshold": threshold, "alpha": alpha, "top_k": TOP_K,
                "embed_floor": EMBED_FLOOR, "window_words": window,
                "case_split": args.case_split, **read}
        mlp = (weights["mlp_w1"], weights["mlp_b1"], weights["mlp_w2"], weights["mlp_b2"])
        return PassageModel(weights["ngram_w"], float(weights["ngram_b"]), weights["ctx_w"],
                            mlp, meta, embed)

    val_units = passage_units(val)
    print(f"validation (recall at benign passages flagged <= 1% / <= {args.ship_flag:.1%}):")
    chosen = args.threshold or 0.0
    for alpha, window in ((0.0, args.window), (args.alpha, args.window)) if val else ():
        m = model(alpha, window)
        scores = [m.score([u.text for u in us]) for us in val_units]
        b, a = max_scores(val, val_units, scores)
        thr1, thr_ship = operating_point(b, MAX_FLAG), operating_point(b, args.ship_flag)
        print(f"  alpha {alpha} window {window}: thr {thr1:.4f} recall "
              f"{np.mean(np.array(a) >= thr1):.4f} | thr {thr_ship:.4f} recall "
              f"{np.mean(np.array(a) >= thr_ship):.4f} ({time.time() - started:.0f}s)")
        if alpha == args.alpha:
            chosen = thr_ship
            g = unit_figures(val, val_units, scores, chosen)
            print(table("  units: validation benign passages by source", g["benign"], "flagged"))
            print(table("  units: validation injected by placement", g["caught"], "caught"))
    meta = {"threshold": round(chosen, 4), "alpha": args.alpha, "top_k": TOP_K,
            "embed_floor": EMBED_FLOOR, "window_words": args.window,
            "case_split": args.case_split, **read}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **weights, meta=json.dumps(meta))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes), threshold {meta['threshold']}")
    shipped = model(args.alpha, args.window, meta["threshold"])
    if val:
        g, _ = rail_figures(val, shipped, shipped.threshold)
        print(table("rail path: validation benign passages by source", g["benign"], "flagged"))
        print(table("rail path: validation injected by placement", g["caught"], "caught"))
        print("rail path: validation plain benign flagged {:.2%}, recall {:.4f}".format(
            *overall(g)))
    embed.save()
    if args.heldout:
        for name in ("heldout.jsonl", "heldout_sample.jsonl"):
            if (args.data / name).exists():
                loaded = PassageModel.load(args.out)
                report(name, read_jsonl(args.data / name), loaded, loaded.threshold)
    print(f"done in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
