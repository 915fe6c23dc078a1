"""`bot ingest` as a user runs it (real subprocesses): what it says about sources it cannot use."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from pathlib import Path

from tests.bot.test_cli import run
from tests.conftest import CORPUS, subprocess_env
from tests.fakes.processes import bot_command
from tests.knowledge.unusable import write_unusable

SUPPORTED = ".md .markdown .txt .text .rst .html .htm .pdf .docx"


def test_a_folder_without_supported_files_is_an_error_not_nothing_changed(
        env_settings: dict[str, str], tmp_path: Path) -> None:
    # finding 11: an empty folder said "nothing changed" and exited 0
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "a.png").write_bytes(b"\x89PNG")
    env = subprocess_env(env_settings)
    for folder in (empty, tmp_path / "pictures"):
        result = run(["ingest", str(folder)], env)
        assert result.returncode == 1
        assert result.stderr == f"error: no supported files in {folder} (supported: {SUPPORTED})\n"
        assert result.stdout == ""


def test_unusable_sources_are_reported_once_and_progress_counts_chunks(
        env_settings: dict[str, str], tmp_path: Path) -> None:
    # finding 11: random bytes named .txt were ingested; a corrupt PDF's warnings went through
    # the progress bar and the failure was reported three times; the bar counted documents
    noise, cut, skewed = write_unusable(tmp_path)
    good = tmp_path / "good.md"
    good.write_text("# Good\n\nThe answer to the ingest test is 42.\n")

    result = run(["ingest", str(noise), str(cut), str(skewed), str(good)],
                 subprocess_env(env_settings))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()

    def mentioning(text: str) -> list[str]:
        return [line for line in lines if text in line]

    assert mentioning(noise.name) == [f"failed: {noise}: not a text file (contains NUL bytes)"]
    assert mentioning(cut.name) == [
        f"failed: {cut}: cannot read as application/pdf: Stream has ended unexpectedly "
        "(EOF marker not found)"]
    assert mentioning(skewed.name)[0] == f"warning: {skewed}: incorrect startxref pointer(3)"
    assert all(line.startswith(f"warning: {skewed}: ") for line in mentioning(skewed.name))
    assert mentioning("pypdf") == [] and mentioning("ingest failed") == []
    assert result.stderr.count("EOF marker not found") == 1
    # after the bars, never through them: the failure and warning lines come last
    problems = [n for n, line in enumerate(lines) if line.startswith(("failed:", "warning:"))]
    assert problems == list(range(len(lines) - len(problems), len(lines)))

    added = re.search(r"chunks: (\d+) added", result.stdout)
    assert added and result.stdout.startswith("documents: 2 (2 changed);")
    assert any(re.match(r"documents\s.*\b4/4\b", line) for line in lines), lines
    n = added.group(1)
    assert any(re.match(rf"chunks\s.*\b{n}/{n}\b", line) for line in lines), lines


def run_on_terminal(args: list[str], env: dict[str, str], timeout_s: float = 180) -> str:
    """`bot ARGS` with stdout and stderr on a pseudo-terminal (120 columns); what it wrote."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(bot_command(*args), env=env, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave)
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                try:
                    block = os.read(master, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not block:
                    break
                output.extend(block)
        else:
            raise AssertionError(f"bot {' '.join(args)} did not finish: {output[-2000:]!r}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        os.close(master)
    return output.decode("utf-8", "replace")


def test_log_lines_print_above_the_bars_on_a_terminal(env_settings: dict[str, str],
                                                      tmp_path: Path) -> None:
    # finding 11: log records were written through the progress bar
    pdf = (CORPUS / "python-try-and-with-statements.pdf").read_bytes()
    (tmp_path / "a.md").write_text("# A\n\nThe answer to the terminal test is 42.\n")
    (tmp_path / "b.pdf").write_bytes(pdf[:len(pdf) * 2 // 3])
    screen = run_on_terminal(["ingest", str(tmp_path)],
                             subprocess_env(env_settings, BOT_LOG_LEVEL="INFO"))
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
    lines = [line for line in re.split(r"[\r\n]", plain) if line.strip()]
    logged = [line for line in lines if "[info" in line or "[warning" in line]
    assert any("ingested" in line for line in logged), plain[-3000:]
    assert any("━" in line for line in lines), plain[-3000:]
    assert [line for line in logged if "━" in line] == []
    assert plain.count("EOF marker not found") == 2  # the info log, and the failed: line


def test_usable_cores_is_the_affinity_mask() -> None:
    """`bot ingest` embeds on every core this process may use (EMBEDDING_THREADS unset)."""
    import os

    from bot.cli_common import usable_cores

    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1
