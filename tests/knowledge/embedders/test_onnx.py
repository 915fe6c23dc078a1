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


def test_the_session_plans_no_memory_block_per_batch_shape() -> None:
    # issue 14: with onnxruntime's memory patterns (one contiguous arena block per input
    # shape, and each batch of an ingestion has its own rows x padded length) peak RSS grew by
    # 312 MiB over 2,400 chunks, by 132 MiB without, with the same vectors. The arena itself
    # stays on.
    from knowledge.embedders.onnx import OnnxMiniLM

    options = OnnxMiniLM()._session.get_session_options()
    assert not options.enable_mem_pattern
    assert options.enable_cpu_mem_arena
