"""Slack payloads -> `Message`: pure functions, no I/O.

Which events are answered (https://docs.slack.dev/reference/events/app_mention,
https://docs.slack.dev/reference/events/message):
- `app_mention` in channels; the mention of the bot is removed from the text;
- `message` in a DM (`channel_type == "im"`);
- `message` in a channel thread the bot already takes part in (`message.channels`), so a
  follow-up in the thread needs no new mention;
- `message` anywhere whose text starts with `!name` for one of the bot's commands (only where
  Slack delivers such events: the app must subscribe to `message.channels`). The text is left
  as is; the engine parses `!name args` itself.
Never answered: the bot's own messages and other bots' (`bot_id`, `bot_profile`, or `user` ==
the bot user), edits and deletions (`message_changed`, `message_deleted`) and other subtypes
but `file_share` and `thread_broadcast`, and every other event type.

The message id is `slack:<team>:<channel>:<ts>`: stable across Slack's retries of the event,
and the same for the `app_mention` and the `message` event Slack sends for one message, so the
inbox answers it once. Replies go in the thread: `thread_ts = event.thread_ts or event.ts`; in a
DM a top-level message is answered top-level, and the DM is one conversation.

Slash commands (https://docs.slack.dev/interactivity/implementing-slash-commands) become
`meta["command"]` (the name without "/"), and `block_actions` presses of the bot's own buttons
(action_id `sb:<token>`,
https://docs.slack.dev/reference/interaction-payloads/block_actions-payload) become
`meta["button"]`; see `normalize_command` and `normalize_block_action`.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from adapters.payload import Skip, obj
from bot.messages import Conversation, Message

ANSWERED_SUBTYPES = {None, "file_share", "thread_broadcast"}
_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")
_BANG = re.compile(r"^!([A-Za-z0-9_]{1,32})(?=\s|$)")
#: action_id prefix of the buttons the bot sends (see send.py); the rest is the token.
BUTTON_PREFIX = "sb:"


@dataclass(frozen=True)
class SlackIdentity:
    """Who the bot is in the workspace (from `auth.test`)."""

    user_id: str
    bot_id: str | None = None



def strip_mention(text: str, bot_user_id: str) -> str:
    """Remove mentions of the bot (`<@U123>` or `<@U123|name>`) and tidy the spaces."""
    cleaned = _MENTION.sub(lambda m: "" if m.group(1) == bot_user_id else m.group(0), text)
    return " ".join(cleaned.split())


def is_bang_command(text: str, commands: Collection[str]) -> bool:
    """Whether `text` starts with `!name` (then a space or the end) for a name in `commands`."""
    match = _BANG.match(text)
    return match is not None and match.group(1).lower() in commands


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


def event_skip(envelope: Any) -> Skip | None:
    """The Skip of an `event_callback` envelope that can never be answered, decided without
    the bot's identity (so without calling `auth.test`); None when the envelope holds an
    `app_mention` or `message` event of an answered subtype, not from a bot by its `bot_id`
    or `bot_profile`, with string `user`, `channel` and `ts`. `normalize_event` starts with it.
    """
    event = envelope.get("event") if isinstance(envelope, dict) else None
    if not isinstance(event, dict):
        return Skip("no event")
    kind = event.get("type")
    if kind not in ("app_mention", "message"):
        return Skip(f"event type {kind}")
    subtype = event.get("subtype")
    if not (subtype is None or isinstance(subtype, str)) or subtype not in ANSWERED_SUBTYPES:
        return Skip(f"subtype {subtype}")
    if event.get("bot_id") or event.get("bot_profile"):
        return Skip("from a bot")
    if not all(isinstance(event.get(key), str) for key in ("user", "channel", "ts")):
        return Skip("no user, channel or ts")
    return None


def normalize_event(envelope: dict[str, Any], me: SlackIdentity, *,
                    in_bot_thread: bool = False,
                    commands: Collection[str] = ()) -> Message | Skip:
    """An `event_callback` envelope -> Message, or Skip with the reason.

    Args:
        in_bot_thread: the event's thread is one the bot has replied in.
        commands: the bot's command names; a channel message starting with `!name` for one
            of them is answered even outside the bot's threads.
    """
    skip = event_skip(envelope)
    if skip is not None:
        return skip
    event: dict[str, Any] = envelope["event"]
    kind = event["type"]
    if is_from_a_bot(event, me):
        return Skip("from a bot")
    user, channel, ts = str(event["user"]), str(event["channel"]), str(event["ts"])
    text = strip_mention(str(event.get("text") or ""), me.user_id)
    if kind == "message" and event.get("channel_type") != "im" and not (
            event.get("thread_ts") and in_bot_thread) and not is_bang_command(text, commands):
        return Skip("channel message outside the bot's threads")
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


def normalize_command(form: dict[str, str], commands: Collection[str] = ()
                      ) -> Message | Skip:
    """A slash command form (https://docs.slack.dev/interactivity/implementing-slash-commands)
    -> Message; the reply goes to the command's `response_url`. The id uses `trigger_id`,
    unique per invocation: `slack:<team>:command:<trigger_id>`.

    `meta["command"]` is the command's name without "/" ("create_ticket"), `text` its
    argument text. A command in `commands` is passed on even with no text (`/help`); any
    other command needs text (a question), else Skip("command without text").
    """
    text = (form.get("text") or "").strip()
    user, channel = form.get("user_id"), form.get("channel_id")
    trigger = form.get("trigger_id")
    if not (user and channel and trigger):
        return Skip("incomplete command")
    name = (form.get("command") or "").strip().lstrip("/").lower()
    if not text and name not in commands:
        return Skip("command without text")
    team = form.get("team_id") or "-"
    return Message(
        id=f"slack:{team}:command:{trigger}",
        conversation=Conversation(platform="slack", channel=channel, workspace=team),
        user=user, text=text,
        meta={"command": name, "response_url": form.get("response_url", "")})


def _pressed(actions: Any) -> dict[str, Any] | None:
    """The first action of the payload on one of the bot's buttons."""
    for action in actions if isinstance(actions, list) else []:
        if isinstance(action, dict) and str(action.get("action_id", "")).startswith(
                BUTTON_PREFIX) and len(str(action["action_id"])) > len(BUTTON_PREFIX):
            return action
    return None


def normalize_block_action(payload: Any) -> Message | Skip:
    """A `block_actions` interaction payload
    (https://docs.slack.dev/reference/interaction-payloads/block_actions-payload) -> Message,
    or Skip.

    Only presses of the bot's own buttons (action_id `sb:<token>`) are messages: id
    `slack:<team>:button:<trigger_id>`, text "(pressed <label>)", conversation: the channel
    and thread of the message that holds the button. `meta`: "button" (the token) and, when
    Slack gives one, "response_url" with "replace_original" = "1", so the answer replaces the
    message that held the button.
    """
    kind = payload.get("type") if isinstance(payload, dict) else None
    if kind != "block_actions":
        return Skip(f"interaction type {kind}")
    action = _pressed(payload.get("actions"))
    if action is None:
        return Skip("no press of a bot button")
    container = obj(payload.get("container"))
    message = obj(payload.get("message"))
    author = obj(payload.get("user"))
    user = author.get("id")
    channel = obj(payload.get("channel")).get("id") or container.get("channel_id")
    trigger = payload.get("trigger_id")
    if not (isinstance(user, str) and isinstance(channel, str) and trigger):
        return Skip("no user, channel or trigger_id")
    team = str(obj(payload.get("team")).get("id") or author.get("team_id") or "-")
    thread = message.get("thread_ts") or container.get("thread_ts")
    label = action.get("text", {}).get("text") if isinstance(action.get("text"), dict) else None
    meta = {"button": str(action["action_id"])[len(BUTTON_PREFIX):]}
    if payload.get("response_url"):
        meta.update(response_url=str(payload["response_url"]), replace_original="1")
    return Message(
        id=f"slack:{team}:button:{trigger}",
        conversation=Conversation(platform="slack", channel=channel, workspace=team,
                                  thread=str(thread) if thread else None),
        user=user, text=f"(pressed {label})" if label else "(pressed a button)", meta=meta)
