"""`bot chat`: the conversation loop, its slash commands and its two ways of reading lines.

At a terminal, lines come from a prompt_toolkit line editor (history kept in a file, Up/Down
to recall, Tab to complete a slash command); Ctrl-C while an answer is awaited cancels the
wait, Ctrl-C or Ctrl-D at an empty prompt leaves at once. When stdin is not a terminal (a
pipe, a file), lines are read plainly, without prompts, by a daemon thread, so that leaving
never waits for more input.

Slash commands are handled here and never sent to the bot: /help, /reset (a new conversation
id, so memory starts empty), /quit and /exit (and the bare words exit, quit); an unknown one
gets a one-line hint. A line starting with // is sent with one slash removed.
"""

from __future__ import annotations

import asyncio
import codecs
import itertools
import os
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol, TextIO, TypeVar

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.input.typeahead import get_typeahead, store_typeahead
from prompt_toolkit.key_binding import KeyBindings, KeyPress, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.output import Output, create_output

from bot.messages import Reply, is_blank

_T = TypeVar("_T")

PROMPT = "you> "
COMMANDS = ("/help", "/reset", "/quit", "/exit")
HELP = """\
/help          this list
/reset         start a new conversation: the bot forgets what was said before
/quit, /exit   leave (Ctrl-D too, or Ctrl-C at an empty prompt)
//text         send "/text" to the bot
Ctrl-C while the bot is thinking stops waiting for that answer; Up and Down recall earlier
lines. The bot's own commands start with ! (try !help)."""

def new_conversation() -> str:
    """A fresh conversation id, `chat-` and 8 hex digits (its memory is empty)."""
    return f"chat-{uuid.uuid4().hex[:8]}"


class Cancelled(Exception):
    """The user pressed Ctrl-C while an answer was awaited."""


class Asker(Protocol):
    """What the loop asks: `Runtime.console` (adapters.console.adapter.ConsoleAdapter)."""

    async def ask(self, text: str, conversation: str, timeout_s: float) -> Reply | None:
        """The reply to `text` in `conversation`, or None after `timeout_s` seconds."""
        ...


class Lines(Protocol):
    """Where the loop's lines come from."""

    async def read_line(self) -> str:
        """The next line without its end. Raises EOFError at the end of input or on Ctrl-D,
        KeyboardInterrupt on Ctrl-C at an empty prompt: both mean leave."""
        ...

    async def wait(self, work: Awaitable[_T]) -> _T:
        """`work`'s result; raises Cancelled when the user interrupts the wait (then `work` is
        cancelled)."""
        ...


class ChatLoop:
    """Reads lines, answers slash commands, asks the bot the rest and prints its replies.

    `say` gets each reply as one string ("bot> ..."); `note` gets everything else (help,
    hints, "(cancelled)"): the CLI writes the first to stdout and the second to stderr.
    `conversation` is the current conversation id; /reset replaces it.
    """

    def __init__(self, console: Asker, conversation: str, *, say: Callable[[str], None],
                 note: Callable[[str], None], timeout_s: float = 120.0) -> None:
        self.conversation = conversation
        self._console = console
        self._say = say
        self._note = note
        self._timeout_s = timeout_s

    async def run(self, lines: Lines) -> None:
        """Until end of input, Ctrl-D, Ctrl-C at an empty prompt, /quit or /exit."""
        while True:
            try:
                line = await lines.read_line()
            except (EOFError, KeyboardInterrupt):
                return
            text = line.strip()
            if is_blank(text):
                continue
            if text.lower() in {"exit", "quit"}:
                return
            if text.startswith("//"):
                text = text[1:]
            elif text.startswith("/"):
                if not self._command(text):
                    return
                continue
            try:
                reply = await lines.wait(self._console.ask(text, self.conversation,
                                                           self._timeout_s))
            except Cancelled:
                self._note("(cancelled)")
                continue
            self._say("bot> " + (reply.render() if reply else
                                 f"(no answer within {self._timeout_s:g} s)"))
            for f in reply.filtered if reply else ():
                self._note(f"(removed from {f.uri}: {f.reason})")

    def _command(self, text: str) -> bool:
        """Handle a slash command; False means leave."""
        name = text.split()[0].lower()
        if name in {"/quit", "/exit"}:
            return False
        if name == "/help":
            self._note(HELP)
        elif name == "/reset":
            self.conversation = new_conversation()
            self._note(f"new conversation {self.conversation}: the bot remembers nothing "
                       "said before")
        else:
            self._note(f"unknown command {name}: /help lists them (//{name[1:]} sends it "
                       "to the bot)")
        return True


class _SlashCompleter(Completer):
    """Completes the chat's slash commands at the start of a line."""

    def get_completions(self, document: Document,
                        complete_event: CompleteEvent) -> Iterator[Completion]:
        typed = document.text_before_cursor
        if typed.startswith("/") and " " not in typed:
            for name in COMMANDS:
                if name.startswith(typed.lower()):
                    yield Completion(name, start_position=-len(typed))


def _history(path: Path | None) -> History:
    """A FileHistory at `path` (created owner-only: it holds the questions asked), or an
    in-memory one when `path` is None or cannot be created."""
    if path is None:
        return InMemoryHistory()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    except OSError:
        return InMemoryHistory()
    return FileHistory(path)


def prompt_session(history: Path | None = None, *, input: Input | None = None,
                   output: Output | None = None) -> PromptSession[str]:
    """The chat's line editor: history in the file `history` (None: kept in memory only),
    slash-command completion, and Ctrl-C that clears a typed line or, on an empty one, raises
    KeyboardInterrupt from `prompt_async`. `input`/`output` default to the terminal (the
    prompt goes to stderr when stdout is redirected)."""
    bindings = KeyBindings()

    @bindings.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        if event.current_buffer.text:
            event.current_buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

    return PromptSession(history=_history(history), key_bindings=bindings,
                         completer=_SlashCompleter(), complete_while_typing=True,
                         input=input, output=output or create_output(always_prefer_tty=True))


class TerminalLines:
    """Lines from a prompt_toolkit session. While an answer is awaited the terminal is kept in
    raw mode and its keys are watched: Ctrl-C cancels the wait, other keys are kept for the
    next prompt. With `status` (a terminal), a spinner shows there while waiting."""

    def __init__(self, session: PromptSession[str], status: TextIO | None = None) -> None:
        self._session = session
        self._status = status

    async def read_line(self) -> str:
        return await self._session.prompt_async(PROMPT)

    async def wait(self, work: Awaitable[_T]) -> _T:
        keys_in = self._session.input
        task = asyncio.ensure_future(work)
        interrupted = False

        def take(keys: list[KeyPress]) -> None:
            nonlocal interrupted
            kept = []
            for key in keys:
                if key.key == Keys.ControlC:
                    interrupted = True
                    task.cancel()
                else:
                    kept.append(key)
            store_typeahead(keys_in, kept)

        def readable() -> None:
            take(keys_in.read_keys())
            if keys_in.closed and not interrupted:  # the terminal is gone: the next read ends
                take([KeyPress(Keys.ControlC)])

        take(get_typeahead(keys_in))  # keys typed after Enter, read along with the line
        spinner = asyncio.create_task(self._spin(self._status)) if self._status else None
        try:
            with keys_in.raw_mode(), keys_in.attach(readable):
                return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if interrupted and (current is None or current.cancelling() == 0):
                raise Cancelled from None
            raise
        finally:
            if spinner is not None and self._status is not None:
                spinner.cancel()  # suspended in its sleep: it writes nothing more
                self._status.write("\r\x1b[K")
                self._status.flush()

    @staticmethod
    async def _spin(status: TextIO) -> None:
        """Until cancelled: a spinner, "thinking" and the seconds waited, every 0.1 s."""
        utf8 = (getattr(status, "encoding", None) or "").lower().replace("-", "") == "utf8"
        frames, dots = ("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏", "…") if utf8 else ("|/-\\", "...")
        loop = asyncio.get_running_loop()
        start = loop.time()
        for frame in itertools.cycle(frames):
            status.write(f"\r{frame} thinking{dots} {loop.time() - start:.0f} s "
                         "(Ctrl-C to stop waiting)")
            status.flush()
            await asyncio.sleep(0.1)


class PipedLines:
    """Lines from a file descriptor that is not a terminal (a pipe, a file, /dev/null),
    decoded with `encoding` (bad bytes replaced). A daemon thread reads it, so leaving never
    waits for input that may never come."""

    def __init__(self, fd: int = 0, encoding: str = "utf-8") -> None:
        self._fd = fd
        self._encoding = encoding
        self._queue: asyncio.Queue[str | None] | None = None

    async def read_line(self) -> str:
        if self._queue is None:
            self._queue = asyncio.Queue()
            threading.Thread(target=self._pump, args=(asyncio.get_running_loop(), self._queue),
                             name="chat-stdin", daemon=True).start()
        line = await self._queue.get()
        if line is None:
            self._queue.put_nowait(None)  # every later read ends too
            raise EOFError
        return line

    async def wait(self, work: Awaitable[_T]) -> _T:
        return await work

    def _pump(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
        decoder = codecs.getincrementaldecoder(self._encoding)(errors="replace")
        pending = ""

        def put(line: str | None) -> bool:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, line)
            except RuntimeError:  # the loop is closed: the chat has ended
                return False
            return True

        try:
            while chunk := os.read(self._fd, 65536):
                *lines, pending = (pending + decoder.decode(chunk)).split("\n")
                if not all(put(line.removesuffix("\r")) for line in lines):
                    return
            pending += decoder.decode(b"", final=True)
            if pending:
                put(pending.removesuffix("\r"))
        except OSError:
            pass
        put(None)


async def run_chat(console: Asker, conversation: str, history: Path | None,
                   timeout_s: float = 120.0) -> None:
    """`bot chat` on this process's stdin/stdout/stderr: the line editor when stdin is a
    terminal (history in the file `history`), plain lines otherwise. Replies go to stdout,
    everything else to stderr."""

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def note(text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    lines: Lines
    if sys.stdin.isatty():
        lines = TerminalLines(prompt_session(history),
                              status=sys.stderr if sys.stderr.isatty() else None)
        note(f"conversation {conversation}; /help for commands, Ctrl-D to leave")
    else:
        lines = PipedLines(sys.stdin.fileno(), sys.stdin.encoding or "utf-8")
        note(f"conversation {conversation}")
    await ChatLoop(console, conversation, say=say, note=note, timeout_s=timeout_s).run(lines)
