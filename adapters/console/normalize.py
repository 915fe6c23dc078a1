"""Console input -> `Message`."""

from __future__ import annotations

import getpass
import uuid

from bot.messages import Conversation, Message


def normalize(text: str, conversation: str, user: str | None = None) -> Message:
    """A console message; `conversation` names the memory it shares with earlier turns."""
    return Message(id=f"console:{uuid.uuid4().hex}",
                   conversation=Conversation(platform="console", channel=conversation),
                   user=user or _user(), text=text)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "console"
