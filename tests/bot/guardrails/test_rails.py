"""Length, language, topic and grounding rails, the rail runner, and the policy file."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from bot.errors import ConfigError
from bot.guardrails.base import Action, Rail, RailContext, run_rails
from bot.guardrails.pii import PIIRedactor
from bot.guardrails.policy import GuardrailPolicy, build_guardrails
from bot.guardrails.rails import (
    GroundingJudgement,
    GroundingRail,
    InjectionRail,
    LanguageRail,
    LengthRail,
    PIIRail,
    TopicRail,
    lexical_support,
)
from bot.messages import Passage
from bot.metrics import RAIL_VERDICTS

REPO = Path(__file__).resolve().parents[3]

ZLIB = Passage(
    text="CHUNK is simply the buffer size for feeding data to and pulling data from the zlib "
         "routines. Larger buffer sizes would be more efficient, especially for inflate(). "
         "If the memory is available, buffers sizes on the order of 128K or 256K bytes "
         "should be used.", uri="zlib.html", title="zlib Usage Example", section="",
    page=None, score=0.8)


async def test_length_rail_blocks_long_input() -> None:
    rail = LengthRail(10, "at most {max_chars}")
    assert (await rail.check("short", RailContext())).action is Action.ALLOW
    verdict = await rail.check("x" * 11, RailContext())
    assert (verdict.action, verdict.message, verdict.reason) == (
        Action.BLOCK, "at most 10", "11 characters > 10")


async def test_language_rail_blocks_other_languages_but_not_short_texts() -> None:
    rail = LanguageRail(["en", "de"], "only {languages}")
    ctx = RailContext()
    assert (await rail.check("How do I reset my password on the portal?", ctx)).action \
        is Action.ALLOW
    assert (await rail.check("Wie kann ich mein Passwort im Portal zurücksetzen?", ctx)
            ).action is Action.ALLOW
    blocked = await rail.check("¿Cómo puedo restablecer mi contraseña en el portal web?", ctx)
    assert blocked.action is Action.BLOCK and blocked.message == "only de, en"
    assert "language es" in blocked.reason
    assert (await rail.check("Merci!", ctx)).action is Action.ALLOW  # too short to tell


async def test_topic_rail_blocks_and_restricts_to_allowed_topics() -> None:
    rail = TopicRail(blocked={"weapons": ["gun", "explosives"]},
                     allowed={"billing": ["invoice", "refund"], "shipping": ["delivery"]},
                     blocked_message="no", off_topic_message="only {topics}")
    ctx = RailContext()
    assert (await rail.check("Where do I buy explosives?", ctx)).reason == \
        "blocked topic weapons"
    assert (await rail.check("Begun the shotgun?", ctx)).reason != "blocked topic weapons"
    off = await rail.check("Tell me a joke", RailContext())
    assert off.action is Action.BLOCK and off.message == "only billing, shipping"
    on = RailContext()
    assert (await rail.check("When is my REFUND due?", on)).action is Action.ALLOW
    assert on.knowledge_base_only  # allowed topics are answered from the knowledge base


async def test_injection_rail_scores_settled_short_texts_without_its_thread() -> None:
    threads: list[list[str]] = []

    def scorer(texts: list[str]) -> list[float]:  # runs on the rail's thread
        threads.append(texts)
        return [0.9 for _ in texts]

    def quick(text: str) -> float | None:  # runs on the event loop
        return None if "unsure" in text else 0.1

    rail = InjectionRail(scorer, 0.5, "no", quick=quick, quick_max_chars=40)
    try:
        ctx = RailContext()
        assert (await rail.check("settled", ctx)).action is Action.ALLOW
        assert threads == []
        assert (await rail.check("unsure", ctx)).action is Action.BLOCK
        assert (await rail.check("settled, but longer than forty characters", ctx)).action \
            is Action.BLOCK
        assert threads == [["unsure"], ["settled, but longer than forty characters"]]
    finally:
        rail.close()


async def test_injection_rail_scores_concurrent_messages_in_batches() -> None:
    """Texts that arrive while a batch is on the scoring thread go together in the next call;
    each caller gets its own scores; a cancelled caller is left out; a scorer failure reaches
    the callers of that batch only."""
    calls: list[list[str]] = []
    first_in = threading.Event()
    release = threading.Event()

    def scorer(texts: list[str]) -> list[float]:
        calls.append(texts)
        if texts in (["one"], ["hold"]):
            first_in.set()
            release.wait(5)
        if "boom" in texts:
            raise RuntimeError("scorer failed")
        return [0.9 if "attack" in t else 0.1 for t in texts]

    rail = InjectionRail(scorer, 0.5, "no")
    try:
        first = asyncio.create_task(rail.scores(["one"]))
        await asyncio.to_thread(first_in.wait, 5)
        waiting = [asyncio.create_task(rail.scores(texts))
                   for texts in (["two", "attack"], ["three"], ["gone"])]
        await asyncio.sleep(0.05)
        waiting[2].cancel()
        release.set()
        assert await first == [0.1]
        assert await waiting[0] == [0.1, 0.9] and await waiting[1] == [0.1]
        assert calls == [["one"], ["two", "attack", "three"]]
        failing = asyncio.create_task(rail.scores(["boom"]))
        with pytest.raises(RuntimeError):
            await failing
        assert await rail.scores(["after"]) == [0.1]
        # a text that fails its batch fails its own caller only
        first_in.clear()
        release.clear()
        calls.clear()
        holder = asyncio.create_task(rail.scores(["hold"]))
        await asyncio.to_thread(first_in.wait, 5)
        together = [asyncio.create_task(rail.scores(texts))
                    for texts in (["fine"], ["boom"], ["attack"])]
        await asyncio.sleep(0.05)
        release.set()
        assert await holder == [0.1]
        results = await asyncio.gather(*together, return_exceptions=True)
        assert results[0] == [0.1] and results[2] == [0.9]
        assert isinstance(results[1], RuntimeError)
        assert calls[1] == ["fine", "boom", "attack"]
    finally:
        rail.close()


def test_lexical_support() -> None:
    supported = "CHUNK is the buffer size for feeding data to the zlib routines [1]."
    assert lexical_support(supported, [ZLIB]) == 1.0
    made_up = "The zlib library was written in Fortran by NASA engineers in 1962 for Apollo."
    assert lexical_support(made_up, [ZLIB]) == 0.0
    assert lexical_support("I don't know.", [ZLIB]) is None  # no claims


async def test_grounding_rail_only_in_knowledge_base_mode() -> None:
    rail = GroundingRail("not in the KB")
    made_up = "The zlib library was written in Fortran by NASA engineers in 1962 for Apollo."
    assert (await rail.check(made_up, RailContext([ZLIB]))).action is Action.ALLOW
    kb = RailContext([ZLIB], knowledge_base_only=True)
    blocked = await rail.check(made_up, kb)
    assert blocked.action is Action.BLOCK and blocked.message == "not in the KB"
    assert (await rail.check("Larger buffer sizes are more efficient for inflate().", kb)
            ).action is Action.ALLOW
    nothing = await rail.check("Anything.", RailContext([], knowledge_base_only=True))
    assert nothing.reason == "no passages retrieved"


async def test_grounding_rail_with_an_llm_judge() -> None:
    seen: list[str] = []

    async def judge(answer: str, passages: list[Passage]) -> GroundingJudgement:
        seen.append(answer)
        return GroundingJudgement(supported="buffer" in answer, unsupported_claims=["x"])

    rail = GroundingRail("nope", always=True, judge=judge)
    assert (await rail.check("the buffer", RailContext([ZLIB]))).action is Action.ALLOW
    verdict = await rail.check("the moon", RailContext([ZLIB]))
    assert verdict.action is Action.BLOCK and "1 unsupported" in verdict.reason
    assert seen == ["the buffer", "the moon"]


async def test_run_rails_chains_redactions_stops_at_a_block_and_counts() -> None:
    rails: list[Rail] = [PIIRail(PIIRedactor()), LengthRail(30, "too long")]
    before = RAIL_VERDICTS.labels("pii", "redact")._value.get()
    outcome = await run_rails(rails, "mail me: someone@example.com", RailContext(), stage="t")
    assert outcome.text == "mail me: [EMAIL]" and outcome.blocked is None
    assert RAIL_VERDICTS.labels("pii", "redact")._value.get() == before + 1
    record = outcome.verdicts[0].record()
    assert record == {"action": "redact", "rail": "pii", "message": "",
                      "reason": "redacted email", "score": None}  # no user text stored
    long = await run_rails(rails, "mail: someone@example.com " + "x" * 40, RailContext(),
                           stage="t")
    assert long.blocked is not None and long.blocked.rail == "length"


def test_the_shipped_policy_file_equals_the_defaults() -> None:
    assert GuardrailPolicy.load(REPO / "deploy" / "guardrails.toml") == GuardrailPolicy()


@pytest.mark.parametrize(("content", "needle"), [
    ("[input]\nmax_char = 3\n", "input.max_char"),
    ("[output]\ngrounding = \"vibes\"\n", "output.grounding"),
    ("[input\n", "guardrails.toml"),
])
def test_bad_policies_are_clear_config_errors(tmp_path: Path, content: str, needle: str
                                              ) -> None:
    path = tmp_path / "guardrails.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match="GUARDRAILS_POLICY") as caught:
        GuardrailPolicy.load(path)
    assert needle in str(caught.value)


def test_llm_grounding_needs_a_model() -> None:
    policy = GuardrailPolicy.model_validate({"output": {"grounding": "llm"},
                                             "input": {"injection": False},
                                             "passages": {"injection": False}})
    with pytest.raises(ConfigError, match="needs a language model"):
        build_guardrails(policy)


def test_disabled_policy_builds_no_rails() -> None:
    rails = build_guardrails(GuardrailPolicy(enabled=False))
    assert rails.input_rails == [] and rails.output_rails == [] and rails.injection is None
    assert rails.redact_draft("a@b.io") == "a@b.io"


def test_policy_pii_kinds_match_the_redactor() -> None:
    from typing import get_args

    from bot.guardrails.pii import KINDS
    from bot.guardrails.policy import PIIKind

    assert get_args(PIIKind) == KINDS


async def test_a_failing_judge_falls_back_to_the_lexical_check() -> None:
    async def judge(answer: str, passages: list[Passage]) -> GroundingJudgement:
        raise OSError("judge down")

    rail = GroundingRail("nope", always=True, judge=judge)
    made_up = "The zlib library was written in Fortran by NASA engineers in 1962 for Apollo."
    assert (await rail.check(made_up, RailContext([ZLIB]))).reason.startswith("lexical")
    assert (await rail.check("Larger buffer sizes are more efficient for inflate().",
                             RailContext([ZLIB]))).action is Action.ALLOW
