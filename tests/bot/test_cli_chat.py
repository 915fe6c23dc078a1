"""`bot chat`'s loop driven through prompt_toolkit's pipe input, as keys typed at a terminal:
slash commands, Ctrl-C / Ctrl-D at the prompt and during an answer, history, blank lines."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput

from bot.cli_chat import ChatLoop, PipedLines, TerminalLines, prompt_session
from bot.messages import Conversation, Reply, is_blank

GUARD_S = 20.0  # only so a broken loop fails the test instead of hanging it


class FakeConsole:
    """Records questions; answers at once, or (slow) when `release` is set, or never."""

    def __init__(self, slow: bool = False) -> None:
        self.slow = slow
        self.asked: list[tuple[str, str]] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = 0

    async def ask(self, text: str, conversation: str, timeout_s: float) -> Reply | None:
        self.asked.append((text, conversation))
        self.entered.set()
        if self.slow:
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return Reply(message_id="m", conversation=Conversation("console", conversation),
                     text=f"ANSWER to: {text}")

    @property
    def questions(self) -> list[str]:
        return [text for text, _ in self.asked]


@dataclass
class Chat:
    """A running chat loop, the pipe its keys go into and what it printed."""

    loop: ChatLoop
    keys: PipeInput
    task: asyncio.Task[None]
    said: list[str] = field(default_factory=list)
    noted: list[str] = field(default_factory=list)

    async def finished(self) -> None:
        await asyncio.wait_for(self.task, GUARD_S)

    async def until(self, condition: Callable[[], bool]) -> None:
        async def poll() -> None:
            while not condition():
                await asyncio.sleep(0.01)
        await asyncio.wait_for(poll(), GUARD_S)


@asynccontextmanager
async def chat(console: FakeConsole, history: Path | None = None,
               status: io.StringIO | None = None) -> AsyncIterator[Chat]:
    with create_pipe_input() as keys:
        said: list[str] = []
        noted: list[str] = []
        loop = ChatLoop(console, "chat-first", say=said.append, note=noted.append,
                        timeout_s=30.0)
        lines = TerminalLines(prompt_session(history, input=keys, output=DummyOutput()),
                              status=status)
        task = asyncio.create_task(loop.run(lines))
        running = Chat(loop, keys, task, said, noted)
        try:
            yield running
        finally:
            if not task.done():
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task


async def test_slash_commands_are_handled_and_never_sent() -> None:
    console = FakeConsole()
    async with chat(console) as c:
        c.keys.send_text("/help\r/frobnicate now\rhello\r/reset\rhello again\r/quit\rnot read\r")
        await c.finished()
    assert console.questions == ["hello", "hello again"]
    first, second = (conv for _, conv in console.asked)
    assert first == "chat-first" and second != first  # /reset: a new conversation, no memory
    assert c.loop.conversation == second
    notes = "\n".join(c.noted)
    assert "/reset" in notes and "/quit" in notes  # the help lists the commands
    assert "unknown command /frobnicate" in notes
    assert f"new conversation {second}" in notes
    assert c.said == ["bot> ANSWER to: hello", "bot> ANSWER to: hello again"]


@pytest.mark.parametrize("command", ["/exit", "/QUIT", "exit", "quit"])
async def test_exit_and_quit_leave(command: str) -> None:
    console = FakeConsole()
    async with chat(console) as c:
        c.keys.send_text(f"{command}\rnot read\r")
        await c.finished()
    assert console.asked == []


@pytest.mark.parametrize("key", ["\x03", "\x04"], ids=["ctrl-c", "ctrl-d"])
async def test_ctrl_c_or_ctrl_d_at_an_empty_prompt_leaves_at_once(key: str) -> None:
    console = FakeConsole()
    async with chat(console) as c:
        c.keys.send_text(key)  # the pipe stays open: only the key can end the loop
        await c.finished()
    assert console.asked == []


async def test_ctrl_c_on_a_typed_line_clears_it() -> None:
    console = FakeConsole()
    async with chat(console) as c:
        c.keys.send_text("half a thought\x03hi\r\x04")
        await c.finished()
    assert console.questions == ["hi"]


async def test_ctrl_c_cancels_the_answer_in_flight_and_the_chat_goes_on() -> None:
    console = FakeConsole(slow=True)  # the answer never comes
    async with chat(console) as c:
        c.keys.send_text("what is zlib?\r")
        await asyncio.wait_for(console.entered.wait(), GUARD_S)
        c.keys.send_text("\x03")
        await c.until(lambda: "(cancelled)" in c.noted)
        assert console.cancelled == 1 and not c.task.done()
        console.slow = False
        c.keys.send_text("and now?\r\x04")
        await c.finished()
    assert console.questions == ["what is zlib?", "and now?"]
    assert c.said == ["bot> ANSWER to: and now?"]


async def test_ctrl_c_typed_ahead_with_the_question_cancels_it() -> None:
    console = FakeConsole(slow=True)
    async with chat(console) as c:
        c.keys.send_text("slow one\r\x03\x04")  # the keys after Enter are read as typeahead
        await c.finished()
    assert "(cancelled)" in c.noted and c.said == []  # (perhaps before it was even sent)


async def test_input_closed_while_waiting_cancels_and_leaves() -> None:
    console = FakeConsole(slow=True)
    async with chat(console) as c:
        c.keys.send_text("slow one\r")
        await asyncio.wait_for(console.entered.wait(), GUARD_S)
        c.keys.close()  # the terminal went away
        await c.finished()
    assert console.cancelled == 1 and "(cancelled)" in c.noted


async def test_spinner_shows_while_waiting_and_is_cleared() -> None:
    console = FakeConsole(slow=True)
    status = io.StringIO()
    async with chat(console, status=status) as c:
        c.keys.send_text("slow one\r")
        await c.until(lambda: "thinking" in status.getvalue())
        console.release.set()
        await c.until(lambda: bool(c.said))
        c.keys.send_text("\x04")
        await c.finished()
    assert status.getvalue().endswith("\r\x1b[K")


@pytest.mark.parametrize("line", ["", "   ", "\u200b\u200e\u2066", "\t\u00a0\ufeff\u2069"])
async def test_empty_lines_are_not_sent(line: str) -> None:
    console = FakeConsole()
    async with chat(console) as c:
        c.keys.send_text(f"{line}\rreal question\r\x04")
        await c.finished()
    assert console.questions == ["real question"]


async def test_history_is_kept_in_a_file_and_recalled_with_up(tmp_path: Path) -> None:
    history = tmp_path / "data" / "chat_history"
    console = FakeConsole()
    async with chat(console, history) as c:
        c.keys.send_text("first question\r")
        await c.until(lambda: len(c.said) == 1)  # (history is loaded as the next prompt starts)
        c.keys.send_text("\x1b[A\r\x04")  # Up, Enter: the same again
        await c.finished()
    assert console.questions == ["first question", "first question"]
    assert "+first question" in history.read_text(encoding="utf-8")
    assert history.stat().st_mode & 0o077 == 0  # questions may be private: owner only


async def test_piped_lines_are_read_plainly() -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, "hello\n\u200b\n/help\n/nope\nlast line".encode())
    os.close(write_fd)
    console = FakeConsole()
    said: list[str] = []
    noted: list[str] = []
    loop = ChatLoop(console, "c", say=said.append, note=noted.append)
    try:
        await asyncio.wait_for(loop.run(PipedLines(read_fd)), GUARD_S)
    finally:
        os.close(read_fd)
    assert console.questions == ["hello", "last line"]
    assert said == ["bot> ANSWER to: hello", "bot> ANSWER to: last line"]
    assert any("unknown command /nope" in n for n in noted)


@pytest.mark.parametrize(("text", "blank"), [
    ("", True), (" \t\r\n", True), ("\u200b\u200c\u200d\u2060\ufeff", True),
    ("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069", True),
    ("\u00a0\u3000\u2028\u2029\u3164\u2800", True), ("\x00\x07", True),
    ("a", False), ("\u200bhi\u200b", False), ("?", False), ("漢", False), ("0", False),
])
def test_is_blank(text: str, blank: bool) -> None:
    assert is_blank(text) is blank
