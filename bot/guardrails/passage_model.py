"""Prompt-injection model for the units of retrieved passages (documentation register).

`PassageModel.score(units)` scores the units of ONE passage (its sentences and elements: HTML
comments, link titles, alt text, code comments, table cells, quoted lines) and returns one
probability per unit; a passage is flagged when any unit scores >= `threshold`.

The model is the chat classifier's design (`bot.guardrails.injection`), retrained on
documentation text:

* a logistic regression on the hashed character 3-5-grams and word uni/bigrams of
  `injection.featurize`, plus a few cheap context features (`context_features`: does the unit
  address an AI / assistant / model or its prompt or rules, ask to override or to disclose,
  how much of it is code);
* a small ensemble of one-hidden-layer ReLU networks on the all-MiniLM-L6-v2 embedding.

p = (1 - alpha) * p_ngram + alpha * mean(p_mlp), where a unit of at most `short_words` words
mixes with `short_alpha` instead (the n-gram half over-reads one word of a short unit: "your
replay window"). A unit longer than `window_words` words is
also read as windows of that many words (stride `window_words // 2`, the last one flush with
the end), so that an attack fused with a line of documentation in one unit is read without it:
the unit's n-gram logit is the highest of its own and its windows', and the best-scoring text
is the one embedded. Only the `top_k` units with the highest n-gram logits (and a logit above
`embed_floor`) are embedded, in one call per passage; the others score (1 - alpha) * p_ngram,
a lower bound of their blended score.

Context re-reading (round 10, `context_chars` > 0 in the meta): an embedded unit's blend p
becomes sigmoid(a * logit(p) + w_cos * cos + w_lex * lex + bias), where cos is the cosine of
its embedding to the embedding of the passage's other units (`context_text`, one more embedding
call per passage, made only when some unit could reach the threshold with it) and lex the share
of its words found in them (`lexical_overlap`): an attack pasted into a passage does not belong
to it, a line of documentation addressed to the reader does. A passage whose other units hold
fewer than `context_min_chars` characters (two or three sentences, or the text of a neighbour
join) has too little context to read: its units keep their blend, shifted onto the same scale
(`without_context`). Fitted by `bot.guardrails.passage_context`.

Weights (`.npz`, no pickles): `ngram_w` (N_FEATURES,) float16, `ngram_b`, `ctx_w` (N_CONTEXT,),
`mlp_w1` (M, 384, H), `mlp_b1` (M, H), `mlp_w2` (M, H), `mlp_b2` (M,), and `meta` a JSON
string with `threshold`, `alpha`, `top_k`, `embed_floor`, `window_words` (0: no windows),
`case_split` (1: also read the pieces between case boundaries), and optionally
`short_words` and `short_alpha` (0: no short-unit mix; round 6), `pieces` and
`markup` (1: also read a unit's sentences and capitalized lines, and its words outside markup;
see `word_windows`; the shipped weights read neither at inference, they were trained with them
as rows), and optionally `context_chars`, `context_low_cos`, `context_a`, `context_cos`,
`context_lex`, `context_bias`, `context_none_shift` and `context_min_chars` (the context
re-reading; absent: none). Trained by
`bot.guardrails.passage_training` (figures in its docstring and output), the context by
`bot.guardrails.passage_context`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bot.errors import ConfigError
from bot.guardrails.injection import (
    EMBED_CHARS,
    EMBED_DIM,
    N_FEATURES,
    Embed,
    LazyMiniLM,
    ensemble_proba,
    featurize,
    normalize,
)

DEFAULT_WEIGHTS = Path(__file__).with_name("data") / "passage.npz"

_AI = re.compile(r"\b(?:ai|a\.i\.|assistant|chat ?bot|bot|llm|gpt\w*|language model|model|"
                 r"system prompt|prompt|instructions?|guidelines|rules|restrictions?|filters?|"
                 r"jailbreak\w*|developer mode|dan)\b", re.I)
_OVERRIDE = re.compile(r"\b(?:ignore|disregard|forget|bypass|override|skip|drop|abandon|"
                       r"pretend|act as|roleplay|role-play|unlock\w*|unrestricted|no longer)\b",
                       re.I)
_DISCLOSE = re.compile(r"\b(?:reveal\w*|disclose\w*|leak\w*|share|show|print|tell|expose\w*|"
                       r"output|repeat|dump)\b[^.!?]{0,40}\b(?:prompt|password|secret\w*|"
                       r"config\w*|instructions?|guidelines|rules|keys?|credentials?|"
                       r"internal\w*|hidden|private)\b", re.I)
_YOU = re.compile(r"\b(?:you|your|yourself)\b", re.I)
_I_ME = re.compile(r"\b(?:i|me|my|i'm|i've)\b", re.I)
_CODE = re.compile(r"[()\[\]{}<>=_/\\$`*#|;:]")
_IDENT = re.compile(r"\b\w+(?:[._]\w+)+\b|--?\w[\w-]*")
_CASE_BOUNDARY = re.compile(r"(?<=[a-z])\s+(?=[A-Z][a-z])")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
#: Fewest words of a piece read on its own (`word_windows` with `pieces`).
PIECE_WORDS = 2
#: A markup token: a tag, attribute, URL or path, or a run of 25 characters without a space.
_MARKUP = re.compile(r"[<>=\\{}\[\]|`]|://|^/|\S{25}")
#: Number of context features (`context_features`).
N_CONTEXT = 8


def context_features(text: str) -> npt.NDArray[np.float32]:
    """Cheap features of one unit: [AI/prompt/rules words, override words, disclosure
    request, second person, first person, code-character share, identifier tokens
    (dotted, snake_case, --options), log length], each in about [0, 1]."""
    n = max(len(text), 1)
    words = max(len(text.split()), 1)
    return np.array([
        min(len(_AI.findall(text)), 3) / 3.0,
        min(len(_OVERRIDE.findall(text)), 2) / 2.0,
        1.0 if _DISCLOSE.search(text) else 0.0,
        min(len(_YOU.findall(text)) / words * 5.0, 1.0),
        min(len(_I_ME.findall(text)) / words * 5.0, 1.0),
        min(len(_CODE.findall(text)) / n * 10.0, 1.0),
        min(len(_IDENT.findall(text)) / words * 3.0, 1.0),
        min(np.log1p(n) / 7.0, 1.0),
    ], dtype=np.float32)


def logit(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """log(p / (1 - p)) with p clipped to [1e-6, 1 - 1e-6] (NaN read as 0), same shape."""
    q = np.clip(np.nan_to_num(p), 1e-6, 1.0 - 1e-6)
    out: npt.NDArray[np.float64] = np.log(q / (1.0 - q))
    return out


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))
    return out


class PassageModel:
    """Scores the units of a retrieved passage for indirect prompt injection.

    `score(units)` returns one probability in [0, 1] per unit; a unit (and its passage) is
    adversarial when its score >= `threshold` (shipped 0.9356: at most 0.4% of the plain
    benign passages of the context fit's sets flagged). Figures: docs/guardrails.md (split G,
    never used before round 12's measurement: 0.25% of held-out benign passages flagged,
    recall 0.9418).
    Thread-safe: the embedder is created once under a lock; scoring holds no shared state.
    Cost per passage: hashing every unit and its windows (about 1-5 ms), one embedding call
    of at most `top_k` units (about 5-10 ms on one thread) and, for the passages where a unit
    could reach the threshold with its context (9-19% of benign documentation passages,
    nearly every injected one), one of the context (600 characters, 20-50 ms). Through the
    rail on split G's 798 plain benign passages p50 3.5 ms, p95 27.5 ms per passage (version
    2, without the context: 4.3 and 18.0 ms); on all 1,495, a third of them injected, 12.7
    and 70.7 ms (10.7 and 25.5 ms). One thread, a quiet 2-core machine.

    Raises:
        ConfigError: from `load` when the weights file is missing or malformed.
    """

    def __init__(self, ngram_w: npt.NDArray[np.floating], ngram_b: float,
                 ctx_w: npt.NDArray[np.floating], mlp: tuple[npt.NDArray[np.floating], ...],
                 meta: dict[str, float], embed: Embed | None = None) -> None:
        w1, b1, w2, b2 = mlp
        m, h = b1.shape
        if (ngram_w.shape != (N_FEATURES,) or ctx_w.shape != (N_CONTEXT,)
                or w1.shape != (m, EMBED_DIM, h) or w2.shape != (m, h) or b2.shape != (m,)):
            raise ConfigError("passage weights have the wrong shape; retrain the passage model")
        self._ngram_w = ngram_w.astype(np.float32)
        self._ngram_b = float(ngram_b)
        self._ctx_w = ctx_w.astype(np.float64)
        self._mlp = tuple(x.astype(np.float64) for x in mlp)
        self.alpha = float(meta["alpha"])
        self.short_words = int(meta.get("short_words", 0))
        self.short_alpha = float(meta.get("short_alpha", self.alpha))
        self.threshold = float(meta["threshold"])
        self.top_k = int(meta["top_k"])
        self.embed_floor = float(meta["embed_floor"])
        self.window_words = int(meta.get("window_words", 0))
        self.case_split = bool(meta.get("case_split", 0))
        self.pieces = bool(meta.get("pieces", 0))
        self.markup = bool(meta.get("markup", 0))
        self.context_chars = int(meta.get("context_chars", 0))
        self.context_low_cos = float(meta.get("context_low_cos", -1.0))
        self.context_w = tuple(float(meta.get(k, d)) for k, d in
                               (("context_a", 1.0), ("context_cos", 0.0), ("context_lex", 0.0),
                                ("context_bias", 0.0)))
        self.context_none_shift = float(meta.get("context_none_shift", 0.0))
        self.context_min_chars = int(meta.get("context_min_chars", 1))
        #: the threshold the rail decides at (the policy sets it when it overrides `threshold`):
        #: the context is embedded only when some unit could reach it
        self.decide_at = self.threshold
        self._embed: Embed = embed or LazyMiniLM()

    @classmethod
    def load(cls, path: Path | None = None, *, embed: Embed | None = None) -> PassageModel:
        """Load weights from `path` (default: the file shipped in bot/guardrails/data/).

        `embed` maps n texts to (n, 384) L2-normalized all-MiniLM-L6-v2 embeddings; None means
        an `OnnxMiniLM(threads=1)` created on first use.

        Raises:
            ConfigError: the file is missing or lacks an expected array.
        """
        path = path or DEFAULT_WEIGHTS
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = {k: float(v) for k, v in json.loads(str(z["meta"])).items()}
                mlp = (z["mlp_w1"], z["mlp_b1"], z["mlp_w2"], z["mlp_b2"])
                return cls(z["ngram_w"], float(z["ngram_b"]), z["ctx_w"], mlp, meta, embed)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot load passage weights from {path}: {exc}") from exc

    def _embedder(self) -> Embed:
        return self._embed

    def ngram_logits(self, texts: list[str]) -> npt.NDArray[np.float64]:
        """Logits of the n-gram + context model for normalized unit texts, shape (n,)."""
        out = np.empty(len(texts), dtype=np.float64)
        for i, t in enumerate(texts):
            idx, val = featurize(t)
            out[i] = (float(self._ngram_w[idx] @ val) + float(self._ctx_w @ context_features(t))
                      + self._ngram_b)
        return out

    def mlp_proba(self, embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Mean probability of the embedding networks for (n, 384) embeddings: shape (n,)."""
        return ensemble_proba(self._mlp, embeddings)

    def embedded(self, logits: npt.NDArray[np.float64]) -> list[int]:
        """Indices of the units that are embedded: the `top_k` highest logits above
        `embed_floor`, in unit order."""
        order = np.argsort(-logits, kind="stable")[:self.top_k]
        return sorted(int(i) for i in order if logits[i] >= self.embed_floor)

    def best_texts(self, units: list[str]) -> tuple[list[str], npt.NDArray[np.float64]]:
        """For each unit, the text read for it (the normalized unit or its best window) and
        that text's n-gram logit, shape (n,)."""
        best, logits, _ = self._read(units)
        return best, logits

    def _read(self, units: list[str]) -> tuple[list[str], npt.NDArray[np.float64], list[int]]:
        """`best_texts`, and each unit's number of words (normalized, white space collapsed)."""
        best: list[str] = []
        words: list[int] = []
        logits = np.empty(len(units), dtype=np.float64)
        for i, u in enumerate(units):
            cands = word_windows(normalize(u), self.window_words, self.case_split,
                                 self.pieces, self.markup)
            lg = self.ngram_logits(cands)
            top = int(np.argmax(lg))
            best.append(cands[top])
            words.append(len(cands[0].split()))  # cands[0]: the whole unit
            logits[i] = lg[top]
        return best, logits, words

    def score(self, units: list[str]) -> list[float]:
        """One probability per unit of one passage (see the class docstring). Blocking: run it
        off the event loop. An empty list gives an empty list."""
        out, picked, mixed, vectors = self.parts(units)
        if picked and self.context_chars:
            cos, lex, alone = self.context_of(units, picked, mixed, vectors)
            mixed = self.without_context(mixed) if alone else self.with_context(mixed, cos, lex)
        out[picked] = mixed
        return [float(x) for x in out]

    def parts(self, units: list[str]) -> tuple[npt.NDArray[np.float64], list[int],
                                                npt.NDArray[np.float64],
                                                npt.NDArray[np.float32]]:
        """The pieces of `score` before the context: every unit's n-gram lower bound (n,),
        the embedded units' indices (k), their blended scores (k,) and embeddings (k, 384)."""
        none = np.zeros((0, EMBED_DIM), np.float32)
        if not units:
            return np.zeros(0), [], np.zeros(0), none
        texts, logits, words = self._read(units)
        alpha = np.full(len(units), self.alpha)
        if self.short_words:
            alpha[np.array(words) <= self.short_words] = self.short_alpha
        out = (1.0 - alpha) * _sigmoid(logits)
        picked = self.embedded(logits)
        if not picked:
            return out, picked, np.zeros(0), none
        vectors = self._embedder()([texts[i][:EMBED_CHARS] for i in picked])
        mixed = out[picked] + alpha[picked] * self.mlp_proba(vectors)
        return out, picked, mixed, vectors

    def context_of(self, units: list[str], picked: list[int], mixed: npt.NDArray[np.float64],
                   vectors: npt.NDArray[np.float32], force: bool = False
                   ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], bool]:
        """How well each embedded unit fits its passage, shapes (k,): the cosine of its
        embedding (`vectors`, from `parts`) to the embedding of the other units
        (`context_text`; one more embedding call, made only when `context_may_decide` or
        `force`, else 0), and `lexical_overlap`; and whether the passage has too little context
        for either to say anything (`alone`: its other units hold fewer than
        `context_min_chars` characters, as in a passage of two or three sentences or a
        neighbour join)."""
        context = self.context_text(units, picked)
        if not picked or len(context) < max(self.context_min_chars, 1):
            return np.zeros(len(picked)), np.zeros(len(picked)), True
        lex = lexical_overlaps(units, picked)
        cos = np.zeros(len(picked))
        if force or self.context_may_decide(mixed, lex):
            cos = (vectors @ self._embedder()([context])[0]).astype(np.float64)
        return cos, lex, False

    def context_may_decide(self, mixed: npt.NDArray[np.float64],
                           lex: npt.NDArray[np.float64]) -> bool:
        """Whether some embedded unit could score >= `decide_at` with its context: at the
        most suspicious cosine the fit allows (`context_low_cos`) and its own lex. When none
        could, the context is not embedded: no unit is cut either way, so the passage's
        verdict is the same (cos is then 0 in the scores, all under `decide_at`)."""
        a, w_cos, w_lex, bias = self.context_w
        if a <= 0 or w_cos >= 0 or w_lex > 0:
            return True  # no bound from these weights: always read the context
        z = a * logit(mixed) + w_cos * self.context_low_cos + w_lex * lex + bias
        return bool(np.max(z) >= logit(np.array([self.decide_at]))[0])

    def context_text(self, units: list[str], picked: list[int]) -> str:
        """The passage around its embedded units: the other units, normalized and joined, cut
        to `context_chars` characters; "" when there are none or the context is off."""
        if not self.context_chars:
            return ""
        skip = set(picked)
        rest = (" ".join(normalize(u).split()) for i, u in enumerate(units) if i not in skip)
        return " ".join(t for t in rest if t)[:self.context_chars]

    def with_context(self, p: npt.NDArray[np.float64], cos: npt.NDArray[np.float64],
                     lex: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Embedded units' blended scores `p` re-read with how they fit their passage
        (`context_of`): sigmoid(a * logit(p) + w_cos * cos + w_lex * lex + bias), shape (k,)."""
        a, w_cos, w_lex, bias = self.context_w
        return _sigmoid(a * logit(p) + w_cos * cos + w_lex * lex + bias)

    def without_context(self, p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Blended scores `p` of a passage without context, on the same scale:
        sigmoid(logit(p) + `context_none_shift`), the shift that maps the threshold the blend
        was validated at (version 2's 0.6496) to `threshold`, shape (k,)."""
        return _sigmoid(logit(p) + self.context_none_shift)

    __call__ = score  # a `bot.guardrails.passages.UnitScorer`


_WORD = re.compile(r"[^\W\d_]\w{3,}")


def lexical_overlap(units: list[str], i: int) -> float:
    """Share of unit i's words (lower-cased, 4+ word characters, starting with a letter of any
    script) that occur in the passage's other units, in [0, 1]; 0 when it has none (an attack
    pasted into a passage shares few of its words)."""
    return float(lexical_overlaps(units, [i])[0])


def lexical_overlaps(units: list[str], picked: list[int]) -> npt.NDArray[np.float64]:
    """`lexical_overlap` of each unit in `picked`, shape (k,), reading each unit's words once:
    a word is in the other units when more units than this one hold it."""
    words = [set(_WORD.findall(u.lower())) for u in units]
    held = Counter(w for ws in words for w in ws)
    return np.array([sum(held[w] > 1 for w in words[i]) / len(words[i]) if words[i] else 0.0
                     for i in picked])


def word_windows(text: str, size: int, case_split: bool = False, pieces: bool = False,
                 markup: bool = False) -> list[str]:
    """The readings of a unit's text (white space collapsed, duplicates left out): `text`,
    then (when it has more than `size` words and `size` > 0) its windows of `size` words at a
    stride of `size // 2`, the last flush with the end; with `case_split`, also the pieces of
    `text` between case boundaries (`_CASE_BOUNDARY`: a capitalized word right after a word
    ending in a lower-case letter, no punctuation between: where two sentences were fused),
    when there are any, each of at least 3 words; with `pieces`, also its sentences and its
    lines that start with a capital letter, each of at least `PIECE_WORDS` words, when there
    are several (where a short fragment was joined to its neighbour, or a line, such as an
    attack without final punctuation, to the wrapped line after it); with `markup`, when at
    least a quarter of its words are markup (`_MARKUP`: tags, attributes, URLs, long runs),
    also the other words and their windows (an attack inside an HTML run)."""
    flat = " ".join(text.split())
    words = flat.split()
    out = [flat, *_windows(words, size)]
    if markup:
        kept = [w for w in words if not _MARKUP.search(w)]
        if len(kept) >= PIECE_WORDS and 4 * (len(words) - len(kept)) >= len(words):
            out += [" ".join(kept), *_windows(kept, size)]
    case = _CASE_BOUNDARY.split(flat) if case_split else []
    out += [p for p in case if len(p.split()) >= 3] if len(case) > 1 else []
    if pieces:
        lines = [x for x in text.split("\n") if x[:1].isupper()] if "\n" in text else []
        parts = [*_SENTENCE_BREAK.split(flat), *lines]
        if len(parts) > 1:
            out += [p for p in (" ".join(x.split()) for x in parts)
                    if len(p.split()) >= PIECE_WORDS]
    return list(dict.fromkeys(out))


def _windows(words: list[str], size: int) -> list[str]:
    """Windows of `size` words at a stride of `size // 2`, the last flush with the end; none
    when there are `size` words or fewer (or `size` is 0)."""
    if size <= 0 or len(words) <= size:
        return []
    stride = max(size // 2, 1)
    starts = [*range(0, len(words) - size, stride), len(words) - size]
    return [" ".join(words[s:s + size]) for s in starts]
