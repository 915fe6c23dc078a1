"""The narrow capabilities the engine receives from the composition root. Adapters, the
knowledge package and the engine meet only through these protocols and `bot.messages`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from bot.messages import Button, Message, Passage, Reply

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline as RedisPipeline


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
    `reply.draft`) instead of posting a new one."""

    async def post_draft(self, message: Message, text: str) -> str | None:
        """Post the first draft in reply to `message`; return a handle for later edits (the
        platform's message id), or None where this conversation cannot be edited."""
        ...

    async def edit_draft(self, message: Message, handle: str, text: str) -> None:
        """Replace the draft's text."""
        ...


@runtime_checkable
class GroupDirectory(Protocol):
    """Optional sender capability: whether a message's author belongs to a platform group,
    for action permissions. `group` is a Slack user group id ("S0SUPPORT"), Telegram's
    "admins" (the administrators of the message's chat), or a Discord role id."""

    async def in_group(self, message: Message, group: str) -> bool:
        """Raises on a failure to ask the platform (the caller then denies)."""
        ...


#: The type of a command's typed argument (Discord application command option types).
OptionKind = Literal["string", "integer", "number", "boolean"]


@dataclass(frozen=True, slots=True)
class CommandOption:
    """One typed argument of a command, for platforms that register commands with typed
    options (Discord application command options).

    Attributes:
        name: 1-32 lowercase characters.
        description: 1-100 characters.
        kind: "string", "integer", "number" or "boolean".
        required: whether the command needs it.
        choices: the allowed values, when the argument is an enumeration.
    """

    name: str
    description: str
    kind: OptionKind
    required: bool
    choices: tuple[str | int | float, ...] = ()


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command the bot offers, for the platforms' command menus (Telegram setMyCommands,
    Discord application commands).

    Attributes:
        name: 1-32 characters of lowercase letters, digits and "_".
        description: 1-100 characters.
        options: typed arguments, in order.
        usage: the argument syntax for text commands, e.g. "<title> [priority=low|high]".
    """

    name: str
    description: str
    options: tuple[CommandOption, ...] = ()
    usage: str = ""


#: Who said a remembered turn.
Role = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class Turn:
    """One remembered utterance."""

    role: Role
    content: str


class AfterSend(Protocol):
    """A Redis write that must follow a sent reply (the answered mark, the exchange in memory).
    The worker queues it on the transaction that acknowledges the message, so it costs no round
    trip of its own and lands together with the acknowledgement."""

    def queue(self, pipe: RedisPipeline) -> None:
        """Queue the write on `pipe` (one command)."""
        ...

    async def settle(self, reply: Any) -> None:
        """Handle the queued command's reply (the pipeline ran with `raise_on_error=False`):
        redo the write on its own where the reply says the server lacked a script; raise the
        reply when it is another error."""
        ...

    async def run(self) -> None:
        """Do the write on its own (where no transaction takes it)."""
        ...


class Memory(Protocol):
    """The hot window of a conversation's turns."""

    async def load(self, conversation_key: str) -> list[Turn]:
        """Return the remembered turns, oldest first."""
        ...

    async def append(self, conversation_key: str, turns: list[Turn], once_id: str = "") -> None:
        """Remember `turns` after the existing ones, trimming the oldest past the limit; an
        append repeated with the same non-empty `once_id` changes nothing."""
        ...

    async def forget(self, conversation_key: str) -> None:
        """Drop every remembered turn of the conversation."""
        ...

    def append_after_send(self, conversation_key: str, turns: list[Turn],
                          once_id: str) -> AfterSend | None:
        """`append` as a write to queue after the reply went out (see `AfterSend`); None
        when there is nothing to write."""
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
    buttons: tuple[Button, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """The result of one tool call: `content` for the model, `buttons` for the reply (a
    confirmation the user must press)."""

    content: str
    buttons: tuple[Button, ...] = ()


class Toolbox(Protocol):
    """The tools a model may call while answering one message (the actions its author may
    run), as OpenAI function-tool schemas."""

    def schemas(self) -> list[dict[str, Any]]:
        """`[{"type": "function", "function": {"name", "description", "parameters"}}]`."""
        ...

    async def call(self, name: str, arguments: str, call_index: int) -> ToolOutput:
        """Run tool `name` with `arguments` (a JSON object as text, as the model wrote it);
        `call_index` counts the calls made for this message from 0. Never raises for a bad
        call: the output says what went wrong."""
        ...


class Generator(Protocol):
    """Writes the answer from the question, the remembered turns and the retrieved passages."""

    async def generate(self, question: str, history: list[Turn], passages: list[Passage],
                       on_delta: Callable[[str], Awaitable[None]] | None = None,
                       tools: Toolbox | None = None) -> Generated:
        """`on_delta`, when given, is awaited with the answer so far as it streams in;
        `tools`, when given, may be called by the model before it answers."""
        ...


class IngestCounts(Protocol):
    """What one ingestion changed, in chunks."""

    chunks_added: int
    chunks_unchanged: int
    chunks_removed: int


class DocumentUploads(Protocol):
    """Ingests a document given as bytes (the admin console's uploads)."""

    async def ingest_upload(self, data: bytes, uri: str, filename: str,
                            content_type: str | None) -> IngestCounts:
        """Store `data` as the document `uri` (a known uri: a new version of it), its type
        from `content_type` or the suffix of `filename`.

        Raises:
            KnowledgeError: too large, of an unsupported type, or unreadable as that type.
        """
        ...


class DocumentForgetter(Protocol):
    """Soft-deletes documents."""

    async def forget(self, uri: str) -> bool:
        """Forget the live document `uri`; False when there is none."""
        ...
