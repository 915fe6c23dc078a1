"""Discord payloads -> `Message`: pure functions over Discord's payload shapes.

Gateway MESSAGE_CREATE (https://discord.com/developers/docs/events/gateway-events#message-create):
answered in DMs, when the bot is mentioned, in a thread the bot already replied in, and when
the text starts with `!name` for one of the bot's commands (left as is: the engine parses it);
never for bots (`author.bot`, which covers the bot itself). Mentions of the bot (`<@id>`,
`<@!id>`) are removed from the text. Id: `discord:message:<message id>`; the reply quotes the
message in the same channel or thread. `meta["roles"]`: the author's guild role ids (from
`member.roles`), comma-separated.

HTTP interactions (https://discord.com/developers/docs/interactions/receiving-and-responding):
an APPLICATION_COMMAND becomes `meta["command"]` (its name) and `meta["args"]` (a JSON object
of its options, sub-command options flattened); its string options form the text. A
MESSAGE_COMPONENT on one of the bot's buttons (`custom_id` `sb:<token>`) becomes
`meta["button"]`. Id: `discord:interaction:<interaction id>`; the reply completes the deferred
response through the interaction webhook (`application_id` and `token` in `meta`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

from adapters.payload import Skip, obj, objs
from bot.messages import Conversation, Message

PING, APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 1, 2, 3, 4, 5
SUB_COMMAND, SUB_COMMAND_GROUP, STRING_OPTION = 1, 2, 3
_BANG = re.compile(r"^!([A-Za-z0-9_]{1,32})(?=\s|$)")
#: custom_id prefix of the bot's buttons (see send.py); the rest is the token.
BUTTON_PREFIX = "sb:"



def strip_mention(text: str, bot_id: str) -> str:
    return " ".join(re.sub(rf"<@!?{re.escape(bot_id)}>", " ", text).split())


def is_bang_command(text: str, commands: Collection[str]) -> bool:
    """Whether `text` starts with `!name` (then a space or the end) for a name in `commands`."""
    match = _BANG.match(text)
    return match is not None and match.group(1).lower() in commands


def roles_of(member: Any) -> str:
    """A member's role ids, comma-separated ("" without a member)."""
    roles = member.get("roles") if isinstance(member, dict) else None
    return ",".join(str(r) for r in roles) if isinstance(roles, list) else ""


def normalize_message_create(data: dict[str, Any], bot_id: str, *, is_thread: bool = False,
                             in_bot_thread: bool = False,
                             commands: Collection[str] = ()) -> Message | Skip:
    """A MESSAGE_CREATE payload -> Message, or Skip with the reason.

    Args:
        is_thread: the message's channel is a thread (the sender remembers replying there).
        in_bot_thread: the message's channel is a thread the bot has replied in.
        commands: the bot's command names; a guild message starting with `!name` for one of
            them is answered without a mention.
    """
    author = obj(data.get("author"))
    if author.get("bot") or str(author.get("id")) == bot_id:
        return Skip("from a bot")
    if data.get("type", 0) not in (0, 19):  # DEFAULT and REPLY; joins, pins... are not asked
        return Skip(f"message type {data.get('type')}")
    channel, message_id = data.get("channel_id"), data.get("id")
    if not channel or not message_id:
        return Skip("no channel or id")
    guild = data.get("guild_id")
    mentioned = any(str(m.get("id")) == bot_id for m in objs(data.get("mentions")))
    text = strip_mention(str(data.get("content") or ""), bot_id)
    if guild and not mentioned and not in_bot_thread and not is_bang_command(text, commands):
        return Skip("guild message without a mention")
    if not text:
        return Skip("no text (is the MESSAGE_CONTENT intent enabled?)")
    meta = {"mode": "gateway", "in_thread": "1" if is_thread else ""}
    if data.get("member"):
        meta["roles"] = roles_of(data["member"])
    return Message(
        id=f"discord:message:{message_id}",
        conversation=Conversation(platform="discord", channel=str(channel),
                                  workspace=str(guild) if guild else None,
                                  reply_to=str(message_id)),
        user=str(author.get("id", "")), text=text, meta=meta)


def command_text(data: dict[str, Any]) -> str:
    """The question of a slash command: its string option values (sub-commands included)."""
    values: list[str] = []

    def walk(options: list[dict[str, Any]]) -> None:
        for option in options:
            if option.get("type") == STRING_OPTION and isinstance(option.get("value"), str):
                values.append(option["value"])
            walk(objs(option.get("options")))

    walk(objs(data.get("options")))
    return " ".join(v.strip() for v in values if v.strip())


def command_args(data: dict[str, Any]) -> dict[str, Any]:
    """{option name: value} of a command's options; sub-command (group) options are
    flattened into the same object (the sub-command's own name is not kept)."""
    args: dict[str, Any] = {}

    def walk(options: list[dict[str, Any]]) -> None:
        for option in options:
            if option.get("type") in (SUB_COMMAND, SUB_COMMAND_GROUP):
                walk(objs(option.get("options")))
            elif "name" in option and "value" in option:
                args[str(option["name"])] = option["value"]

    walk(objs(data.get("options")))
    return args


def _interaction_base(payload: dict[str, Any]) -> tuple[dict[str, str], Conversation, str] | Skip:
    """The meta, conversation and user id every stored interaction has."""
    interaction_id, token = payload.get("id"), payload.get("token")
    application_id, channel = payload.get("application_id"), payload.get("channel_id")
    if not (interaction_id and token and application_id and channel):
        return Skip("incomplete interaction")
    member = payload.get("member")
    user = obj(obj(member).get("user") or payload.get("user"))
    guild = payload.get("guild_id")
    meta = {"mode": "interaction", "application_id": str(application_id), "token": str(token)}
    if member:
        meta["roles"] = roles_of(member)
    return (meta, Conversation(platform="discord", channel=str(channel),
                               workspace=str(guild) if guild else None),
            str(user.get("id", "")))


def normalize_interaction(payload: dict[str, Any], commands: Collection[str] = ()
                          ) -> Message | Skip:
    """An APPLICATION_COMMAND interaction -> Message, or Skip.

    `meta`: "mode" = "interaction", "application_id", "token", "command" (data.name), "args"
    (JSON of `command_args`) and, in guilds, "roles". `text` is the string options joined;
    when there are none, a command in `commands` gets "/name key=value ..." and any other
    command is skipped ("command without a question").
    """
    if payload.get("type") != APPLICATION_COMMAND:
        return Skip(f"interaction type {payload.get('type')}")
    base = _interaction_base(payload)
    if isinstance(base, Skip):
        return base
    meta, conversation, user = base
    data = obj(payload.get("data"))
    name = str(data.get("name", ""))
    args = command_args(data)
    text = command_text(data)
    if not text and name in commands:
        text = " ".join([f"/{name}", *(f"{k}={v}" for k, v in args.items())])
    if not text:
        return Skip("command without a question")
    meta.update(command=name, args=json.dumps(args, ensure_ascii=False))
    return Message(id=f"discord:interaction:{payload['id']}", conversation=conversation,
                   user=user, text=text, meta=meta)


def _component_label(message: Any, custom_id: str) -> str | None:
    """The label of the component of `message` whose custom_id is `custom_id`, if any."""
    for row in objs(obj(message).get("components")):
        for component in objs(row.get("components")):
            if component.get("custom_id") == custom_id:
                return str(component.get("label") or "") or None
    return None


def normalize_component(payload: dict[str, Any]) -> Message | Skip:
    """A MESSAGE_COMPONENT interaction on one of the bot's buttons (`custom_id` `sb:<token>`)
    -> Message, or Skip for other components.

    `meta`: "mode" = "interaction", "application_id", "token", "button" (the token) and, in
    guilds, "roles"; text "(pressed <label>)" (the label read from the interaction's
    `message.components`). The reply edits the message that holds the button (the
    interaction's original response after a DEFERRED_UPDATE_MESSAGE).
    """
    if payload.get("type") != MESSAGE_COMPONENT:
        return Skip(f"interaction type {payload.get('type')}")
    custom_id = str(obj(payload.get("data")).get("custom_id") or "")
    if not custom_id.startswith(BUTTON_PREFIX) or custom_id == BUTTON_PREFIX:
        return Skip("not a press of a bot button")
    base = _interaction_base(payload)
    if isinstance(base, Skip):
        return base
    meta, conversation, user = base
    meta["button"] = custom_id[len(BUTTON_PREFIX):]
    label = _component_label(payload.get("message"), custom_id)
    return Message(id=f"discord:interaction:{payload['id']}", conversation=conversation,
                   user=user, text=f"(pressed {label})" if label else "(pressed a button)",
                   meta=meta)
