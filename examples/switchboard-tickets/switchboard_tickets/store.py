"""The ticket file: one JSON object per line, appended under a lock.

The file is `SWITCHBOARD_TICKETS_FILE`, or `tickets.jsonl` in the user data directory
(`platformdirs.user_data_dir("switchboard-tickets")`). Every bot process and worker may write
to it: an append takes a thread lock (workers of one process) and an inter-process file lock
(`<file>.lock`, other processes), reads the file, and writes a line only when no ticket has the
same `call_id` yet, so a retried or re-run invocation gets its ticket back instead of a second
one. Everything here blocks: call it with `asyncio.to_thread`.

A real tracker would be an HTTP API taking the call id as its idempotency key; the file keeps
the example self-contained.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import fasteners
import platformdirs

ENV = "SWITCHBOARD_TICKETS_FILE"

#: fcntl locks belong to a process, so threads of one process need a lock of their own.
_thread_lock = threading.Lock()


def tickets_file() -> Path:
    """Where the tickets are kept (read on every call, so the setting may change)."""
    configured = os.environ.get(ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_data_dir("switchboard-tickets")) / "tickets.jsonl"


@dataclass(frozen=True, slots=True)
class Ticket:
    number: int
    title: str
    priority: str
    platform: str
    user: str
    call_id: str
    created_at: str


class TicketStore:
    """The tickets in one file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> tuple[list[Ticket], bytes]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return [], b""
        tickets = []
        for line in raw.splitlines():
            try:
                tickets.append(Ticket(**json.loads(line)))
            except (ValueError, TypeError):
                continue  # a line torn by a crash mid-write, or not a ticket
        return tickets, raw

    def open(self, *, title: str, priority: str, platform: str, user: str,
             call_id: str) -> tuple[Ticket, bool]:
        """The ticket of `call_id`: the one already written (and False), or a new one appended
        to the file (and True).

        Raises:
            OSError: the file or its directory cannot be read or written.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _thread_lock, fasteners.InterProcessLock(f"{self.path}.lock"):
            tickets, raw = self._read()
            for ticket in tickets:
                if ticket.call_id == call_id:
                    return ticket, False
            ticket = Ticket(number=max((t.number for t in tickets), default=0) + 1,
                            title=title, priority=priority, platform=platform, user=user,
                            call_id=call_id, created_at=datetime.now(UTC).isoformat())
            line = json.dumps(asdict(ticket), ensure_ascii=False).encode() + b"\n"
            # a torn last line (a crash mid-write) must not swallow this one
            torn = raw and not raw.endswith(b"\n")
            with self.path.open("ab") as sink:
                sink.write(b"\n" + line if torn else line)
                sink.flush()
                os.fsync(sink.fileno())
            return ticket, True

    def latest(self, count: int) -> list[Ticket]:
        """The `count` most recent tickets, newest first.

        Raises:
            OSError: the file exists but cannot be read.
        """
        tickets, _ = self._read()
        return tickets[::-1][:count]
