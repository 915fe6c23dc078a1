"""Actions as LLM tools: the actions a caller may run (and that allow it, `tool=True`) are
offered to the model as OpenAI function tools; each call the model makes goes through
`ActionRunner.invoke` like a command, as the message's author, with the model's arguments
validated against the action's model. A `confirm=True` action answers the model "not run yet"
and puts Confirm/Cancel buttons under the reply, so the user, not the model, decides.
"""

from __future__ import annotations

from typing import Any

from actions.arguments import tool_schema
from actions.runner import ActionRunner
from actions.spec import ActionSpec
from bot.messages import Message
from bot.protocols import Toolbox, ToolOutput


class ActionToolbox:
    """Implements `bot.protocols.Toolbox` for one message. Only the tools in `specs` (those
    offered to the model) are run; a call to any other name, an action that exists
    included, is denied and audited, never run."""

    def __init__(self, runner: ActionRunner, message: Message, specs: list[ActionSpec]) -> None:
        self._runner = runner
        self._message = message
        self._offered = frozenset(s.name for s in specs)
        self._schemas = [tool_schema(s) for s in specs]

    def schemas(self) -> list[dict[str, Any]]:
        return self._schemas

    async def call(self, name: str, arguments: str, call_index: int) -> ToolOutput:
        # the call id depends on the message and the call's place, not on the model's own
        # call id, so a retried message that makes the same calls finds their runs
        call_id = f"{self._message.id}:tool:{call_index}:{name[:64]}"
        if name not in self._offered:
            outcome = await self._runner.refuse(
                self._message, name, "tool", args=arguments, call_id=call_id,
                reason=f"`{name[:64]}` is not one of the tools offered to you here")
        else:
            outcome = await self._runner.invoke(self._message, name, "tool", args=arguments,
                                                call_id=call_id)
        return ToolOutput(content=outcome.for_model(), buttons=outcome.buttons)


def toolbox_factory(runner: ActionRunner) -> Any:
    """`async (message) -> Toolbox | None` for `bot.pipeline.Generate`: None when the caller
    may run no tool action."""

    async def toolbox_for(message: Message) -> Toolbox | None:
        specs = await runner.available(message, tools_only=True)
        return ActionToolbox(runner, message, specs) if specs else None

    return toolbox_for
