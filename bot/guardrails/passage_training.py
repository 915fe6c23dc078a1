"""Train the passage-unit injection model of `bot.guardrails.passage_model` (a training-time
script; `main` needs scikit-learn and scipy, which the runtime does not).

    python -m bot.guardrails.passage_training --data /tmp/passages \\
        --attacks-data DIR --out bot/guardrails/data/passage.npz [--cache DIR] \\
        [--fold 0|1|-1 [--threshold T]] [--window 12] [--case-split 1] [--heldout] \\
        [--c-ngram 30] [--alpha 0.35] [--shares 0.4 0.6] [--min-words 2] [--pieces 1] \\
        [--markup 1] [--read-pieces 0] [--read-markup 0] [--mlp-hidden 32] [--seed 0] \\
        [--val-salt r6:] [--vocab-negatives 6000]

Data: `--data` is the output of `bot.guardrails.passage_data` (`train.jsonl`; `heldout.jsonl`
is read only with `--heldout`, once, for the final figures, never for a choice). `--attacks-data`
holds the S-Labs prompt-injection `train.csv` (MIT). Training rows and the validation carve-outs
are `bot.guardrails.passage_rows`'; evaluation helpers `bot.guardrails.passage_eval`'. Units:
the rail's own, `bot.guardrails.units.split_units` (the same splitter at training, validation,
bench/rails.py and runtime).

Validation (`--fold`, every choice below): carved from the TRAIN split by source: fold 0 (the
default) is all of git-doc and the README sources with `passage_data.bucket(source, 3) == 0`,
and the attacks with `bucket(attack, 10) == 0` are left out of training, meant to make
validation recall one on unseen attack texts (about 2,400 plain benign passages, 1,500
injected; split A). Fold 1 swaps in python-django-doc and `bucket(attack, 10) == 1`. (Fold 0's
tenth is empty in the training split: see round 5.) Operating point: the lowest threshold
with validation benign passage flag rate <= `SHIP_FLAG` (0.5%), a margin under the
acceptance's 1% for sources unlike the validation ones. Seeds are fixed; `--seed k` adds k
to all of them (variance checks).

Rounds 1-3 (recall at validation benign passages flagged <= 1% / <= 0.5%, fold 0, fold 1):
the first model (no windows) 0.888 / 0.882; the rail's splitter with 12-word windows (stride 6)
and case-boundary pieces as readings and rows 0.959 / 0.932 (8-word windows, 16-word windows,
line prefixes, first/last k words: worse); `C_NGRAM` 30 (was 3; C 100 drifts the folds'
thresholds apart); alpha 0.25-0.5 no better; top 5 embedded no change. Round 3: rows of 2 words,
and each unit's sentences, capitalized lines and words outside markup as rows (`PIECES`,
`MARKUP`). Version 1 also read them at inference (fold 0 0.982 / 0.977, fold 1 0.968 / 0.953)
but flagged 1.50% of held-out benign passages; version 2 read none of them (fold 0 0.973 /
0.963, fold 1 0.964 / 0.952; held-out 0.89% flagged, recall 0.9015; sample 2 of 300 flagged,
134 of 150 caught; threshold 0.6496).

Round 4 (data rebuilt on another machine: held-out 7,623 passages, was 7,611). Seed noise
first: version 2's recipe with seeds 0/1/2 gives, at <= 0.5%, fold 0 0.963 / 0.965 / 0.964 and
fold 1 0.954 / 0.946 / 0.946, so variants are compared on the mean of three seeds (fold 0 /
fold 1 at <= 0.5%; at <= 1%):

* version 2's recipe: 0.9640 / 0.9488; 0.9747 / 0.9626.
* inference only (seed 0, where version 2's recipe gives 0.963 / 0.954): top 5 or 8 embedded:
  no change; windows at stride 4: 0.963 / 0.949; 8-word windows as extra readings 0.965 /
  0.938; alpha 0.25-0.45: -0.009 to +0.003 (0.3: +0.001 on both folds, one passage each); case
  pieces of 2 words 0.961 / 0.952; the words outside markup read at inference (`READ_MARKUP`;
  the rows had them already): 0.9733 / 0.9481 (3 seeds).
* retrained (seed 0 unless said): 8-word windows as rows and readings 0.953 / 0.938; 4 benign
  windows per unit 0.964 / 0.947; 16,000 hard negatives 0.965 / 0.949; window positives at a
  share of 0.5 0.964 / 0.948; context features for "you" with an AI's make-up ("your
  programming"), a question to "you" without code: 0.968 / 0.950; + camelCase identifiers:
  0.9685 / 0.9429 (3 seeds); camelCase alone 0.966 / 0.945; 5 networks 0.9651 / 0.9475
  (3 seeds); networks of 64 hidden units 0.9694 / 0.9473 (3 seeds).
* **networks of 64 hidden units + the markup reading at inference: 0.9780 / 0.9484; at <= 1%
  0.9857 / 0.9659** (3 seeds; seed 0: 0.9796 at 0.6220, 0.9453 at 0.6606): fold 0 up, fold 1
  level at 0.5% and up at 1%. On 9,852 benign passages of other installed docs (nodejs,
  valgrind, libxslt) and 560 README passages of distributions outside both splits, never
  trained on, the markup reading adds at most one flagged passage at the folds' thresholds
  (version 1 read it together with the sentences and lines; which of them cost version 1 its
  held-out benign rate was never measured).

Version 3 (`--mlp-hidden 64 --read-markup 1`, trained with `--fold -1` at 0.6413, the mean of
0.6220 and 0.6606) was measured once on the held-out split and once on the sample: held-out
plain benign passages flagged 1.01% (41 of 4,066: PostgreSQL 0.91%, debian-reference 1.28%,
READMEs 0.98%), recall 0.9040 (start 0.88, middle 0.84, end 0.86, elements 0.91-0.94); sample
2 of 300 flagged, 135 of 150 caught (middle 12 of 17). The held-out benign rate is over 1% by
one passage, so version 3 was not shipped.

Round 5 (a clean evaluation: both measurements of split A were used). Data
`passage_data --split b`: split A's held-out benign sources (postgresql-doc-15,
debian-reference-en, the other half of the READMEs) are training sources; held out are
sqlite3-doc, apache2-doc, cmake-doc and bind9-doc, never used before (chosen by licence and
format before any score), with the same held-out fifth of the attacks. Recipe fixed before
split B was read: version 3's (`--mlp-hidden 64 --read-markup 1`); the carve-outs as defined
(the READMEs fall into folds by the same bucket, so the new ones join them; postgresql-doc-15
and debian-reference-en are in no fold, always trained on). Note: `bucket(attack, 10) == 0`
implies `bucket(attack, 5) == 0`, so fold 0's tenth of the attacks is all in the held-out
fifth: fold 0 validates on trained-on attack texts (in unseen passages), fold 1 on unseen
ones (true of every round). Fold 0: 0.9779 at <= 1% (0.5326) / 0.9750 at <= 0.5% (0.6151);
fold 1: 0.9682 (0.4683) / 0.9589 (0.5639); n-grams alone (alpha 0) 0.9711 / 0.9659 and
0.9448 / 0.9235. Trained on all at 0.5895 (the mean of 0.6151 and 0.5639; version 5), measured
once on split B (14,549 passages): plain benign flagged 0.67% (52 of 7,759: apache2-doc 1.88%,
bind9-doc 0.40%, cmake-doc 0.15%, sqlite3-doc 0.20%), recall 0.9161 (start 0.89, middle 0.85,
end 0.89, elements 0.92-0.98). Version 2, for the record, on split B: 0.45% and 0.8996. The
pre-declared rule (<= 1%, >= 0.90 on split B) held, but these weights cut one sentence or table
cell of docs/webhook.md, docs/operations.md and docs/admin.md (issue 13's acceptance 4; version
2 cuts none of them), so they are NOT shipped: the defaults and the shipped weights stay
version 2's (`--mlp-hidden 32 --read-markup 0`, threshold 0.6496, trained on split A).

Round 6 (split C, `passage_data --split c`: every source of A and B trains; held out are
python-flask-doc, borgbackup-doc, python-celery-doc and rsyslog-doc). Fixed before any fold
ran: `--val-salt r6:` (each fold validates on a tenth of the training attacks, unseen), the
recipe of version 5 (`--mlp-hidden 64 --read-markup 1`), and a gate before split C may be
read: a candidate whose fold models cut anything of the docs in
`test_this_projects_docs_are_not_cut`, or more units of this project's docs (guardrails.md
aside) than version 2 does (2: a quoted phrase each of actions.md and rate-limits.md), is out.
At <= 0.5% flagged (fold 0 / fold 1, thresholds in brackets):

* R6a, version 5's recipe with the salt: 0.9543 (0.6509) / 0.9629 (0.5964); fold 1's model
  cuts 4 units of the docs.
* R6b, + 4,000 vocabulary negatives (`--vocab-negatives`: benign pieces holding a word of the
  attacks' register, `passage_rows.VOCAB`, then without "you"/"your" and embedded only when
  among the hardest rows): 0.9570 (0.6201) / 0.9602 (0.6064); fold 1 cuts 3.
* R6c, 6,000 of them, the second person in `VOCAB`, all embedded: 0.9539 (0.6319) / 0.9612
  (0.5961); fold 1 cuts 3.
* R6d (the option as it is now), + every code comment of 2-12 words of the benign training
  units: 0.9558 (0.6332) / 0.9609 (0.5947); fold 1 cuts 3.

Every fold-1 model above cuts actions.md's code comment "# your replay window" (0.61-0.66):
the n-gram half gives "your replay window" 0.920 and "replay window" 0.061 (R6d fold 1), its
embedding networks score it benign. Inference-only variants of R6d's fold models (units of at
most S words mix with alpha_s; fold 0 / fold 1 recall and cut doc units): S 3 alpha_s 0.6
0.9585 / 0.9609, 2 / 2; S 4 0.6 0.9619 (0.5990) / 0.9612 (0.5991), 1 / 1; S 4 0.8 0.9566 /
0.9605, 2 / 1; S 6 0.6 0.9585 / 0.9626, 1 / 2; S 6 0.8 0.9463 / 0.9581, 2 / 2.

Version 6 = R6d + `--short-words 4 --short-alpha 0.6`, trained on all at 0.5990: 2 cut units
of the docs (version 2's two), measured once on split C: plain benign flagged 0.61% (36 of
5,914), recall 0.9091 (3,360 of 3,696); its sample (300 / 60 / 150 from flask and borgbackup)
0 of 300 flagged but 131 of 150 caught, under the rule's 135, so not shipped (the same
sources' other injected passages: 0.918 and 0.922). Version 2 on split C, measured after:
1.00%, 0.9012.

Round 7 (split D: sphinx-doc, python-pytest-doc, python-werkzeug-doc, haproxy-doc held out;
the sample 1,000 / 200 / 600, `passage_data --sample-sizes`). Version 6's recipe, fixed in
advance: fold 0 0.9589 (0.6075), fold 1 0.9649 (0.5423); trained on all at 0.5749 it cuts 4
units of the docs, one in docs/architecture.md (3 at 0.6075), so it failed the gate. Round 8,
the same recipe with the READMEs of 26 chat-bot and LLM framework wheels as training sources
(`passage_data --train-wheels`; `pip download --no-deps` of aiogram, anthropic,
botbuilder-core, chainlit, chatterbot, chromadb, crewai, dspy, errbot, haystack-ai, langchain,
langchain-core, litellm, llama-index, matrix-nio, mattermostdriver, mem0ai, openai-agents,
pyrogram, qdrant-client, ragas, rasa, semantic-kernel, simplematrixbotlib, slack-bolt, txtai;
versions of 2026-12-05): fold 0 0.9623 (0.5753), fold 1 0.9670 (0.5359); the fold
models cut 3 units each (fold 0 one of docs/architecture.md), so it failed the gate too.
Round 9: round 7's weights (never trained on those READMEs) at the lowest threshold that flags
<= 0.5% of the READMEs' 482 plain benign passages, 0.6721: gate passed (2 units), split D
measured once: 0.11% flagged (6 of 5,660), recall 0.8929 (3,159 of 3,538); sample 1 of 1,000,
521 of 600. Not shipped; split D is used. Version 2 on split D, measured after: 0.23% (13 of
5,660), 0.9002 (3,185); sample 2 of 1,000, 534 of 600.

Round 10 (split E: python-djangorestframework-doc, python-dask-doc, python-black-doc,
python-cookiecutter-doc, python-flask-security-doc and docker-doc held out) trains nothing
here: version 2's weights gain a context re-reading fitted by `bot.guardrails.passage_context`
on the held-out sets of splits B, C and D (which version 2 never trained on), version 7:
split E 0.23% flagged, recall 0.9275. Round 11 (split F) fixed its passages without context
(version 8: 0.60%, 0.9304), round 12 (split G) those with a context of one short sentence
(version 9, shipped: 0.25%, 0.9418; docs/guardrails.md).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bot.guardrails.injection import EMBED_CHARS, EMBED_DIM, N_FEATURES
from bot.guardrails.passage_eval import (
    max_scores,
    operating_point,
    overall,
    passage_units,
    rail_figures,
    read_jsonl,
    report,
    table,
    unit_figures,
)
from bot.guardrails.passage_model import N_CONTEXT, PassageModel
from bot.guardrails.passage_rows import (
    DATA_DIR,
    MARKUP,
    MIN_ATTACK_SHARE,
    MIN_WINDOW_SHARE,
    MIN_WORDS,
    PIECES,
    build_rows,
    design,
    is_validation,
)
from knowledge.embedders.onnx import OnnxMiniLM

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
#: What the model reads at inference besides the unit, its windows and case pieces: 1 adds the
#: sentence and line pieces (`READ_PIECES`; version 1, failed held-out), the words outside
#: markup (`READ_MARKUP`; version 3, failed held-out by one passage). The rows have both
#: (`PIECES`, `MARKUP`). The shipped weights (version 2) read neither; versions 3 and 5 read the
#: markup pieces.
READ_PIECES = 0
READ_MARKUP = 0
MLP_SEEDS = 3
#: Hidden units of each embedding network (versions 3 and 5: 64).
MLP_HIDDEN = 32
#: Doc-register benign rows embedded for the networks: the hardest by n-gram score, plus random.
HARD_NEG = 8000
RANDOM_NEG = 4000


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
                    help="1: the model also reads the pieces at inference (stored)")
    ap.add_argument("--read-markup", type=int, default=READ_MARKUP,
                    help="1: the model also reads the words outside markup at inference")
    ap.add_argument("--mlp-hidden", type=int, default=MLP_HIDDEN)
    ap.add_argument("--seed", type=int, default=0, help="added to every seed")
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
    ap.add_argument("--val-salt", default="",
                    help='prefix of the validation attacks\' bucket key (round 6: "r6:")')
    ap.add_argument("--short-words", type=int, default=0,
                    help="units of at most this many words mix with --short-alpha (stored)")
    ap.add_argument("--short-alpha", type=float, default=ALPHA)
    ap.add_argument("--vocab-negatives", type=int, default=0,
                    help="benign pieces holding an attack-register word added as rows")
    ap.add_argument("--heldout", action="store_true", help="report held-out figures once")
    args = ap.parse_args(argv)
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    started = time.time()
    rng = np.random.default_rng(SEED + args.seed)
    embed = CachedEmbedder(args.cache / "embeddings.npz")
    records = read_jsonl(args.data / "train.jsonl")
    val = [r for r in records if is_validation(r, args.fold, args.val_salt)]
    train = [r for r in records if not is_validation(r, args.fold, args.val_salt)]
    print(f"passages: train {len(train)}, validation {len(val)}; window {args.window} words, "
          f"case split {args.case_split}")
    rows = build_rows(train, args.attacks_data, args.window, bool(args.case_split), args.fold,
                      rng, tuple(args.shares), pieces=bool(args.pieces),
                      markup=bool(args.markup), min_words=args.min_words,
                      salt=args.val_salt, vocab_negatives=args.vocab_negatives)
    read = {"pieces": args.pieces * args.read_pieces, "markup": args.markup * args.read_markup,
            **({"short_words": args.short_words, "short_alpha": args.short_alpha}
               if args.short_words else {})}
    texts, kinds = rows.texts, np.array(rows.kinds)
    y, w = np.array(rows.labels), np.array(rows.weights)
    print(f"training rows: {len(texts)} ({int(y.sum())} attack); "
          + ", ".join(f"{k} {int((kinds == k).sum())}" for k in sorted(set(rows.kinds))))
    x = design(texts)
    lr = LogisticRegression(C=args.c_ngram, solver="liblinear", max_iter=3000,
                            random_state=SEED + args.seed)
    lr.fit(x, y, sample_weight=w)
    print(f"n-gram model fitted ({time.time() - started:.0f}s)")

    # Embedding networks: every non-doc row (the vocabulary negatives too), the hardest doc
    # rows, random doc rows.
    train_logit = lr.decision_function(x)
    doc = np.flatnonzero(np.char.startswith(kinds.astype(str), "doc") & (kinds != "doc-vocab"))
    hard = doc[np.argsort(-train_logit[doc])[:HARD_NEG]]
    rest = np.setdiff1d(doc, hard)
    pick = np.concatenate([np.setdiff1d(np.arange(len(texts)), doc), hard,
                           rng.choice(rest, min(RANDOM_NEG, len(rest)), replace=False)])
    print(f"embedding {len(pick)} training rows ({time.time() - started:.0f}s)")
    e_train = embed([texts[i] for i in pick])
    mlps = [MLPClassifier(hidden_layer_sizes=(args.mlp_hidden,), alpha=1e-3, max_iter=300,
                          early_stopping=True, random_state=s + args.seed).fit(e_train, y[pick])
            for s in range(MLP_SEEDS)]
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
        if alpha == 0.0:  # the n-grams alone, short units too
            meta.pop("short_words", None)
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
