"""The narrow capabilities the engine receives from the composition root. Adapters, the
knowledge package and the engine meet only through these protocols and `bot.messages`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bot.messages import Message, Passage, Reply


class Retriever(Protocol):
    """Finds the passages most relevant to a query."""

    async def retrieve(self, query: str, top_k: int) -> list[Passage]:
        """Return at most `top_k` passages, best first. Raises nothing for an empty store."""
        ...


class Sender(Protocol):
    """Delivers a reply to the platform it belongs to."""

    async def send(self, reply: Reply) -> None:
        """Send `reply` on `reply.conversation`. Raises on a failure worth retrying."""
        ...


@runtime_checkable
class TypingIndicator(Protocol):
    """Optional sender capability: show a typing/"thinking" state while the engine works."""

    async def typing(self, message: Message) -> None: ...


@runtime_checkable
class DraftEditor(Protocol):
    """Optional sender capability: show an answer while it streams in, as one message edited
    in place. `send` then finishes that message (its first piece edits the draft named by
    `reply.meta["draft"]`) instead of posting a new one."""

    async def post_draft(self, message: Message, text: str) -> str | None:
        """Post the first draft in reply to `message`; return a handle for later edits (the
        platform's message id), or None where this conversation cannot be edited."""
        ...

    async def edit_draft(self, message: Message, handle: str, text: str) -> None:
        """Replace the draft's text."""
        ...


@dataclass(frozen=True, slots=True)
class Turn:
    """One remembered utterance; role is "user" or "assistant"."""

    role: str
    content: str


class Memory(Protocol):
    """The hot window of a conversation's turns."""

    async def load(self, conversation_key: str) -> list[Turn]:
        """Return the remembered turns, oldest first."""
        ...

    async def append(self, conversation_key: str, turns: list[Turn], once_id: str = "") -> None:
        """Remember `turns` after the existing ones, trimming the oldest past the limit; an
        append repeated with the same non-empty `once_id` changes nothing."""
        ...


@dataclass(frozen=True, slots=True)
class Generated:
    """A generated answer with its token counts (0 where the generator does not report them).
    `error` and `trace_id` are set when no model answered and `text` is an apology."""

    text: str
    model: str
    tokens_in: int = 0
    tokens_out: int = 0
    error: str = ""
    trace_id: str = ""


class Generator(Protocol):
    """Writes the answer from the question, the remembered turns and the retrieved passages."""

    async def generate(self, question: str, history: list[Turn], passages: list[Passage],
                       on_delta: Callable[[str], Awaitable[None]] | None = None
                       ) -> Generated:
        """`on_delta`, when given, is awaited with the answer so far as it streams in."""
        ...
