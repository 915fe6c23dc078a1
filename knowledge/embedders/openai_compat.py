"""Embeddings from any OpenAI-compatible `/v1/embeddings` endpoint."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from openai import AsyncOpenAI

from bot.config import Settings


class OpenAIEmbedder:
    """Embeds through the `openai` SDK; vectors are re-normalized to unit length.

    `dim` is `EMBEDDING_DIM`; a response of another length raises ValueError.
    """

    def __init__(self, settings: Settings) -> None:
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "unused"
        self._client = AsyncOpenAI(base_url=settings.embedding_base_url, api_key=key,
                                   timeout=settings.llm_timeout_s, max_retries=3)
        self._model = settings.embedding_model
        self.name = f"{settings.embedding_model} (openai-compatible)"
        self.dim = settings.embedding_dim
        self._batch = settings.embedding_batch_size

    async def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self._batch):
            batch = texts[start:start + self._batch]
            response = await self._client.embeddings.create(model=self._model, input=batch)
            for item in response.data:
                vector = np.asarray(item.embedding, dtype=np.float32)
                if vector.shape != (self.dim,):
                    raise ValueError(f"embedding endpoint returned {vector.shape[0]} dims; "
                                     f"EMBEDDING_DIM is {self.dim}")
                out[start + item.index] = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return out

    async def aclose(self) -> None:
        await self._client.close()
