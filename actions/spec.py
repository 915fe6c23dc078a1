"""What an action is: `@action` on an async function taking an `ActionContext` and a pydantic
model of its arguments; `ActionSpec` is what the decorator records.

```python
class CreateTicket(BaseModel):
    title: str
    priority: Literal["low", "normal", "high"] = "normal"

@action(description="Open a ticket in the team's tracker", confirm=True, roles={"support"})
async def create_ticket(ctx: ActionContext, args: CreateTicket) -> str: ...
```

The function's name is the action's name unless `name=` says otherwise: 1-32 characters of
lowercase letters, digits and "_" (Telegram's and Discord's command-name rule,
https://core.telegram.org/bots/api#botcommand and
https://discord.com/developers/docs/interactions/application-commands), so one name works as
`/name`, `!name` and an LLM tool name.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from bot.messages import Message

if TYPE_CHECKING:
    import aiohttp

    from bot.protocols import Memory, Retriever

NAME = re.compile(r"^[a-z0-9_]{1,32}$")
Via = Literal["command", "button", "tool"]
ATTRIBUTE = "__switchboard_action__"


class ActionDefinitionError(TypeError):
    """An `@action` is malformed (bad name, no pydantic argument model, not async)."""


class ActionError(Exception):
    """Raise from an action to fail with a message the user may read ("the tracker refused
    the title"); it is never retried. Any other exception is reported as a bare failure with
    a trace id, and retried when the action is idempotent."""


class NoArguments(BaseModel):
    """The argument model of an action that takes none."""


@dataclass(frozen=True, slots=True)
class ActionButton:
    """A button an action puts under its reply; pressing it runs `action` with `args` for
    whoever presses it (their permissions apply, and a `confirm=True` action still asks)."""

    label: str
    action: str
    args: dict[str, Any] = field(default_factory=dict)
    style: str = ""


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action returns when plain text is not enough: the reply text (Markdown) and
    buttons under it. An action may also return a `str`, a pydantic model or a dict (shown as
    JSON)."""

    text: str
    buttons: tuple[ActionButton, ...] = ()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who invoked an action, always taken from the platform's message, never from
    arguments: `platform`, `user` (the platform's user id), and where."""

    platform: str
    user: str
    channel: str
    workspace: str | None = None
    thread: str | None = None

    @classmethod
    def of(cls, message: Message) -> Caller:
        conv = message.conversation
        return cls(platform=conv.platform, user=message.user, channel=conv.channel,
                   workspace=conv.workspace, thread=conv.thread)


class LastAnswer(typing.Protocol):
    """Read and rate the last answer of a conversation (the transcript)."""

    async def last_answer_sources(self, conversation_key: str) -> list[dict[str, Any]] | None:
        """The sources of the conversation's last model answer; None if there is none."""
        ...

    async def rate_last_answer(self, conversation_key: str, vote: int) -> bool:
        """Store +1/-1 on the conversation's last model answer; False if there is none."""
        ...


@dataclass(frozen=True)
class ActionContext:
    """What an action receives besides its arguments.

    Attributes:
        caller: who asked (from the platform message, never from arguments).
        message: the message that invoked the action (a command, a button press, or the
            question whose answer called the action as a tool).
        via: "command", "button" or "tool".
        call_id: unique per invocation and stable across retries of it (an idempotency key
            for calls the action makes).
        trace_id: names this run in logs and the audit row.
        memory, retriever, transcript: the conversation's memory, the knowledge base, the
            transcript's last answer.
        http: a shared aiohttp session for calls the action makes.
        available: the actions the caller may run here (for `help`), best first.
    """

    caller: Caller
    message: Message
    via: Via
    call_id: str
    trace_id: str
    memory: Memory
    retriever: Retriever
    transcript: LastAnswer
    http: aiohttp.ClientSession
    available: Callable[[], Awaitable[Sequence[ActionSpec]]]

    @property
    def conversation_key(self) -> str:
        return self.message.conversation.key


ActionFunc = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class ActionSpec:
    """One registered action.

    Attributes:
        name: the command and tool name (`NAME`).
        description: one line for help, command menus (first 100 characters) and the LLM.
        func: the async function.
        args_model: the pydantic model of its arguments.
        confirm: runs only after the caller presses Confirm (the LLM cannot skip it).
        roles: role names (deployment policy maps them to users and platform groups); empty
            means anyone the other rules allow.
        users: "platform:user id" grants that may run it besides the roles.
        platforms, channels: where it is offered ("slack", ...; "platform:channel id");
            empty means everywhere.
        timeout_s: the longest one attempt may run, seconds.
        idempotent: safe to run twice; only then is a failed attempt retried (`retries`
            times) and a run interrupted by a crash run again.
        read_only: changes nothing anywhere (implies `idempotent`): its audit row is written
            once, when the run ended, instead of `running` before and finished after (one SQL
            statement per run instead of two); a redelivered message runs it again.
        tool: offered to the LLM as a tool.
        origin: where it came from: "builtin", "module <name>" (BOT_ACTION_MODULES), or
            "entry point <name> = <value> (<distribution> <version>)".
    """

    name: str
    description: str
    func: ActionFunc
    args_model: type[BaseModel]
    confirm: bool = False
    roles: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    platforms: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()
    timeout_s: float = 10.0
    idempotent: bool = False
    read_only: bool = False
    retries: int = 0
    tool: bool = True
    origin: str = ""
    takes_args: bool = True  # the function has an `args` parameter

    async def call(self, ctx: ActionContext, args: BaseModel) -> Any:
        """Run the function once (no timeout, no retries: see `ActionRunner`)."""
        if self.takes_args:
            return await self.func(ctx, args)
        return await self.func(ctx)


def _annotation(func: Callable[..., Any], param: str) -> Any:
    """The evaluated annotation of one parameter of `func`. Only that one is evaluated, so a
    plugin may import `ActionContext` under `TYPE_CHECKING` (with `from __future__ import
    annotations`).

    Raises:
        ActionDefinitionError: the annotation names something the module does not define.
    """
    annotations = getattr(func, "__annotations__", {})
    if param not in annotations:
        return None
    annotation = annotations[param]
    # a function with only that annotation and the module's globals: get_type_hints resolves
    # it (a string under `from __future__ import annotations`) as it would in `func` itself
    # the module of the function itself, not of a decorator wrapped around it
    # (`functools.wraps` leaves `__wrapped__`, which get_type_hints would follow too)
    probe = types.FunctionType(_probe.__code__,
                               getattr(inspect.unwrap(func), "__globals__", {}))
    probe.__annotations__ = {param: annotation}
    try:
        return typing.get_type_hints(probe).get(param)
    except NameError as exc:
        raise ActionDefinitionError(
            f"{func.__qualname__}: cannot resolve the annotation of {param!r}: {exc}") from None


def _probe() -> None:  # pragma: no cover - only its code object is used
    pass


def _args_model(func: Callable[..., Any]) -> type[BaseModel]:
    params = list(inspect.signature(func).parameters.values())
    if not 1 <= len(params) <= 2:
        raise ActionDefinitionError(
            f"{func.__qualname__}: an action takes (ctx: ActionContext, args: Model)")
    if len(params) == 1:
        return NoArguments
    model = _annotation(func, params[1].name)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ActionDefinitionError(
            f"{func.__qualname__}: the second parameter must be annotated with a pydantic "
            f"BaseModel subclass, not {model!r}")
    return model


def action(description: str, *, name: str | None = None, confirm: bool = False,
           roles: set[str] | frozenset[str] = frozenset(),
           users: set[str] | frozenset[str] = frozenset(),
           platforms: set[str] | frozenset[str] = frozenset(),
           channels: set[str] | frozenset[str] = frozenset(),
           timeout_s: float = 10.0, idempotent: bool = False, retries: int = 2,
           tool: bool = True, read_only: bool = False) -> Callable[[ActionFunc], ActionFunc]:
    """Mark an async function as an action (see `ActionSpec` for the fields). `retries`
    applies only when `idempotent` (or `read_only`) is true.

    Raises:
        ActionDefinitionError: the function is not async, its name is not a valid command
            name, or its argument model is not a pydantic model.
    """

    def mark(func: ActionFunc) -> ActionFunc:
        action_name = name or func.__name__
        if not inspect.iscoroutinefunction(func):
            raise ActionDefinitionError(f"{func.__qualname__}: an action must be async def")
        if not NAME.match(action_name):
            raise ActionDefinitionError(
                f"{action_name!r}: action names are 1-32 of a-z, 0-9 and _")
        if not description.strip():
            raise ActionDefinitionError(f"{action_name}: a description is required")
        if timeout_s <= 0:
            raise ActionDefinitionError(f"{action_name}: timeout_s must be positive")
        spec = ActionSpec(
            name=action_name, description=" ".join(description.split()), func=func,
            args_model=_args_model(func), confirm=confirm, roles=frozenset(roles),
            users=frozenset(users), platforms=frozenset(platforms),
            channels=frozenset(channels), timeout_s=timeout_s,
            idempotent=idempotent or read_only, read_only=read_only,
            retries=retries if idempotent or read_only else 0, tool=tool,
            takes_args=len(inspect.signature(func).parameters) == 2)
        setattr(func, ATTRIBUTE, spec)
        return func

    return mark


def spec_of(obj: object) -> ActionSpec | None:
    """The spec `@action` attached to `obj`, if any."""
    spec = getattr(obj, ATTRIBUTE, None)
    return spec if isinstance(spec, ActionSpec) else None
