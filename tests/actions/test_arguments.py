"""Text commands -> arguments, usage lines, platform command options and tool schemas."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from actions.arguments import (
    ArgumentError,
    command_spec,
    parse_json_object,
    parse_text,
    tool_schema,
    usage,
    validate,
)
from actions.builtin import FeedbackArgs, HelpArgs, SearchArgs
from actions.spec import ActionContext, ActionDefinitionError, action, spec_of


class Ticket(BaseModel):
    title: str = Field(min_length=3, description="what is wrong")
    priority: Literal["low", "normal", "high"] = "normal"


class Transfer(BaseModel):
    amount: int
    to: str
    memo: str = ""


class Pair(BaseModel):
    first: str
    second: str


@action(description="Open a ticket")
async def ticket(ctx: ActionContext, args: Ticket) -> str:
    return args.title


@action(description="Move money")
async def transfer(ctx: ActionContext, args: Transfer) -> str:
    return str(args.amount)


@pytest.mark.parametrize(("model", "text", "expected"), [
    (Ticket, "Printer on fire priority=high", {"title": "Printer on fire", "priority": "high"}),
    (Ticket, "priority=low the printer", {"title": "the printer", "priority": "low"}),
    (Ticket, '"quoted title" ', {"title": "quoted title"}),
    (Transfer, "10 alice thanks for lunch", {"amount": "10", "to": "alice thanks for lunch"}),
    (Transfer, '10 bob memo="for lunch"', {"amount": "10", "to": "bob", "memo": "for lunch"}),
    (Ticket, "Printer doesn't print, it's “really” broken",
     {"title": "Printer doesn't print, it's really broken"}),
    (Ticket, 'set timeout=30 in "config', {"title": 'set timeout=30 in "config'}),
    (Ticket, "#42 is back", {"title": "#42 is back"}),
    (Pair, '"a b" c d', {"first": "a b", "second": "c d"}),
    (FeedbackArgs, "down wrong version", {"vote": "down", "comment": "wrong version"}),
    (HelpArgs, "create_ticket", {"action": "create_ticket"}),
    (SearchArgs, "zlib chunk size top_k=3", {"query": "zlib chunk size", "top_k": "3"}),
    (HelpArgs, "", {}),
])
def test_text_fills_arguments_in_order_and_by_name(model: type[BaseModel], text: str,
                                                  expected: dict[str, str]) -> None:
    assert parse_text(model, text) == expected


class Count(BaseModel):
    n: int


def test_more_words_than_arguments_is_an_argument_error() -> None:
    with pytest.raises(ArgumentError, match="too many arguments: '2 3'"):
        parse_text(Count, "1 2 3")
    assert parse_text(FeedbackArgs, "") == {}  # validation then names what is missing
    assert parse_text(SearchArgs, "q top_k=1 top_k=2") == {"query": "q", "top_k": "2"}


def test_validation_names_each_bad_field() -> None:
    spec = spec_of(ticket)
    assert spec is not None
    with pytest.raises(ArgumentError) as err:
        validate(spec, {"title": "ab", "priority": "urgent"})
    assert "title:" in str(err.value) and "priority:" in str(err.value)
    assert validate(spec, {"title": "abc"}) == Ticket(title="abc")
    with pytest.raises(ArgumentError, match="JSON"):
        parse_json_object("{not json")
    with pytest.raises(ArgumentError, match="object"):
        parse_json_object("[1]")


def test_usage_options_and_tool_schema_come_from_the_model() -> None:
    t, m = spec_of(ticket), spec_of(transfer)
    assert t is not None and m is not None
    assert usage(t) == "!ticket <title> [priority=low|normal|high]"
    assert usage(m, "/") == "/transfer <amount> <to> [memo=…]"
    cmd = command_spec(t)
    assert cmd.name == "ticket" and cmd.usage == "/ticket <title> [priority=low|normal|high]"
    title, priority = cmd.options
    assert (title.name, title.kind, title.required, title.description) == (
        "title", "string", True, "what is wrong")
    assert (priority.kind, priority.required, priority.choices) == (
        "string", False, ("low", "normal", "high"))
    assert [o.kind for o in command_spec(m).options] == ["integer", "string", "string"]
    schema = tool_schema(t)
    assert schema["type"] == "function"
    assert schema["function"]["name"] == "ticket"
    assert schema["function"]["parameters"]["required"] == ["title"]
    assert schema["function"]["parameters"]["properties"]["priority"]["enum"] == [
        "low", "normal", "high"]


def test_malformed_actions_fail_when_defined() -> None:
    with pytest.raises(ActionDefinitionError, match="async"):
        action("x")(lambda ctx: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ActionDefinitionError, match="names"):
        @action("x", name="Bad-Name")
        async def bad(ctx: ActionContext) -> str:
            return ""
    with pytest.raises(ActionDefinitionError, match="pydantic"):
        @action("x")
        async def untyped(ctx: ActionContext, args: dict) -> str:  # type: ignore[type-arg]
            return ""
