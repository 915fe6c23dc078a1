"""The rails: small classes with one async `check` method (see `bot.guardrails.base.Rail`).

Input rails run before retrieval and generation, on the user's text; the injection rail also
checks retrieved passages (indirect injection), cutting what carries an attack; output rails
run before the reply is sent.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from pydantic import BaseModel

from bot.batching import Batched
from bot.guardrails.base import Action, RailContext, Verdict, allow
from bot.guardrails.passages import DROP_SHARE, PassageCheck, UnitScorer, check_passage
from bot.guardrails.pii import PIIRedactor
from bot.log import get_logger
from bot.messages import Passage

log = get_logger("bot.guardrails")

BLOCKED_INPUT = "Sorry, I can't help with that request."


class LengthRail:
    """Blocks input longer than `max_chars` characters."""

    name = "length"

    def __init__(self, max_chars: int, message: str) -> None:
        self.max_chars = max_chars
        self.message = message

    async def check(self, text: str, ctx: RailContext) -> Verdict:
        if len(text) <= self.max_chars:
            return allow(self.name)
        return Verdict(Action.BLOCK, self.name, message=self.message.format(
            max_chars=self.max_chars), reason=f"{len(text)} characters > {self.max_chars}")


class LanguageRail:
    """Blocks input written in a language outside `allowed` (ISO 639-1 codes), as detected
    by `langdetect` (a port of Google's language-detection: character n-gram profiles of 55
    languages). Texts with fewer than `min_letters` letters, or detected with probability
    below `min_probability`, are allowed: detection on them is unreliable."""

    name = "language"

    def __init__(self, allowed: Iterable[str], message: str, min_letters: int = 20,
                 min_probability: float = 0.9) -> None:
        self.allowed = frozenset(code.lower() for code in allowed)
        self.message = message
        self.min_letters = min_letters
        self.min_probability = min_probability

    @staticmethod
    def _detect(text: str) -> tuple[str, float]:
        from langdetect import DetectorFactory, LangDetectException, detect_langs

        DetectorFactory.seed = 0  # langdetect samples at random; fixed, it is deterministic
        try:
            best = detect_langs(text)[0]
        except LangDetectException:
            return "", 0.0
        return str(best.lang).split("-")[0], float(best.prob)

    async def check(self, text: str, ctx: RailContext) -> Verdict:
        if sum(c.isalpha() for c in text) < self.min_letters:
            return allow(self.name)
        lang, probability = await asyncio.to_thread(self._detect, text)
        if not lang or lang in self.allowed or probability < self.min_probability:
            return allow(self.name)
        return Verdict(Action.BLOCK, self.name,
                       message=self.message.format(languages=", ".join(sorted(self.allowed))),
                       reason=f"language {lang} ({probability:.2f})")


def _keyword_pattern(words: Iterable[str]) -> re.Pattern[str] | None:
    alternatives = [re.escape(w.strip()) for w in words if w.strip()]
    if not alternatives:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(sorted(alternatives, key=len, reverse=True))
                      + r")(?!\w)", re.IGNORECASE)


class TopicRail:
    """Keyword lists per topic.

    - `blocked`: topic -> keywords; a message naming any is blocked.
    - `allowed`: topic -> keywords; when given, a message matching none of them is refused
      with the list of topics, and one that matches is answered from the knowledge base only
      (`ctx.knowledge_base_only`, enforced by the grounding rail).
    Keywords match whole words or phrases, case-insensitively.
    """

    name = "topic"

    def __init__(self, blocked: dict[str, list[str]], allowed: dict[str, list[str]],
                 blocked_message: str, off_topic_message: str) -> None:
        self.blocked = {t: p for t, words in blocked.items()
                        if (p := _keyword_pattern(words)) is not None}
        self.allowed = {t: p for t, words in allowed.items()
                        if (p := _keyword_pattern(words)) is not None}
        self.blocked_message = blocked_message
        self.off_topic_message = off_topic_message

    async def check(self, text: str, ctx: RailContext) -> Verdict:
        for topic, pattern in self.blocked.items():
            if pattern.search(text):
                return Verdict(Action.BLOCK, self.name, message=self.blocked_message,
                               reason=f"blocked topic {topic}")
        if not self.allowed:
            return allow(self.name)
        for pattern in self.allowed.values():
            if pattern.search(text):
                ctx.knowledge_base_only = True
                return allow(self.name)
        return Verdict(Action.BLOCK, self.name, reason="off the allowed topics",
                       message=self.off_topic_message.format(
                           topics=", ".join(sorted(self.allowed))))


class InjectionRail:
    """Prompt-injection and jailbreak detection with the offline classifier of
    `bot.guardrails.injection` (scores in [0, 1]; a text at or above `threshold` is an
    attack). Scoring runs on one dedicated thread, off the event loop.

    `check` blocks a user message. `filter_passages` checks retrieved passages for an
    injection (indirect injection, e.g. a poisoned document in the knowledge base): unit by
    unit with `passage_scorer` (default: `scorer` on each unit) at `passage_threshold`,
    cutting the adversarial units and dropping a passage only when more than `drop_share` of
    it would be cut (`bot.guardrails.passages`).

    `quick` (optional) scores a message of at most `quick_max_chars` characters on the event
    loop when it can do so cheaply, or returns None: most chat messages are settled by the
    classifier's n-gram part alone (about 0.1 ms), and only the others pay the hand-off to the
    scoring thread and the embedding.
    """

    name = "injection"

    def __init__(self, scorer: Callable[[list[str]], list[float]], threshold: float,
                 message: str, passage_threshold: float | None = None, *,
                 passage_scorer: UnitScorer | None = None,
                 drop_share: float = DROP_SHARE,
                 quick: Callable[[str], float | None] | None = None,
                 quick_max_chars: int = 320) -> None:
        self._scorer = scorer
        self._quick = quick
        self._quick_max_chars = quick_max_chars
        self._passage_scorer = passage_scorer or scorer
        self.threshold = threshold
        self.passage_threshold = threshold if passage_threshold is None else passage_threshold
        self.drop_share = drop_share
        self.message = message
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rails")
        self._batched: Batched[list[str], list[float]] = Batched(
            self._score_batch, rerun_if=lambda exc: True)  # (one text may be what failed)

    async def scores(self, texts: list[str]) -> list[float]:
        """The scorer's scores of `texts`. Concurrent calls are scored together: texts that
        arrive while a batch is on the scoring thread wait for it, then go in one call (one
        embedding call, where the fixed cost of a run is paid once for the batch); a failed
        batch is scored again caller by caller (bot/batching.py)."""
        if not texts:
            return []
        return await self._batched(texts)

    async def _score_batch(self, batch: list[list[str]]) -> list[list[float]]:
        scores = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._scorer, [t for texts in batch for t in texts])
        out, start = [], 0
        for texts in batch:
            out.append(scores[start:start + len(texts)])
            start += len(texts)
        return out

    async def check(self, text: str, ctx: RailContext) -> Verdict:
        score = self._quick(text) if self._quick is not None \
            and len(text) <= self._quick_max_chars else None
        if score is None:
            [score] = await self.scores([text])
        if score < self.threshold:
            return allow(self.name, round(score, 4))
        return Verdict(Action.BLOCK, self.name, message=self.message,
                       reason="prompt injection", score=round(score, 4))

    def check_texts(self, texts: list[str]) -> list[PassageCheck]:
        """`PassageCheck` of each passage text (blocking; one scorer call per passage, so a
        passage's verdict does not depend on the passages checked with it)."""
        return [check_passage(t, self._passage_scorer, self.passage_threshold, self.drop_share)
                for t in texts]

    async def filter_passages(self, passages: list[Passage]) -> list[PassageCheck]:
        """`PassageCheck` of each passage, in order, computed off the event loop."""
        if not passages:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.check_texts,
                                          [p.text for p in passages])

    async def check_passages(self, passages: list[Passage]) -> tuple[list[Passage],
                                                                     list[Verdict]]:
        """The passages to keep (those cut carry the marker in place of the cut text), and a
        verdict for each passage changed: redact when cut, block when dropped whole."""
        kept: list[Passage] = []
        verdicts: list[Verdict] = []
        for passage, check in zip(passages, await self.filter_passages(passages), strict=True):
            if (changed := kept_passage(passage, check)) is not None:
                kept.append(changed)
            if check.cuts:
                verdicts.append(self.passage_verdict(passage, check))
        return kept, verdicts

    def passage_verdict(self, passage: Passage, check: PassageCheck) -> Verdict:
        """The verdict recorded for a passage cut (redact) or dropped (block)."""
        return Verdict(Action.BLOCK if check.dropped else Action.REDACT, self.name,
                       score=check.score,
                       reason=f"{check.describe()}; passage from {passage.uri}")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def kept_passage(passage: Passage, check: PassageCheck) -> Passage | None:
    """`passage` as the model may see it: None when dropped, its cut text when cut."""
    if check.text is None:
        return None
    return passage if check.text == passage.text else replace(passage, text=check.text)


class PIIRail:
    """Redacts personal data and secrets (`bot.guardrails.pii`)."""

    name = "pii"

    def __init__(self, redactor: PIIRedactor) -> None:
        self.redactor = redactor

    async def check(self, text: str, ctx: RailContext) -> Verdict:
        redacted, kinds = self.redactor.redact(text)
        if not kinds:
            return allow(self.name)
        return Verdict(Action.REDACT, self.name, text=redacted,
                       reason="redacted " + ", ".join(sorted(set(kinds))))


_STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
use used using may might must shall one two see also get got make made like want need
""".split())
_CITATION = re.compile(r"\[\d+\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[^\W_]{3,}")


def content_words(text: str) -> set[str]:
    """Lower-cased words of 3+ letters or digits, without stop words, crudely stemmed
    (a trailing "s" removed)."""
    words = set()
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS:
            continue
        words.add(word[:-1] if len(word) > 4 and word.endswith("s") else word)
    return words


def lexical_support(answer: str, passages: list[Passage], *, min_overlap: float = 0.6,
                    min_words: int = 4) -> float | None:
    """The share of the answer's claim sentences (those with `min_words`+ content words) whose
    content words appear in the passages at `min_overlap` or more; None when the answer makes
    no claims (e.g. "I don't know")."""
    vocabulary: set[str] = set()
    for passage in passages:
        vocabulary |= content_words(f"{passage.title} {passage.section} {passage.text}")
    claims = [words for sentence in _SENTENCE.split(_CITATION.sub("", answer))
              if len(words := content_words(sentence)) >= min_words]
    if not claims:
        return None
    supported = sum(len(words & vocabulary) / len(words) >= min_overlap for words in claims)
    return supported / len(claims)


class GroundingJudgement(BaseModel):
    """An LLM judge's verdict: does every claim of the answer follow from the passages?"""

    supported: bool
    unsupported_claims: list[str] = []


Judge = Callable[[str, list[Passage]], Awaitable[GroundingJudgement]]


class GroundingRail:
    """In knowledge-base mode, replaces an answer whose claims have no support in the
    retrieved passages by `message`. The default check is lexical (`lexical_support` at least
    `min_support`); with `judge` set, an LLM judge decides instead (structured output).
    Outside knowledge-base mode the rail allows everything."""

    name = "grounding"

    def __init__(self, message: str, *, always: bool = False, min_support: float = 0.5,
                 judge: Judge | None = None) -> None:
        self.message = message
        self.always = always
        self.min_support = min_support
        self.judge = judge

    async def check(self, text: str, ctx: RailContext) -> Verdict:
        if not (self.always or ctx.knowledge_base_only):
            return allow(self.name)
        if not ctx.passages:
            return Verdict(Action.BLOCK, self.name, message=self.message,
                           reason="no passages retrieved", score=0.0)
        if self.judge is not None:
            try:
                judgement = await self.judge(text, ctx.passages)
            except Exception as exc:  # the judge's model is down: fall back to the lexical
                log.warning("grounding judge failed, using the lexical check",
                            error=type(exc).__name__)
            else:
                return self._judged(judgement)
        support = lexical_support(text, ctx.passages)
        if support is None or support >= self.min_support:
            return allow(self.name, support)
        return Verdict(Action.BLOCK, self.name, message=self.message, score=round(support, 4),
                       reason=f"lexical support {support:.2f} < {self.min_support}")

    def _judged(self, judgement: GroundingJudgement) -> Verdict:
        if judgement.supported:
            return allow(self.name, 1.0)
        return Verdict(Action.BLOCK, self.name, message=self.message, score=0.0,
                       reason=f"llm judge: {len(judgement.unsupported_claims)} "
                              "unsupported claim(s)")

