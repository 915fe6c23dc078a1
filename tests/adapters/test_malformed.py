"""Signed but malformed payloads: every normalizer, given a real payload with any one value
replaced by a value of another JSON type, returns a Message or a Skip and never raises (a
raise would be a 500 to Slack and Discord, and a Telegram update redelivered forever)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.discord import normalize as discord
from adapters.payload import Skip
from adapters.slack import normalize as slack
from adapters.telegram import normalize as telegram
from bot.messages import Message
from tests.adapters.slack.test_commands_buttons import ME as SLACK_ME
from tests.adapters.slack.test_commands_buttons import block_actions, channel_message
from tests.adapters.telegram.test_commands_buttons import ME as TELEGRAM_ME
from tests.adapters.telegram.test_commands_buttons import press, text_update
from tests.fakes.discord_api import BOT_ID, message_create

PAYLOADS = Path(__file__).parents[1] / "payloads"
WRONG: tuple[object, ...] = ("x", 7, 1.5, True, None, [], [1, "y"], {}, {"id": {}})
NAMES = frozenset({"help", "create_ticket"})


def payload(platform: str, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((PAYLOADS / platform / f"{name}.json").read_text())
    return loaded


def mutations(value: Any) -> Iterator[Any]:
    """`value` with, in turn, each nested value (at any depth) replaced by each of WRONG."""
    if isinstance(value, dict):
        items: list[tuple[Any, Any]] = list(value.items())
    elif isinstance(value, list):
        items = list(enumerate(value))
    else:
        return
    for key, child in items:
        for replacement in (*WRONG, *mutations(child)):
            mutated = copy.copy(value)
            mutated[key] = replacement
            yield mutated


CASES: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "slack event": (lambda p: slack.normalize_event(p, SLACK_ME, commands=NAMES),
                    payload("slack", "app_mention")),
    "slack bang message": (lambda p: slack.normalize_event(p, SLACK_ME, commands=NAMES),
                           channel_message("!help")),
    "slack block_actions": (slack.normalize_block_action, block_actions()),
    "telegram message": (lambda p: telegram.normalize_update(p, TELEGRAM_ME, NAMES),
                         text_update("/create_ticket@switchboard_test_bot Printer on fire")),
    "telegram mention": (lambda p: telegram.normalize_update(p, TELEGRAM_ME, NAMES),
                         payload("telegram", "group_mention")),
    "telegram press": (lambda p: telegram.normalize_callback(p, TELEGRAM_ME), press()),
    "discord message": (lambda p: discord.normalize_message_create(p, BOT_ID, commands=NAMES),
                        message_create("!help", roles=("1",))),
    "discord command": (lambda p: discord.normalize_interaction(p, NAMES),
                        payload("discord", "slash_command")),
    "discord press": (discord.normalize_component, payload("discord", "button_press")),
}
SKIPS = (Skip,)


@pytest.mark.parametrize("case", CASES)
def test_any_wrong_value_is_a_message_or_a_skip(case: str) -> None:
    normalize, base = CASES[case]
    assert isinstance(normalize(copy.deepcopy(base)), Message), "the base payload is answered"
    tried = 0
    for mutated in mutations(base):
        tried += 1
        try:
            result = normalize(mutated)
        except Exception as exc:  # the defect this test exists for: name the payload
            raise AssertionError(f"{case}: {type(exc).__name__} on {mutated!r}") from exc
        assert isinstance(result, (Message, *SKIPS)), (case, mutated)
    assert tried > 100
