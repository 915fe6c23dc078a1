"""Arguments: from command text or typed options to the action's pydantic model, and from the
model to usage lines, platform command options and LLM tool schemas.

Text commands (`/name ...` in Slack and Telegram, `!name ...` anywhere) are split at
whitespace; double quotes group words (`split_words`). `key=value` words set the argument
`key` by name. Other words fill
the arguments in order (required ones first), one word each, except that a text argument with
no required argument after it takes all the remaining words:

    !create_ticket Printer on fire priority=high   -> title="Printer on fire", priority="high"
    !feedback down wrong version                   -> vote="down", comment="wrong version"
"""

from __future__ import annotations

import functools
import json
import shlex
import types
import typing
from typing import Any, Literal

from instructor import openai_schema
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from actions.spec import ActionSpec
from bot.protocols import CommandOption, CommandSpec, OptionKind


class ArgumentError(ValueError):
    """The arguments do not fit the action's model; the message says how, for the user."""


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(the type inside Optional[...], whether None is allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return inner[0], True
    return annotation, False


def _is_text(info: FieldInfo) -> bool:
    inner, _ = unwrap_optional(info.annotation)
    return inner is str


def _choices(info: FieldInfo) -> tuple[Any, ...]:
    inner, _ = unwrap_optional(info.annotation)
    if typing.get_origin(inner) is Literal:
        return typing.get_args(inner)
    return ()


def _kind(info: FieldInfo) -> OptionKind:
    inner, _ = unwrap_optional(info.annotation)
    choices = _choices(info)
    if choices:
        inner = type(choices[0])
    if inner is bool:
        return "boolean"
    if inner is int:
        return "integer"
    if inner is float:
        return "number"
    return "string"


def _ordered(model: type[BaseModel]) -> list[tuple[str, FieldInfo]]:
    fields = list(model.model_fields.items())
    return [f for f in fields if f[1].is_required()] + [f for f in fields
                                                         if not f[1].is_required()]


def split_words(text: str) -> list[str]:
    """Words of a command line: whitespace-separated, double quotes (straight or curly, as
    phones type them) group words; apostrophes are letters ("doesn't"). Unbalanced quotes
    fall back to plain whitespace splitting."""
    straight = text.replace("\u201c", '"').replace("\u201d", '"')
    lexer = shlex.shlex(straight, posix=True)
    lexer.whitespace_split = True
    lexer.quotes = '"'
    lexer.commenters = ""
    lexer.escape = ""
    try:
        return list(lexer)
    except ValueError:
        return text.split()


def parse_text(model: type[BaseModel], text: str) -> dict[str, Any]:
    """Command text -> raw argument values (validated later by the model). A `key=value`
    word whose key is not an argument's name is an ordinary word.

    Raises:
        ArgumentError: more words than the arguments can take.
    """
    fields = model.model_fields
    named: dict[str, str] = {}
    positional: list[str] = []
    for word in split_words(text):
        key, eq, value = word.partition("=")
        if eq and key in fields:
            named[key] = value
        else:
            positional.append(word)
    order = [(n, f) for n, f in _ordered(model) if n not in named]
    values: dict[str, Any] = dict(named)
    for index, (field_name, info) in enumerate(order):
        if not positional:
            break
        later_required = any(f.is_required() for _, f in order[index + 1:])
        if _is_text(info) and not later_required:
            values[field_name] = " ".join(positional)
            positional = []
        else:
            values[field_name] = positional.pop(0)
    if positional:
        raise ArgumentError(f"too many arguments: {' '.join(positional)!r}")
    return values


def validate(spec: ActionSpec, raw: dict[str, Any]) -> BaseModel:
    """Raw values -> the action's model.

    Raises:
        ArgumentError: a value is missing or invalid; the message lists each problem.
    """
    try:
        return spec.args_model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "arguments"
            problems.append(f"{where}: {error['msg']}")
        raise ArgumentError("; ".join(problems)) from None


def parse_json_object(raw: str) -> dict[str, Any]:
    """A JSON object of arguments (LLM tool call arguments, Discord options).

    Raises:
        ArgumentError: not JSON, or not an object.
    """
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        raise ArgumentError("the arguments are not valid JSON") from None
    if not isinstance(value, dict):
        raise ArgumentError("the arguments must be a JSON object")
    return value


def usage(spec: ActionSpec, prefix: str = "!") -> str:
    """`!create_ticket <title> [priority=low|normal|high]`: `<a>` fills by position, `[<a>]`
    optionally by position, `[a=…]` only by name (after a text argument that takes the rest
    of the words)."""
    parts = [f"{prefix}{spec.name}"]
    by_position = True
    order = _ordered(spec.args_model)
    for index, (field_name, info) in enumerate(order):
        choices = _choices(info)
        shape = "|".join(str(c) for c in choices) if choices else (
            "true|false" if _kind(info) == "boolean" else "…")
        if by_position:
            shown = f"<{shape if choices else field_name}>"
            parts.append(shown if info.is_required() else f"[{shown}]")
            if _is_text(info) and not any(f.is_required() for _, f in order[index + 1:]):
                by_position = False
        else:
            parts.append(f"[{field_name}={shape}]")
    return " ".join(parts)


def command_spec(spec: ActionSpec) -> CommandSpec:
    """The action as a platform command (Discord options: required first, as Discord
    requires; descriptions cut to 100 characters)."""
    options = []
    for field_name, info in _ordered(spec.args_model):
        description = (info.description or field_name.replace("_", " "))[:100]
        options.append(CommandOption(name=field_name.lower()[:32], description=description,
                                     kind=_kind(info), required=info.is_required(),
                                     choices=_choices(info)[:25]))
    return CommandSpec(name=spec.name, description=spec.description[:100],
                       options=tuple(options), usage=usage(spec, "/"))


@functools.cache
def _parameters(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of `model` as tool parameters (instructor's `openai_schema`, which
    builds a subclass: done once per model). Shared: do not mutate."""
    schema: dict[str, Any] = openai_schema(model).openai_schema  # type: ignore[attr-defined]
    parameters: dict[str, Any] = schema.get("parameters", {"type": "object",
                                                          "properties": {}})
    return parameters


def tool_schema(spec: ActionSpec) -> dict[str, Any]:
    """The action as an OpenAI function tool: JSON schema of its model (computed once per
    model), its name and description."""
    return {"type": "function", "function": {
        "name": spec.name, "description": spec.description,
        "parameters": _parameters(spec.args_model)}}
