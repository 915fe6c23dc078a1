"""Telegram updates -> `Message`: pure functions over the raw update dicts.

Raw dicts, not PTB's `Update.de_json`, because real updates (and the samples in Telegram's own
webhook guide) may lack fields PTB requires (PROTOCOLS.md 2.1); an update we cannot use is
acknowledged and skipped, never refused.

Answered (PROTOCOLS.md 2.4): every text message in a private chat; in groups, a command
addressed to the bot (`/cmd` or `/cmd@thisbot`; `/cmd@otherbot` is ignored), a message that
mentions `@thisbot`, and a reply to one of the bot's messages (with privacy mode on, these are
what a group bot receives anyway). Not answered: edits (`edited_message`), channel posts,
messages from bots, bare commands without a question, and every other update kind.

The message id is `telegram:<bot id>:<update_id>`; replies go to the same chat, the same forum
topic (`message_thread_id`) and quote the message (`reply_parameters`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.messages import Conversation, Message

GROUP_TYPES = {"group", "supergroup"}
_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@([A-Za-z0-9_]{3,64}))?(?:\s+|$)")


@dataclass(frozen=True)
class TelegramIdentity:
    """The bot, from getMe."""

    id: int
    username: str


@dataclass(frozen=True)
class Skip:
    reason: str


def _utf16_slice(text: str, offset: int, length: int) -> str:
    """Entity offsets and lengths count UTF-16 code units (PROTOCOLS.md 2.4)."""
    encoded = text.encode("utf-16-le")
    return encoded[2 * offset: 2 * (offset + length)].decode("utf-16-le", errors="replace")


def _remove_mentions(text: str, entities: list[dict[str, Any]], username: str) -> tuple[str, bool]:
    """Text without `@username` mentions of the bot, and whether there was one."""
    mentioned = False
    cleaned = text
    for entity in entities:
        if entity.get("type") != "mention":
            continue
        word = _utf16_slice(text, int(entity.get("offset", 0)), int(entity.get("length", 0)))
        if word.lower() == f"@{username.lower()}":
            mentioned = True
            cleaned = cleaned.replace(word, " ")
    return " ".join(cleaned.split()), mentioned


def normalize_update(update: Any, me: TelegramIdentity) -> Message | Skip:
    """One update -> Message, or Skip with the reason."""
    if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
        return Skip("no update_id")
    if "message" not in update:
        kinds = sorted(k for k in update if k != "update_id")
        return Skip(f"update kind {kinds[0] if kinds else 'none'}")
    msg = update["message"]
    if not isinstance(msg, dict):
        return Skip("malformed message")
    chat = msg.get("chat") or {}
    sender = msg.get("from") or {}
    chat_id, message_id = chat.get("id"), msg.get("message_id")
    if not isinstance(chat_id, int) or not isinstance(message_id, int):
        return Skip("no chat or message id")
    if sender.get("is_bot") or sender.get("id") == me.id:
        return Skip("from a bot")
    text = msg.get("text") or msg.get("caption") or ""
    entities = msg.get("entities") or msg.get("caption_entities") or []
    if not isinstance(text, str) or not text.strip():
        return Skip("no text")
    chat_type = chat.get("type")
    command = _COMMAND.match(text)
    addressed = chat_type == "private"
    if command:
        target = command.group(2)
        if target and target.lower() != me.username.lower():
            return Skip("command for another bot")
        text = text[command.end():]
        addressed = True
    text, mentioned = _remove_mentions(text, entities if not command else [], me.username)
    if chat_type in GROUP_TYPES:
        replied = ((msg.get("reply_to_message") or {}).get("from") or {}).get("id") == me.id
        addressed = addressed or mentioned or replied
    elif chat_type != "private":
        return Skip(f"chat type {chat_type}")
    if not addressed:
        return Skip("group message not addressed to the bot")
    if not text:
        return Skip("command without a question")
    thread = msg.get("message_thread_id") if msg.get("is_topic_message") else None
    return Message(
        id=f"telegram:{me.id}:{update['update_id']}",
        conversation=Conversation(platform="telegram", channel=str(chat_id),
                                  thread=str(thread) if thread is not None else None,
                                  reply_to=str(message_id)),
        user=str(sender.get("id", "")), text=text,
        meta={"chat_type": str(chat_type)})
