"""Training rows of the passage model (`bot.guardrails.passage_training`): the validation
carve-outs of the training split, the units and readings of the training passages as labelled
rows, and the n-gram design matrix. Training-time only (`design` needs scipy); imports nothing
of `knowledge`.

Rows (`build_rows`): the units of the training passages that do not overlap an attack
(negatives; decoy passages included: benign sentences in element positions are the hardest
negatives) with up to `NEG_WINDOWS` of their readings (`passage_model.word_windows`: 12-word
windows, case-boundary pieces, sentences, capitalized lines, the words outside markup); units
that are >= `MIN_ATTACK_SHARE` attack and readings whose words are >= `MIN_WINDOW_SHARE` the
attack's (positives), readings of those units without attack words (negatives); each attack
text and, when it has several sentences, its last one; the S-Labs label-1 rows of the train
attack split (positives) and its label-0 rows and the hand-written `augment_benign.csv` /
`augment_chat.csv` beside the weights (chat-register negatives, weight `CHAT_WEIGHT`); with
`vocab_negatives` (round 6), benign pieces that use the attacks' words in their own sense and
short code comments (`vocab_pieces`). Rows of at least `MIN_WORDS` words: about 95,000 (fold 0,
split A), 9,900 attacks.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bot.guardrails.injection import N_FEATURES, featurize, normalize
from bot.guardrails.passage_data import bucket, load_attacks
from bot.guardrails.passage_eval import Record, attack_share, overlaps, passage_units
from bot.guardrails.passage_model import context_features, word_windows

if TYPE_CHECKING:
    from scipy import sparse

#: Training rows also read a unit's sentence and capitalized-line pieces and the words outside
#: markup (`word_windows`).
PIECES = 1
MARKUP = 1
#: Training rows need this many words (`--min-words`; the rail scores units of 2 words).
MIN_WORDS = 2
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


def is_validation(r: Record, fold: int = 0, salt: str = "") -> bool:
    """Whether a training-split passage is in validation fold `fold` (-1: none). `salt` is
    prefixed to the attack's bucket key: without one (rounds 1-5), `bucket(attack, 10) == 0`
    implies `bucket(attack, 5) == 0`, the held-out fifth, so fold 0 has no training attacks;
    with one, each fold takes a tenth of the training attacks (round 6: "r6:")."""
    if fold < 0:
        return False
    src = str(r["source"])
    if src == FOLD_SOURCES[fold] or (src.startswith("pypi:") and bucket(src, 3) == fold):
        return True
    return bool(r["label"]) and val_attack(str(r["attack"]), fold, salt)


def val_attack(text: str, fold: int = 0, salt: str = "") -> bool:
    return fold >= 0 and bucket(salt + " ".join(text.split()).lower(), 10) == fold


#: Words of the attacks' register that documentation uses in its own sense ("the prompt of
#: psql", "the answer is recorded", "ignore the warning"): benign pieces holding one are the
#: vocabulary negatives (`--vocab-negatives`, round 6; the second person is the register the
#: issue names). The embedding networks train on all of them.
VOCAB = frozenset("""prompt prompts instruction instructions ignore ignored ignoring previous
above forget disregard reveal secret secrets password passwords system rules rule answer
answers respond response responses pretend role assistant model ai output print say tell
bypass override jailbreak restriction restrictions conversation message messages you
your""".split())
_PIECE = re.compile(r"(?<=[.!?:;])\s+|\n+|\s\|\s|^\|\s*|\s*\|$", re.M)


#: A code comment: `#`, `//` or `--` and its text, to the end of the line.
_COMMENT = re.compile(r"(?:^|\s)(?:#|//|--)\s+(\S[^\n]*)")


def vocab_pieces(texts: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """Pieces of benign training units: `n` sentences, lines and table cells of 2-30 words
    holding a word of `VOCAB`, drawn at random, and every code comment of 2-12 words (one of
    the injections' hiding places, where real comments are short); no repeats."""
    vocab = sorted({p.strip() for t in texts for p in _PIECE.split(t)
                    if 2 <= len(p.split()) <= 30 and VOCAB & set(_WORD.findall(p.lower()))})
    comments = {m.group(1).strip() for t in texts for m in _COMMENT.finditer(t)
                if 2 <= len(m.group(1).split()) <= 12}
    drawn = [vocab[i] for i in rng.permutation(len(vocab))[:n]]
    return drawn + sorted(comments - set(drawn))


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
               min_words: int = MIN_WORDS, salt: str = "", vocab_negatives: int = 0) -> Rows:
    """Units of the training passages (benign, and the attack-carrying ones as positives),
    their windows, the attack texts, S-Labs rows, the hand-written chat rows and
    `vocab_negatives` pieces of benign units (`vocab_pieces`)."""
    rows = Rows(min_words)
    benign_units: list[str] = []
    for r, us in zip(train, passage_units(train), strict=True):
        span = r["attack_span"]
        attack_words = set(normalize(str(r["attack"])).lower().split()) if span else set()
        for u in us:
            readings = word_windows(normalize(u.text), window, case_split, pieces, markup)
            text, wins = readings[0], readings[1:]
            if not overlaps(u.start, u.end, span):
                rows.add(text, 0, 1.0, "doc", normalized=True)
                if not r["decoy"]:
                    benign_units.append(u.text)
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
    for piece in vocab_pieces(benign_units, vocab_negatives, rng) if vocab_negatives else ():
        rows.add(piece, 0, 1.0, "doc-vocab")
    train_attacks, _ = load_attacks(attacks_data / "train.csv")
    for attack_text in train_attacks:
        if not val_attack(attack_text, fold, salt):
            rows.add(attack_text, 1, 1.0, "slabs")
    for text, label in read_csv(attacks_data / "train.csv"):
        if label == 0:
            rows.add(text, 0, CHAT_WEIGHT, "chat")
    for name in ("augment_benign.csv", "augment_chat.csv"):
        for text, label in read_csv(DATA_DIR / name):
            rows.add(text, label, CHAT_WEIGHT, "chat")
    return rows
