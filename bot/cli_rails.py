"""`bot rails ...`: run the guardrails outside the bot, for evaluation and tuning."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # imported when used: `bot --help` does not pay for the guardrails
    from bot.guardrails.policy import GuardrailPolicy, Guardrails

rails_app = typer.Typer(no_args_is_help=True, help="Evaluate the guardrails.")


def input_guardrails(policy: GuardrailPolicy) -> Guardrails:
    """The policy's input rails (output rails, which may need a model, are left out)."""
    from bot.guardrails.policy import build_guardrails

    offline = policy.model_copy(update={"output": policy.output.model_copy(
        update={"grounding": "lexical"})})
    return build_guardrails(offline)


def _text_of(line: str) -> str:
    data: Any = json.loads(line)
    if not isinstance(data, dict) or not isinstance(data.get("text"), str):
        raise ValueError('expected an object with a string "text"')
    return str(data["text"])


class Stage(StrEnum):
    INPUT = "input"
    PASSAGES = "passages"


@rails_app.command("check")
def rails_check(
        threshold: Annotated[float | None, typer.Option(
            min=0.0, max=1.0, help="Injection threshold of the stage (default: the policy's).")
        ] = None,
        stage: Annotated[Stage, typer.Option(
            help="input: each text is a user message; passages: each text is a retrieved "
                 "passage.")] = Stage.INPUT,
) -> None:
    """Read JSON lines {"text": ...} on stdin; write one JSON line per input.

    --stage input (default): {"allowed": bool, "rail": str|null, "score": float} (score: the
    highest rail score, the injection probability; rail: the rail that blocked).

    --stage passages: {"allowed": bool, "rail": str|null, "score": float, "removed":
    [{"start": int, "end": int, "score": float}]}: allowed is false when the whole passage
    would be dropped; removed lists the character spans (code-point offsets into the text,
    end exclusive) that would be cut from a kept passage, empty when nothing is; rail names
    the rail that cut or dropped something; score is the highest unit score.

    A bad line gets {"error": ...} and the exit code is 1."""
    from bot.cli_common import run as _run
    from bot.cli_common import settings as _settings
    from bot.guardrails.base import RailContext, run_rails
    from bot.guardrails.policy import GuardrailPolicy

    settings = _settings()

    async def main() -> int:
        policy = GuardrailPolicy.load(settings.guardrails_policy)
        if threshold is not None and stage is Stage.INPUT:
            policy = policy.model_copy(update={"input": policy.input.model_copy(
                update={"injection_threshold": threshold})})
        elif threshold is not None:
            policy = policy.model_copy(update={"passages": policy.passages.model_copy(
                update={"injection_threshold": threshold})})
        rails = input_guardrails(policy)
        failed = 0
        try:
            for number, line in enumerate(sys.stdin, 1):
                if not line.strip():
                    continue
                try:
                    text = _text_of(line)
                except ValueError as exc:  # json.JSONDecodeError is a ValueError
                    failed += 1
                    result: dict[str, Any] = {"error": f"line {number}: {exc}"}
                else:
                    if stage is Stage.PASSAGES:
                        result = await _passage_result(rails, text, number)
                    else:
                        outcome = await run_rails(rails.input_rails, text, RailContext(),
                                                  stage="check")
                        result = {"allowed": outcome.blocked is None,
                                  "rail": outcome.blocked.rail if outcome.blocked else None,
                                  "score": round(outcome.score or 0.0, 6)}
                sys.stdout.write(json.dumps(result) + "\n")
                sys.stdout.flush()
        finally:
            rails.close()
        return 1 if failed else 0

    _run(main())


async def _passage_result(rails: Guardrails, text: str, number: int) -> dict[str, Any]:
    """The passage check of one text, as `rails check --stage passages` prints it."""
    from bot.messages import Passage

    injection = rails.injection
    if injection is None or not rails.passage_injection:
        return {"allowed": True, "rail": None, "score": 0.0, "removed": []}
    [check] = await injection.filter_passages([Passage(
        text=text, uri=f"stdin:{number}", title="", section="", page=None, score=0.0)])
    removed = [] if check.dropped else [
        {"start": c.start, "end": c.end, "score": round(c.score, 6)} for c in check.cuts]
    return {"allowed": not check.dropped, "rail": injection.name if check.cuts else None,
            "score": round(check.score, 6), "removed": removed}
