"""The default embedder as a user's process runs it: nothing written outside the bot's own
directories (onnxruntime's wheel keeps a telemetry database under the home directory unless
told not to)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_loading_the_model_writes_nothing_under_home(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env["HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c",
         "from knowledge.embedders.onnx import OnnxMiniLM\n"
         "print(len(OnnxMiniLM().embed(['hello'])[0]))"],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "384"
    assert [p for p in tmp_path.rglob("*")] == []
