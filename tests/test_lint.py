"""The code stays clean: `ruff check` and `mypy --strict` (pyproject.toml) over the whole
repository, as part of the test suite, so CI runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["bot", "adapters", "actions", "knowledge", "migrations", "bench", "tests"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, check=False)


def test_ruff_is_clean() -> None:
    done = _run("ruff", "check", "--no-cache", ".")
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]


def test_mypy_strict_is_clean() -> None:
    done = _run("mypy", *PACKAGES)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
