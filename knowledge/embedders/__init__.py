"""Embedders: text -> L2-normalized float32 vectors of a fixed `dim`.

`build_embedder(settings)` picks the backend from `EMBEDDING_BACKEND`:
- `onnx` (default): all-MiniLM-L6-v2 int8 on onnxruntime, 384 dims, about 100 MB installed.
- `sentence-transformers`: the same model in fp32 on PyTorch (extra `[torch]`), 384 dims.
- `openai`: any OpenAI-compatible `/v1/embeddings` endpoint (`EMBEDDING_BASE_URL`,
  `EMBEDDING_MODEL`, `EMBEDDING_DIM`).
Why ONNX is the default, with figures: docs/adr/0001-default-embedder.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import numpy.typing as npt

from bot.config import EmbeddingBackend, Settings

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Async embedder. `embed` returns shape (len(texts), dim), rows L2-normalized."""

    name: str
    dim: int

    async def embed(self, texts: list[str]) -> Vectors: ...

    async def aclose(self) -> None: ...


class SyncModel(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> Vectors: ...


class LocalEmbedder:
    """Runs a blocking local model on one dedicated thread, off the event loop, so inference
    never stalls message handling and never runs more model threads than configured. The model
    is loaded on that thread at the first call, so loading does not stall the loop either.

    Args:
        load: builds the model (called once, on the embedder thread).
        name, dim: the model's name and vector length, known before it is loaded.
    """

    def __init__(self, load: Callable[[], SyncModel], *, name: str, dim: int) -> None:
        self._load = load
        self._model: SyncModel | None = None
        self.name = name
        self.dim = dim
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")

    def _embed(self, texts: list[str]) -> Vectors:
        if self._model is None:
            self._model = self._load()
        return self._model.embed(texts)

    async def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._embed, texts)

    def embed_blocking(self, texts: list[str]) -> Vectors:
        """`embed` for a caller on another worker thread (the guardrails' scorer): the call
        runs on the embedder's own thread, after whatever it is doing, so the process keeps
        one model and never runs more model threads than configured. Never call it on the
        event loop's thread (it blocks until the embedding is done)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._executor.submit(self._embed, texts).result()

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def build_embedder(settings: Settings) -> Embedder:
    """The embedder the settings name (settings are validated by `load_settings`).

    Raises (at the first `embed` call, where the model is loaded):
        ConfigError: the sentence-transformers backend without the [torch] extra installed.
    """
    backend = settings.embedding_backend
    threads, batch = settings.embedding_threads, settings.embedding_batch_size
    if backend is EmbeddingBackend.ONNX:
        from knowledge.embedders.onnx import DIM, OnnxMiniLM

        return LocalEmbedder(lambda: OnnxMiniLM(threads=threads, batch_size=batch),
                             name=OnnxMiniLM.name, dim=DIM)
    if backend is EmbeddingBackend.SENTENCE_TRANSFORMERS:
        from knowledge.embedders.torch import TorchMiniLM

        return LocalEmbedder(lambda: TorchMiniLM(threads=threads, batch_size=batch),
                             name=TorchMiniLM.name, dim=TorchMiniLM.dim)
    from knowledge.embedders.openai_compat import OpenAIEmbedder

    return OpenAIEmbedder(settings)
