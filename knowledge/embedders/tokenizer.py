"""The WordPiece tokenizer of all-MiniLM-L6-v2, shipped with this package (`data/`, Apache-2.0,
from sentence-transformers/all-MiniLM-L6-v2), used to embed and to size chunks in tokens."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from tokenizers import Tokenizer

#: The model's maximum input length in word pieces, [CLS] and [SEP] included.
MAX_SEQ_TOKENS = 256


@lru_cache(maxsize=1)
def minilm_tokenizer() -> Tokenizer:
    """The tokenizer, truncating at `MAX_SEQ_TOKENS` and padding to the longest in a batch."""
    path = resources.files("knowledge.embedders") / "data" / "minilm-tokenizer.json"
    tok = Tokenizer.from_str(path.read_text(encoding="utf-8"))
    tok.enable_truncation(max_length=MAX_SEQ_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a vocabulary entry
    return tok


def count_tokens(text: str) -> int:
    """Number of word pieces in `text` without [CLS]/[SEP] and without truncation."""
    return len(_plain_tokenizer().encode(text, add_special_tokens=False).ids)


@lru_cache(maxsize=1)
def _plain_tokenizer() -> Tokenizer:
    path = resources.files("knowledge.embedders") / "data" / "minilm-tokenizer.json"
    tok = Tokenizer.from_str(path.read_text(encoding="utf-8"))
    tok.no_truncation()
    tok.no_padding()
    return tok
