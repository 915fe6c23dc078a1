"""The engine's value types: `Conversation` (the reply address), `Message` (one normalized
inbound message), `Passage` (one retrieved chunk), `Source`, `Filtered`, `Button` and `Reply`.

Adapters build `Message`s at the edge; the engine never sees a platform payload. Messages cross
process boundaries through the Redis inbox as JSON (`to_json` / `from_json`).
"""

from __future__ import annotations

import functools
import json
import time
import unicodedata
from dataclasses import dataclass, field, fields
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Conversation:
    """Where a message came from and where its reply goes.

    Attributes:
        platform: adapter name: "console", "webhook", "slack", "telegram", "discord".
        channel: the channel, chat or conversation id within the workspace.
        workspace: Slack team, Discord guild, webhook name; None where the platform has none.
        thread: thread id (Slack thread_ts, Telegram message_thread_id); None outside threads.
        reply_to: the platform's id of the message to reply to, if replies quote it.
    """

    platform: str
    channel: str
    workspace: str | None = None
    thread: str | None = None
    reply_to: str | None = None

    @property
    def key(self) -> str:
        """Stable id of the conversation (memory and transcript key); excludes `reply_to`."""
        return ":".join([self.platform, self.workspace or "-", self.channel, self.thread or "-"])


@dataclass(frozen=True, slots=True)
class Message:
    """One inbound message, normalized.

    Attributes:
        id: globally unique, stable across platform retries: "<platform>:<scope>:<event id>".
            It is the dedupe key.
        conversation: the reply address.
        user: the platform's user id of the author.
        text: the message text, as the user wrote it (mentions of the bot removed).
        received_at: when ingress accepted it, Unix time in seconds.
        meta: small adapter-specific strings the sender needs. No long-lived secrets, but
            some are short-lived credentials scoped to this message (a Slack `response_url`,
            valid 30 minutes; a Discord interaction `token`, 15 minutes): they live in the
            inbox and the answer cache, and are never logged. Keys the engine reads, all
            optional, set by adapters:
            - "command": the name of a platform command addressed to the bot, without the
              slash ("create_ticket" for Slack's `/create_ticket`, Telegram's
              `/create_ticket@bot`, a Discord application command); `text` is then its
              argument text, possibly "".
            - "args": a JSON object of the command's typed options (Discord).
            - "button": the token of a pressed `Button`; `text` is then a short note for the
              transcript ("(pressed Confirm)").
            - "roles": comma-separated platform role ids of the author (Discord member roles).
        rate_checked: the HTTP ingress already took this message's inbound rate-limit tokens
            (`InboundLimiter.check_inbound`), so the pipeline's rate-limit stage does not ask
            Redis again (it would find the message let through).
    """

    id: str
    conversation: Conversation
    user: str
    text: str
    received_at: float = field(default_factory=time.time)
    meta: dict[str, str] = field(default_factory=dict)
    rate_checked: bool = False

    def to_json(self) -> str:
        return json.dumps(jsonable(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Message:
        """Fields this version does not know are ignored (an entry written by a newer process
        during a rolling upgrade still parses).

        Raises: ValueError (or KeyError/TypeError) for a payload that is not a Message."""
        data: dict[str, Any] = json.loads(raw)
        data["conversation"] = Conversation(**data["conversation"])
        return cls(**{k: v for k, v in data.items() if k in _MESSAGE_FIELDS})


_MESSAGE_FIELDS = frozenset(f.name for f in fields(Message))


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved chunk with its document's identity.

    Attributes:
        text: the chunk text.
        uri: the document's source (absolute file path or http(s) URL).
        title: the document's title.
        section: the heading path of the chunk's section ("Install > Linux"), or "".
        page: 1-based page number for paged formats (PDF), else None.
        score: relevance, higher is better; cosine similarity in [-1, 1] in dense mode, a
            full-text rank in lexical mode, a fused reciprocal-rank score in hybrid mode.
    """

    text: str
    uri: str
    title: str
    section: str
    page: int | None
    score: float
    chunk_id: int = 0
    document_id: int = 0


@dataclass(frozen=True, slots=True)
class Source:
    """A document cited by a reply; numbered in order of first appearance from 1."""

    uri: str
    title: str
    score: float
    section: str = ""
    page: int | None = None


@dataclass(frozen=True, slots=True)
class Filtered:
    """Retrieved text that a passage rail kept from the model (cut from a passage, or the
    whole passage dropped); never silent: on the reply, in the transcript, in `bot ask`.

    Attributes:
        uri: the document the passage came from.
        reason: what was removed and why ("prompt injection: 1 of 7 units removed
            (sentence)"); never the removed text.
        score: the rail's highest score in the passage, in [0, 1].
        removed_chars: characters removed (the passage's length when it was dropped).
    """

    uri: str
    reason: str
    score: float
    removed_chars: int


#: How a button looks: the platform's primary or danger look, or "" for its default.
ButtonStyle = Literal["primary", "danger", ""]


@dataclass(frozen=True, slots=True)
class Button:
    """A button under a reply (Slack block action, Telegram inline keyboard button, Discord
    button component). Pressing it sends the engine a `Message` whose `meta["button"]` is
    `token`.

    Attributes:
        label: the button's text, at most 75 characters (Slack's limit; Discord allows 80).
        token: what a press carries back, 1-40 characters of [A-Za-z0-9_-]; adapters send it
            as `sb:<token>` (Telegram callback_data <= 64 bytes, Discord custom_id <= 100).
        style: "primary", "danger" or "" (the platform's default look).
    """

    label: str
    token: str
    style: ButtonStyle = ""


#: `Reply.meta` key marking a notice about a message (that it was given up on, with the reason
#: as value) rather than its answer; senders that keep answers for repeats do not keep it.
NOTICE_META = "notice"


@dataclass(frozen=True, slots=True)
class Reply:
    """What the engine sends back for one message.

    Attributes:
        message_id: id of the message answered (also the send idempotency key).
        conversation: the address to send it to (copied from the message).
        text: the answer body (Markdown), without the sources list.
        sources: the cited documents, best first.
        meta: the inbound message's `meta`, for the sender (adapter-specific strings).
        buttons: buttons shown under the reply's last piece, in order.
        filtered: what the passage rails removed from the passages the answer was written
            from (not rendered on chat platforms; `bot ask` shows it).
        ephemeral: for the author alone where the platform has such replies (a Slack
            ephemeral response, a Discord ephemeral follow-up); elsewhere a normal reply that
            leaves a pressed message's buttons in place (they may be someone else's).
        draft: the platform's id of a message already showing this answer as it was
            streamed (`DraftEditor`): the sender finishes that message instead of posting.
    """

    message_id: str
    conversation: Conversation
    text: str
    sources: tuple[Source, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)
    buttons: tuple[Button, ...] = ()
    filtered: tuple[Filtered, ...] = ()
    ephemeral: bool = False
    draft: str | None = None

    def render(self) -> str:
        """Text plus a numbered sources list, as chat platforms show it."""
        if not self.sources:
            return self.text
        lines = [self.text, "", "Sources:"]
        for n, src in enumerate(self.sources, 1):
            where = f" ({src.section})" if src.section else ""
            lines.append(f"[{n}] {src.title}{where} <{src.uri}>")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(jsonable(self), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Reply:
        data: dict[str, Any] = json.loads(raw)
        data["conversation"] = Conversation(**data["conversation"])
        data["sources"] = tuple(Source(**s) for s in data["sources"])
        data["buttons"] = tuple(Button(**b) for b in data.get("buttons", ()))
        data["filtered"] = tuple(Filtered(**f) for f in data.get("filtered", ()))
        meta = data.get("meta") or {}  # a reply kept by a version that had these in meta
        if meta.get("ephemeral") == "1":
            data["ephemeral"] = True
        if "draft" not in data and meta.get("draft"):
            data["draft"] = meta["draft"]
        data["meta"] = {k: v for k, v in meta.items() if k not in ("ephemeral", "draft")}
        return cls(**{k: v for k, v in data.items() if k in _REPLY_FIELDS})


_REPLY_FIELDS = frozenset(f.name for f in fields(Reply))


# Letters and marks that draw nothing: Hangul fillers, the braille blank, the combining
# grapheme joiner; variation selectors are checked by range in `is_blank`.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f")
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def is_blank(text: str) -> bool:
    """True when `text` shows nothing: empty, or only whitespace, control characters, format
    characters (zero-width spaces and joiners, bidi marks, embeddings and isolates, BOM, tag
    characters), fillers and variation selectors."""
    return all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE_CATEGORIES
               or ch in _INVISIBLE or "\ufe00" <= ch <= "\ufe0f"
               or "\U000e0100" <= ch <= "\U000e01ef" for ch in text)


def jsonable(value: Any) -> Any:
    """`dataclasses.asdict` for JSON: dataclasses become dicts (field order), tuples lists,
    recursively; other values are left as they are. Half the CPU of `asdict`, which deep-copies
    every leaf (a reply is serialized several times on a message's path)."""
    cls: type = type(value)
    if hasattr(cls, "__dataclass_fields__"):
        return {name: jsonable(getattr(value, name)) for name in _field_names(cls)}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))
