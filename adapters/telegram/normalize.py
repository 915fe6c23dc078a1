"""Telegram updates -> `Message`: pure functions over the raw update dicts.

Raw dicts, not PTB's `Update.de_json`, because real updates (and the samples in Telegram's own
webhook guide, https://core.telegram.org/bots/webhooks#testing-your-bot-with-updates) may lack
fields PTB requires (https://core.telegram.org/bots/api#update); an update we cannot use is
acknowledged and skipped, never refused.

Answered (https://core.telegram.org/bots/features#privacy-mode): every text message in a
private chat; in groups, a command addressed to the bot (`/cmd` or `/cmd@thisbot`;
`/cmd@otherbot` is ignored), a message that mentions `@thisbot`, a reply to one of the bot's
messages (with privacy mode on, these are what a group bot receives anyway), and a message
starting with `!name` for one of the bot's commands (left as is: the engine parses it). Not
answered: edits (`edited_message`), channel posts, messages from bots, bare unknown commands
without a question, and every other update kind.

A command the bot offers (`commands`), and `/start`, becomes `meta["command"]` (the name,
lowercased) with the argument text as `text`, possibly ""; any other command is a question (the
text after it). A `callback_query` on one of the bot's buttons (`callback_data` `sb:<token>`)
becomes `meta["button"]` (`normalize_callback`).

The message id is `telegram:<bot id>:<update_id>`; replies go to the same chat, the same forum
topic (`message_thread_id`) and quote the message (`reply_parameters`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from adapters.payload import Skip, obj, objs
from bot.messages import Conversation, Message

GROUP_TYPES = {"group", "supergroup"}
_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]{3,64}))?(?:\s+|$)")
_BANG = re.compile(r"^!([A-Za-z0-9_]{1,32})(?=\s|$)")
#: callback_data prefix of the bot's buttons (see send.py); the rest is the token.
BUTTON_PREFIX = "sb:"
#: commands passed on even when not among the bot's commands (the engine maps it to help).
ALWAYS_COMMANDS = frozenset({"start"})


@dataclass(frozen=True)
class TelegramIdentity:
    """The bot, from getMe."""

    id: int
    username: str



def _utf16_slice(text: str, offset: int, length: int) -> str:
    """Entity offsets and lengths count UTF-16 code units
    (https://core.telegram.org/bots/api#messageentity)."""
    encoded = text.encode("utf-16-le")
    return encoded[2 * offset: 2 * (offset + length)].decode("utf-16-le", errors="replace")


def _remove_mentions(text: str, entities: list[dict[str, Any]], username: str) -> tuple[str, bool]:
    """Text without `@username` mentions of the bot, and whether there was one."""
    mentioned = False
    cleaned = text
    for entity in entities:
        offset, length = entity.get("offset"), entity.get("length")
        if entity.get("type") != "mention" or not isinstance(offset, int) or \
                not isinstance(length, int):
            continue
        word = _utf16_slice(text, offset, length)
        if word.lower() == f"@{username.lower()}":
            mentioned = True
            cleaned = cleaned.replace(word, " ")
    return " ".join(cleaned.split()), mentioned


def is_bang_command(text: str, commands: Collection[str]) -> bool:
    """Whether `text` starts with `!name` (then a space or the end) for a name in `commands`."""
    match = _BANG.match(text)
    return match is not None and match.group(1).lower() in commands


def message_skip(update: Any) -> Skip | None:
    """The Skip of an update that is no answerable `message`, decided without the bot's
    identity (so without calling getMe); None for a `message` update with an int `update_id`,
    int chat and message ids, a sender that is not a bot, non-blank text (or caption) and a
    private, group or supergroup chat. `normalize_update` starts with it."""
    if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
        return Skip("no update_id")
    if "message" not in update:
        kinds = sorted(str(k) for k in update if k != "update_id")
        return Skip(f"update kind {kinds[0] if kinds else 'none'}")
    msg = update["message"]
    if not isinstance(msg, dict):
        return Skip("malformed message")
    chat = obj(msg.get("chat"))
    if not isinstance(chat.get("id"), int) or not isinstance(msg.get("message_id"), int):
        return Skip("no chat or message id")
    if obj(msg.get("from")).get("is_bot"):
        return Skip("from a bot")
    text = msg.get("text") or msg.get("caption") or ""
    if not isinstance(text, str) or not text.strip():
        return Skip("no text")
    chat_type = chat.get("type")
    if not isinstance(chat_type, str):
        return Skip("no chat type")
    if chat_type not in GROUP_TYPES and chat_type != "private":
        return Skip(f"chat type {chat_type}")
    return None


def update_skip(update: Any) -> Skip | None:
    """`callback_skip` for a `callback_query` update, else `message_skip`: whether an update
    can be dropped before the bot's identity is known."""
    if isinstance(update, dict) and "callback_query" in update:
        return callback_skip(update)
    return message_skip(update)


def normalize_update(update: Any, me: TelegramIdentity,
                     commands: Collection[str] = ()) -> Message | Skip:
    """One `message` update -> Message, or Skip with the reason.

    Args:
        commands: the names of the bot's commands (`/name` of one of them is passed on even
            without text, with `meta["command"]`; `!name` of one of them addresses the bot).
    """
    skip = message_skip(update)
    if skip is not None:
        return skip
    msg: dict[str, Any] = update["message"]
    chat = obj(msg.get("chat"))
    sender = obj(msg.get("from"))
    chat_id: int = chat["id"]
    message_id: int = msg["message_id"]
    if sender.get("id") == me.id:
        return Skip("from a bot")
    text: str = msg.get("text") or msg["caption"]
    entities = objs(msg.get("entities") or msg.get("caption_entities"))
    chat_type: str = chat["type"]
    command = _COMMAND.match(text)
    addressed = chat_type == "private"
    name = ""
    if command:
        target = command.group(2)
        if target and target.lower() != me.username.lower():
            return Skip("command for another bot")
        text = text[command.end():]
        addressed = True
        if command.group(1).lower() in commands or command.group(1).lower() in ALWAYS_COMMANDS:
            name = command.group(1).lower()
    text, mentioned = _remove_mentions(text, entities if not command else [], me.username)
    if chat_type in GROUP_TYPES:
        replied = obj(obj(msg.get("reply_to_message")).get("from")).get("id") == me.id
        addressed = addressed or mentioned or replied or is_bang_command(text, commands)
    if not addressed:
        return Skip("group message not addressed to the bot")
    if not text and not name:
        return Skip("command without a question")
    meta = {"chat_type": str(chat_type)}
    if name:
        meta["command"] = name
    return Message(
        id=f"telegram:{me.id}:{update['update_id']}",
        conversation=_conversation(msg, chat_id, message_id),
        user=str(sender.get("id", "")), text=text, meta=meta)


def _conversation(msg: dict[str, Any], chat_id: int, message_id: int) -> Conversation:
    """The reply address: the chat, the forum topic, quoting `message_id`."""
    thread = msg.get("message_thread_id") if msg.get("is_topic_message") else None
    return Conversation(platform="telegram", channel=str(chat_id),
                        thread=str(thread) if thread is not None else None,
                        reply_to=str(message_id))


def _button_label(msg: dict[str, Any], data: str) -> str | None:
    """The text of the inline keyboard button of `msg` that carries `data`, if any."""
    keyboard = obj(msg.get("reply_markup")).get("inline_keyboard")
    for row in keyboard if isinstance(keyboard, list) else []:
        for button in row if isinstance(row, list) else []:
            if isinstance(button, dict) and button.get("callback_data") == data:
                return str(button.get("text") or "") or None
    return None


def callback_skip(update: Any) -> Skip | None:
    """The Skip of an update that is no press of one of the bot's buttons, decided without
    the bot's identity; None for a `callback_query` with `callback_data` `sb:<token>` on a
    message with int chat and message ids, pressed by a user who is not a bot.
    `normalize_callback` starts with it."""
    if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
        return Skip("no update_id")
    query = update.get("callback_query")
    if not isinstance(query, dict):
        return Skip("no callback_query")
    data = query.get("data")
    if not isinstance(data, str) or not data.startswith(BUTTON_PREFIX) or data == BUTTON_PREFIX:
        return Skip("not a press of a bot button")
    msg = query.get("message")
    sender = obj(query.get("from"))
    if not isinstance(msg, dict):
        return Skip("button on an inline message")
    chat = obj(msg.get("chat"))
    if not isinstance(chat.get("id"), int) or not isinstance(msg.get("message_id"), int) \
            or not sender.get("id"):
        return Skip("no chat, message or user id")
    if sender.get("is_bot"):
        return Skip("from a bot")
    return None


def normalize_callback(update: Any, me: TelegramIdentity) -> Message | Skip:
    """A `callback_query` update on one of the bot's buttons (`callback_data` `sb:<token>`,
    https://core.telegram.org/bots/api#callbackquery) -> Message, or Skip.

    Id `telegram:<bot id>:<update_id>`; text "(pressed <label>)" (the label read from the
    message's inline keyboard); the conversation is the chat and topic of the message that
    holds the button, quoting it. `meta`: "button" (the token), "chat_type" and
    "button_message" (that message's id, whose keyboard the sender removes). Presses on
    inline-mode messages (no `message`) are skipped.
    """
    skip = callback_skip(update)
    if skip is not None:
        return skip
    query: dict[str, Any] = update["callback_query"]
    data: str = query["data"]
    msg: dict[str, Any] = query["message"]
    sender = obj(query.get("from"))
    chat = obj(msg.get("chat"))
    chat_id: int = chat["id"]
    message_id: int = msg["message_id"]
    label = _button_label(msg, data)
    return Message(
        id=f"telegram:{me.id}:{update['update_id']}",
        conversation=_conversation(msg, chat_id, message_id),
        user=str(sender["id"]), text=f"(pressed {label})" if label else "(pressed a button)",
        meta={"button": data[len(BUTTON_PREFIX):], "chat_type": str(chat.get("type")),
              "button_message": str(message_id)})
