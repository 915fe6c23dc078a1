"""With no DATABASE_URL and no REDIS_URL, the bot starts embedded Postgres+pgvector and Valkey
under BOT_DATA_DIR, keeps data between commands, and stops the servers when it exits."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import psutil
import pytest
import redis

from bot.services import EmbeddedPostgres, EmbeddedValkey
from tests.conftest import CORPUS
from tests.fakes.processes import bot_command


def _servers_under(data_dir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline:
            found.append(proc)
    return found


def test_ingest_and_ask_on_embedded_services(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["BOT_DATA_DIR"] = str(data_dir)
    md = CORPUS / "platformdirs-readme.md"
    ingest = subprocess.run(bot_command("ingest", str(md)), env=env, capture_output=True,
                            text=True, timeout=180, check=False)
    assert ingest.returncode == 0, ingest.stderr
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    assert (data_dir / "valkey" / "appendonlydir").exists()
    assert _servers_under(data_dir) == []  # both servers stopped with the last process

    ask = subprocess.run(bot_command("ask", "--json", "How do I get Path objects instead of "
                                     "strings from platformdirs?"),
                         env=env, capture_output=True, text=True, timeout=180, check=False)
    assert ask.returncode == 0, ask.stderr
    assert json.loads(ask.stdout)["sources"][0]["uri"] == str(md)  # data kept between runs
    assert _servers_under(data_dir) == []


# A process that starts (joins) both embedded services under argv[1]. With argv[2] == "hold" it
# prints "ready" and waits to be killed; with "cycle" it leaves both services and exits.
_CHILD = """
import sys, time
from pathlib import Path
from bot.services import EmbeddedPostgres, EmbeddedValkey
data_dir = Path(sys.argv[1])
pg, valkey = EmbeddedPostgres(data_dir), EmbeddedValkey(data_dir)
pg.start()
valkey.start()
if sys.argv[2] == "hold":
    print("ready", flush=True)
    time.sleep(600)
valkey.stop()
pg.stop()
"""


def _running(pid: int) -> bool:
    """True if `pid` is a live process (a zombie awaiting its reaper counts as gone)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _kill_servers_under(data_dir: Path) -> None:
    """Last-resort cleanup: kill any server whose command line names `data_dir`."""
    for proc in _servers_under(data_dir):
        try:
            proc.kill()
        except psutil.Error:
            pass


def _child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}


def test_servers_orphaned_by_sigkill_are_stopped_by_the_next_clean_exit(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    stderr_path = tmp_path / "holder.stderr"
    try:
        with stderr_path.open("w") as stderr, subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(data_dir), "hold"], env=_child_env(),
                stdout=subprocess.PIPE, stderr=stderr, text=True) as holder:
            assert holder.stdout is not None
            try:
                lines = iter(holder.stdout.readline, "")  # logs may precede "ready"
                assert "ready\n" in lines, stderr_path.read_text()
                postmaster = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
                valkey = int((data_dir / "valkey" / "valkey.pid").read_text().strip())
            finally:
                holder.kill()  # SIGKILL: no chance to leave the services
                holder.wait()
        assert _running(postmaster) and _running(valkey)  # orphaned, still serving

        cycle = subprocess.run([sys.executable, "-c", _CHILD, str(data_dir), "cycle"],
                               env=_child_env(), capture_output=True, text=True, timeout=180,
                               check=False)
        assert cycle.returncode == 0, cycle.stderr
        assert not _running(valkey), "valkey left running after the last live user exited"
        assert not _running(postmaster), "postgres left running after the last live user exited"
    finally:
        _kill_servers_under(data_dir)


@pytest.mark.parametrize("name", ["data +x y", "p%41#q@r"])
def test_a_data_dir_needing_url_escapes_works(tmp_path: Path, name: str) -> None:
    data_dir = tmp_path / name
    pg, valkey = EmbeddedPostgres(data_dir), EmbeddedValkey(data_dir)
    try:
        database_url = pg.start()
        redis_url = valkey.start()

        async def select_one() -> object:
            conn = await asyncpg.connect(database_url, timeout=10)
            try:
                return await conn.fetchval("SELECT 1")
            finally:
                await conn.close()

        assert asyncio.run(select_one()) == 1
        client = redis.Redis.from_url(redis_url)
        try:
            assert client.ping() is True
        finally:
            client.close()
    finally:
        valkey.stop()
        pg.stop()
        leftover = _servers_under(data_dir)
        _kill_servers_under(data_dir)
    assert leftover == []
