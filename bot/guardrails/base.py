"""What every rail shares: the verdict, the rail protocol, and running a list of rails."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Protocol

from bot.log import get_logger
from bot.messages import Passage
from bot.metrics import RAIL_VERDICTS

log = get_logger("bot.guardrails")


class Action(StrEnum):
    ALLOW = "allow"
    REDACT = "redact"
    BLOCK = "block"


@dataclass(frozen=True)
class Verdict:
    """One rail's decision on one text.

    Attributes:
        action: allow, redact (use `text` instead) or block (answer `message` instead).
        rail: the rail's name.
        text: the redacted text (redact only).
        message: what the user reads instead of an answer (block only).
        reason: why, for logs and the transcript (never the text itself).
        score: the rail's score in [0, 1] where it has one (the injection probability).
    """

    action: Action
    rail: str
    text: str | None = None
    message: str = ""
    reason: str = ""
    score: float | None = None

    def record(self) -> dict[str, object]:
        """The verdict as stored on the transcript row (no user text)."""
        data = asdict(self)
        data.pop("text")
        data["action"] = str(self.action)
        return data


def allow(rail: str, score: float | None = None) -> Verdict:
    return Verdict(Action.ALLOW, rail, score=score)


@dataclass
class RailContext:
    """What a rail may look at besides the text: the retrieved passages (grounding) and
    whether the reply must come from the knowledge base only."""

    passages: list[Passage] = field(default_factory=list)
    knowledge_base_only: bool = False


class Rail(Protocol):
    """A guardrail: one async method returning a verdict. Rails never raise on user input."""

    name: str

    async def check(self, text: str, ctx: RailContext) -> Verdict: ...


@dataclass(frozen=True)
class Outcome:
    """The result of running rails in order: the (possibly redacted) text, the verdict that
    blocked it (or None), and every verdict that was not a plain allow."""

    text: str
    blocked: Verdict | None
    verdicts: list[Verdict]
    score: float | None = None  # the highest rail score seen


async def run_rails(rails: list[Rail], text: str, ctx: RailContext, *, stage: str) -> Outcome:
    """Run `rails` in order on `text`. A redaction feeds the next rail; a block stops.
    Every verdict is logged with its rail's name and counted in
    `switchboard_rail_verdicts_total{rail, action}`; the text itself is never logged."""
    verdicts: list[Verdict] = []
    top: float | None = None
    for rail in rails:
        verdict = await rail.check(text, ctx)
        RAIL_VERDICTS.labels(verdict.rail, str(verdict.action)).inc()
        if verdict.score is not None:
            top = verdict.score if top is None else max(top, verdict.score)
        if verdict.action is Action.ALLOW:
            continue
        verdicts.append(verdict)
        log.info("rail verdict", stage=stage, rail=verdict.rail, action=str(verdict.action),
                 reason=verdict.reason, score=verdict.score)
        if verdict.action is Action.REDACT and verdict.text is not None:
            text = verdict.text
        elif verdict.action is Action.BLOCK:
            return Outcome(text, verdict, verdicts, top)
    return Outcome(text, None, verdicts, top)
