"""With no DATABASE_URL and no REDIS_URL, the bot starts embedded Postgres+pgvector and Valkey
under BOT_DATA_DIR, keeps data between commands, and stops the servers when it exits."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psutil

from tests.conftest import CORPUS, bot_command


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
