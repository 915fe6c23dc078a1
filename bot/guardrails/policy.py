"""The guardrail policy: one TOML (or JSON) file, `GUARDRAILS_POLICY`; built-in defaults when
unset. Every key, with its default, is in `deploy/guardrails.toml`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel, ConfigDict, Field

from bot.errors import ConfigError
from bot.guardrails.base import Rail
from bot.guardrails.passages import DROP_SHARE
from bot.guardrails.pii import PIIRedactor
from bot.guardrails.rails import (
    BLOCKED_INPUT,
    GroundingJudgement,
    GroundingRail,
    InjectionRail,
    Judge,
    LanguageRail,
    LengthRail,
    PIIRail,
    TopicRail,
)
from bot.llm.prompt import passages_block
from bot.llm.router import LLMRouter
from bot.messages import Passage
from bot.policyfile import load_policy_file

if TYPE_CHECKING:
    from bot.guardrails.injection import Embed

PIIKind = Literal["email", "phone", "card", "iban", "ip", "secret"]  # bot.guardrails.pii.KINDS

NOT_IN_KB = ("I couldn't find that in the knowledge base, so I won't guess. Try rephrasing, "
             "or ask someone on the team.")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputPolicy(_Section):
    # None: BOT_MAX_TEXT_CHARS, the limit every ingress enforces too (one setting for both)
    max_chars: Annotated[int, Field(gt=0)] | None = None
    too_long_message: str = "That message is too long for me ({max_chars} characters at most)."
    injection: bool = True
    # None: the operating point stored with the shipped classifier
    injection_threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    injection_message: str = BLOCKED_INPUT
    redact_pii: bool = False
    allowed_languages: list[str] = []
    language_message: str = "Sorry, I can only answer in these languages: {languages}."
    blocked_topics: dict[str, list[str]] = {}
    blocked_message: str = BLOCKED_INPUT
    allowed_topics: dict[str, list[str]] = {}
    off_topic_message: str = "Sorry, I can only help with: {topics}."


class PassagePolicy(_Section):
    injection: bool = True
    # None: the passage model's trained operating point (bot/guardrails/data/passage.npz).
    # Passages are scored unit by unit (sentences, comments, link titles, table cells...) by
    # a model of their own: raise it if legitimate documentation gets cut.
    injection_threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    # Adversarial units are cut and the rest kept; a passage is dropped whole only when more
    # than this share of its non-blank characters would be cut.
    drop_share: Annotated[float, Field(ge=0, le=1)] = DROP_SHARE


class OutputPolicy(_Section):
    redact_pii: bool = True
    pii_kinds: list[PIIKind] = ["email", "phone", "card", "iban", "ip", "secret"]
    phone_regions: list[str] = ["US"]
    secret_entropy_bits: Annotated[float, Field(gt=0, le=8)] = 4.0
    knowledge_base_only: bool = False
    grounding: Literal["lexical", "llm"] = "lexical"
    min_support: Annotated[float, Field(ge=0, le=1)] = 0.5
    not_in_kb_message: str = NOT_IN_KB


class GuardrailPolicy(_Section):
    enabled: bool = True
    input: InputPolicy = InputPolicy()
    passages: PassagePolicy = PassagePolicy()
    output: OutputPolicy = OutputPolicy()

    @classmethod
    def load(cls, path: Path | None) -> GuardrailPolicy:
        """The policy in `path` (.toml or .json), or the defaults when None.

        Raises:
            ConfigError: unreadable file, bad syntax, or an unknown or invalid key (named).
        """
        return load_policy_file(cls, path, "GUARDRAILS_POLICY")


def llm_judge(router: LLMRouter) -> Judge:
    """A grounding judge that asks the router for a `GroundingJudgement` (instructor)."""

    async def judge(answer: str, passages: list[Passage]) -> GroundingJudgement:
        messages: list[ChatCompletionMessageParam] = [
            {"role": "system", "content":
             "You check answers against sources. supported is true only if every factual "
             "claim of the answer is stated in or follows from the passages; list the claims "
             "that are not."},
            {"role": "user", "content": f"{passages_block(passages)}\n\nAnswer:\n{answer}"},
        ]
        return await router.structured(messages, GroundingJudgement)

    return judge


@dataclass
class Guardrails:
    """The rails built from a policy: input rails (in order), the passage check, output rails
    (in order), and `redact_draft` for streamed drafts."""

    policy: GuardrailPolicy
    input_rails: list[Rail] = field(default_factory=list)
    injection: InjectionRail | None = None
    passage_injection: bool = False
    output_rails: list[Rail] = field(default_factory=list)
    redactor: PIIRedactor | None = None
    #: an output rail calls the language model (the grounding judge): it may take long or fail
    output_calls_model: bool = False

    def redact_draft(self, text: str) -> str:
        return self.redactor.redact(text)[0] if self.redactor is not None else text

    def close(self) -> None:
        if self.injection is not None:
            self.injection.close()


def build_guardrails(policy: GuardrailPolicy, router: LLMRouter | None = None, *,
                     max_text_chars: int = 4000, embed: Embed | None = None) -> Guardrails:
    """The rails `policy` asks for. The injection classifier's weights are read here; its
    embedding model loads at the first check. `max_text_chars` (BOT_MAX_TEXT_CHARS) is the
    length rail's limit when the policy sets none. `embed` is the process's all-MiniLM-L6-v2
    (int8 ONNX) embedder to share (None: the rails load their own). A text's embedding does
    not depend on the texts embedded with it, nor on how the embedder splits a call into
    batches (tests/bot/guardrails/test_injection.py checks it), so the rails can batch texts
    of concurrent messages and share the runtime's model whatever its batch size.

    Raises:
        ConfigError: `grounding = "llm"` without a language model configured.
    """
    rails = Guardrails(policy)
    if not policy.enabled:
        return rails
    p_in, p_out = policy.input, policy.output
    rails.input_rails.append(LengthRail(p_in.max_chars or max_text_chars,
                                        p_in.too_long_message))
    if p_in.allowed_languages:
        rails.input_rails.append(LanguageRail(p_in.allowed_languages, p_in.language_message))
    if p_in.blocked_topics or p_in.allowed_topics:
        rails.input_rails.append(TopicRail(p_in.blocked_topics, p_in.allowed_topics,
                                           p_in.blocked_message, p_in.off_topic_message))
    if p_in.injection or policy.passages.injection:
        from bot.guardrails.injection import (
            SINGLE_WINDOW_CHARS,
            InjectionClassifier,
        )
        from bot.guardrails.passage_model import PassageModel

        # Passages: the documentation-register model, sharing the classifier's embedder (both
        # score on the rail's one worker thread).
        passage_model = PassageModel.load(embed=lambda texts: classifier.embed(texts))
        classifier = InjectionClassifier.load(embed=embed)
        threshold = p_in.injection_threshold if p_in.injection_threshold is not None \
            else classifier.default_threshold
        p_threshold = policy.passages.injection_threshold
        if p_threshold is None:
            p_threshold = passage_model.threshold
        passage_model.decide_at = p_threshold  # where the context may change a verdict
        # the input rail's decisions only: texts the n-grams settle are not embedded
        scorer = functools.partial(classifier.score, decide_at=threshold)
        rails.injection = InjectionRail(scorer, threshold, p_in.injection_message,
                                        passage_threshold=p_threshold,
                                        passage_scorer=passage_model.score,
                                        drop_share=policy.passages.drop_share,
                                        quick=functools.partial(classifier.settled_score,
                                                                decide_at=threshold),
                                        quick_max_chars=SINGLE_WINDOW_CHARS)
        rails.passage_injection = policy.passages.injection
        if p_in.injection:
            rails.input_rails.append(rails.injection)
    redactor = PIIRedactor(p_out.pii_kinds, p_out.phone_regions, p_out.secret_entropy_bits)
    if p_in.redact_pii:
        rails.input_rails.append(PIIRail(redactor))
    if p_out.redact_pii:
        rails.redactor = redactor
        rails.output_rails.append(PIIRail(redactor))
    judge = None
    if p_out.grounding == "llm":
        if router is None:
            raise ConfigError("GUARDRAILS_POLICY: output.grounding = \"llm\" needs a language "
                              "model (LLM_BASE_URL, OPENAI_API_KEY or LLM_PROVIDERS)")
        judge = llm_judge(router)
        rails.output_calls_model = True
    rails.output_rails.append(GroundingRail(p_out.not_in_kb_message,
                                            always=p_out.knowledge_base_only,
                                            min_support=p_out.min_support, judge=judge))
    return rails
