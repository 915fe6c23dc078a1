"""Slack payloads -> `Message`: pure functions, no I/O.

Which events are answered (PROTOCOLS.md 1.1):
- `app_mention` in channels; the mention of the bot is removed from the text;
- `message` in a DM (`channel_type == "im"`);
- `message` in a channel thread the bot already takes part in (`message.channels`), so a
  follow-up in the thread needs no new mention.
Never answered: the bot's own messages and other bots' (`bot_id`, `bot_profile`, or `user` ==
the bot user), edits and deletions (`message_changed`, `message_deleted`) and other subtypes
but `file_share` and `thread_broadcast`, and every other event type.

The message id is `slack:<team>:<channel>:<ts>`: stable across Slack's retries of the event,
and the same for the `app_mention` and the `message` event Slack sends for one message, so the
inbox answers it once. Replies go in the thread: `thread_ts = event.thread_ts or event.ts`; in a
DM a top-level message is answered top-level, and the DM is one conversation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.messages import Conversation, Message

ANSWERED_SUBTYPES = {None, "file_share", "thread_broadcast"}
_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")


@dataclass(frozen=True)
class SlackIdentity:
    """Who the bot is in the workspace (from `auth.test`)."""

    user_id: str
    bot_id: str | None = None


@dataclass(frozen=True)
class Skip:
    """A verified payload that is deliberately not answered, and why (for the debug log)."""

    reason: str


def strip_mention(text: str, bot_user_id: str) -> str:
    """Remove mentions of the bot (`<@U123>` or `<@U123|name>`) and tidy the spaces."""
    cleaned = _MENTION.sub(lambda m: "" if m.group(1) == bot_user_id else m.group(0), text)
    return " ".join(cleaned.split())


def is_from_a_bot(event: dict[str, Any], me: SlackIdentity) -> bool:
    return bool(event.get("bot_id") or event.get("bot_profile")
                or event.get("user") == me.user_id or event.get("subtype") == "bot_message")


def thread_of(event: dict[str, Any]) -> str | None:
    """The thread a reply to this event goes in (None: top-level in a DM)."""
    thread_ts = event.get("thread_ts")
    if thread_ts:
        return str(thread_ts)
    if event.get("channel_type") == "im":
        return None
    return str(event["ts"])


def normalize_event(envelope: dict[str, Any], me: SlackIdentity, *,
                    in_bot_thread: bool = False) -> Message | Skip:
    """An `event_callback` envelope -> Message, or Skip with the reason.

    Args:
        in_bot_thread: the event's thread is one the bot has replied in.
    """
    event = envelope.get("event")
    if not isinstance(event, dict):
        return Skip("no event")
    kind = event.get("type")
    if kind not in ("app_mention", "message"):
        return Skip(f"event type {kind}")
    if event.get("subtype") not in ANSWERED_SUBTYPES:
        return Skip(f"subtype {event.get('subtype')}")
    if is_from_a_bot(event, me):
        return Skip("from a bot")
    user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
    if not (isinstance(user, str) and isinstance(channel, str) and isinstance(ts, str)):
        return Skip("no user, channel or ts")
    if kind == "message" and event.get("channel_type") != "im" and not (
            event.get("thread_ts") and in_bot_thread):
        return Skip("channel message outside the bot's threads")
    text = strip_mention(str(event.get("text") or ""), me.user_id)
    if not text:
        return Skip("empty text")
    team = str(envelope.get("team_id") or event.get("team") or "-")
    return Message(
        id=f"slack:{team}:{channel}:{ts}",
        conversation=Conversation(platform="slack", channel=channel, workspace=team,
                                  thread=thread_of(event), reply_to=ts),
        user=user, text=text,
        meta={"event_id": str(envelope.get("event_id", "")),
              "channel_type": str(event.get("channel_type", ""))})


def normalize_command(form: dict[str, str]) -> Message | Skip:
    """A slash command form -> Message; the reply goes to the command's `response_url`.
    The id uses `trigger_id`, unique per invocation."""
    text = (form.get("text") or "").strip()
    user, channel = form.get("user_id"), form.get("channel_id")
    trigger = form.get("trigger_id")
    if not (user and channel and trigger):
        return Skip("incomplete command")
    if not text:
        return Skip("command without text")
    team = form.get("team_id") or "-"
    return Message(
        id=f"slack:{team}:command:{trigger}",
        conversation=Conversation(platform="slack", channel=channel, workspace=team),
        user=user, text=text,
        meta={"command": form.get("command", ""), "response_url": form.get("response_url", "")})
