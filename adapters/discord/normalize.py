"""Discord payloads -> `Message`: pure functions over Discord's payload shapes.

Gateway MESSAGE_CREATE (PROTOCOLS.md 3.1): answered in DMs, when the bot is mentioned, and in a
thread the bot already replied in; never for bots (`author.bot`, which covers the bot itself).
Mentions of the bot (`<@id>`, `<@!id>`) are removed from the text. Id:
`discord:message:<message id>`; the reply quotes the message in the same channel or thread.

HTTP interactions (PROTOCOLS.md 3.2): an APPLICATION_COMMAND's string options form the
question. Id: `discord:interaction:<interaction id>`; the reply completes the deferred
response through the interaction webhook (`application_id` and `token` in `meta`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.messages import Conversation, Message

PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
STRING_OPTION = 3


@dataclass(frozen=True)
class Skip:
    reason: str


def strip_mention(text: str, bot_id: str) -> str:
    return " ".join(re.sub(rf"<@!?{re.escape(bot_id)}>", " ", text).split())


def normalize_message_create(data: dict[str, Any], bot_id: str, *, is_thread: bool = False,
                             in_bot_thread: bool = False) -> Message | Skip:
    """A MESSAGE_CREATE payload -> Message, or Skip with the reason.

    Args:
        is_thread: the message's channel is a thread (the sender remembers replying there).
        in_bot_thread: the message's channel is a thread the bot has replied in.
    """
    author = data.get("author") or {}
    if author.get("bot") or str(author.get("id")) == bot_id:
        return Skip("from a bot")
    if data.get("type", 0) not in (0, 19):  # DEFAULT and REPLY; joins, pins... are not asked
        return Skip(f"message type {data.get('type')}")
    channel, message_id = data.get("channel_id"), data.get("id")
    if not channel or not message_id:
        return Skip("no channel or id")
    guild = data.get("guild_id")
    mentioned = any(str(m.get("id")) == bot_id for m in data.get("mentions") or [])
    if guild and not mentioned and not in_bot_thread:
        return Skip("guild message without a mention")
    text = strip_mention(str(data.get("content") or ""), bot_id)
    if not text:
        return Skip("no text (is the MESSAGE_CONTENT intent enabled?)")
    return Message(
        id=f"discord:message:{message_id}",
        conversation=Conversation(platform="discord", channel=str(channel),
                                  workspace=str(guild) if guild else None,
                                  reply_to=str(message_id)),
        user=str(author.get("id", "")), text=text,
        meta={"mode": "gateway", "in_thread": "1" if is_thread else ""})


def command_text(data: dict[str, Any]) -> str:
    """The question of a slash command: its string option values (sub-commands included)."""
    values: list[str] = []

    def walk(options: list[dict[str, Any]]) -> None:
        for option in options:
            if option.get("type") == STRING_OPTION and isinstance(option.get("value"), str):
                values.append(option["value"])
            walk(option.get("options") or [])

    walk(data.get("options") or [])
    return " ".join(v.strip() for v in values if v.strip())


def normalize_interaction(payload: dict[str, Any]) -> Message | Skip:
    """An APPLICATION_COMMAND interaction -> Message, or Skip."""
    if payload.get("type") != APPLICATION_COMMAND:
        return Skip(f"interaction type {payload.get('type')}")
    interaction_id, token = payload.get("id"), payload.get("token")
    application_id, channel = payload.get("application_id"), payload.get("channel_id")
    if not (interaction_id and token and application_id and channel):
        return Skip("incomplete interaction")
    user = (payload.get("member") or {}).get("user") or payload.get("user") or {}
    text = command_text(payload.get("data") or {})
    if not text:
        return Skip("command without a question")
    guild = payload.get("guild_id")
    return Message(
        id=f"discord:interaction:{interaction_id}",
        conversation=Conversation(platform="discord", channel=str(channel),
                                  workspace=str(guild) if guild else None),
        user=str(user.get("id", "")), text=text,
        meta={"mode": "interaction", "application_id": str(application_id),
              "token": str(token), "command": str((payload.get("data") or {}).get("name", ""))})
