"""The pipeline stage that routes a message to an action (docs/architecture.md, "Action routing").

A message is an action call when:
- it carries a pressed button (`meta["button"]`);
- it is a platform command (`meta["command"]`) naming an action (`/start` names `help`);
  arguments come from `meta["args"]` (typed options) or the command's text;
- its text is `!name args` (`!` then an action name; an unknown `!name` is answered with a
  pointer to `!help`).
Any other message, `/ask question` included, goes on to the model; so does `!ask question`,
as the question alone (`ask` is the bot's own command, never an action's name). `/ask` or
`!ask` without a question is answered with `ASK_HINT`. The action's reply is
kept for retries like a generated answer (`bot.answers.AnswerStore`), and `ctx.action` tells
later stages that no model wrote it: input rails, retrieval and generation skip it, output
rails only redact, memory does not keep it, the transcript row names the action.
"""

from __future__ import annotations

import dataclasses
import re

from actions.runner import ActionRunner, Outcome
from bot.answers import AnswerStore
from bot.messages import Reply
from bot.pipeline import Context, keep_answer, restore_answer
from bot.protocols import Generated

BANG = re.compile(r"^!([A-Za-z0-9_]{1,32})(?:\s+(.*))?$", re.DOTALL)
ALIASES = {"start": "help"}  # Telegram sends /start when a user opens the bot
ASK = "ask"  # the bot's own command: the rest of the text is a question for the model
ASK_HINT = "Ask me something, e.g. `/ask how do I …`, or see what I can do with `/help`."


class RouteAction:
    """Runs the action a message calls, if it calls one (see the module docstring)."""

    def __init__(self, runner: ActionRunner, answers: AnswerStore) -> None:
        self._runner = runner
        self._answers = answers

    async def __call__(self, ctx: Context) -> None:
        message = ctx.message
        meta = message.meta
        registry = self._runner.registry
        outcome: Outcome | None = None
        if meta.get("button"):
            if await restore_answer(ctx, self._answers):
                ctx.action = ctx.action or "button"
                ctx.answered_by = "action"
                return
            outcome = await self._runner.press(message, meta["button"])
        elif meta.get("command"):
            name = meta["command"].lower()
            name = ALIASES.get(name, name)  # `start` and `ask` are no action's name
            if name in registry:
                if await restore_answer(ctx, self._answers):
                    ctx.action = ctx.action or name
                    ctx.answered_by = "action"
                    return
                outcome = await self._runner.invoke(
                    message, name, "command", call_id=message.id,
                    args=meta["args"] if meta.get("args") else None, text=message.text)
            elif not message.text.strip():
                outcome = Outcome("", "unknown", ASK_HINT, ephemeral=True)
        elif match := BANG.match(message.text.strip()):
            if match.group(1).lower() == ASK:
                question = (match.group(2) or "").strip()
                if question:  # `!ask question` is `/ask question`: on to the model
                    ctx.message = dataclasses.replace(message, text=question)
                    return
                outcome = Outcome("", "unknown", ASK_HINT, ephemeral=True)
            elif await restore_answer(ctx, self._answers):
                ctx.action = ctx.action or match.group(1).lower()
                ctx.answered_by = "action"
                return
            else:
                outcome = await self._runner.invoke(
                    message, match.group(1).lower(), "command", text=match.group(2) or "",
                    call_id=message.id)
        if outcome is None:
            return
        ctx.action = outcome.action or "unknown"
        ctx.answered_by = "action"
        ctx.reply = Reply(message_id=message.id, conversation=message.conversation,
                          text=outcome.text, meta=dict(meta), buttons=outcome.buttons,
                          ephemeral=outcome.ephemeral)
        ctx.generated = Generated(text=outcome.text, model=f"action:{ctx.action}",
                                  trace_id=outcome.trace_id)
        await keep_answer(ctx, self._answers)
