"""Split sections into chunks sized in embedder tokens, with overlap, never across a heading.

Each section is cut into units (paragraphs; sentences for long paragraphs; word runs for very
long sentences) that are packed greedily up to `chunk_tokens`. The next chunk starts with the
last units of the previous one, up to `overlap_tokens`. A chunk carries its section's title
and page, and a SHA-256 of what is embedded, which is the key for incremental re-ingestion.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from knowledge.loaders import Section

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")
_PARAGRAPH = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class ChunkDraft:
    """A chunk before it is stored.

    Attributes:
        ordinal: position in the document, from 0.
        section: heading path of the section it comes from.
        page: 1-based page for PDFs, else None.
        text: the chunk's text.
        token_count: word pieces in `text`.
        sha256: hex digest of `embed_text`, the identity used for incremental upserts.
        embed_text: what is embedded: document title, section and text.
    """

    ordinal: int
    section: str
    page: int | None
    text: str
    token_count: int
    sha256: str
    embed_text: str


def chunk_sections(title: str, sections: list[Section], *, chunk_tokens: int,
                   overlap_tokens: int, count_tokens: Callable[[str], int]) -> list[ChunkDraft]:
    """Chunk a document's sections.

    Args:
        title: the document title, prefixed to what is embedded.
        sections: the loader's sections, in order.
        chunk_tokens: the maximum tokens of a chunk's text (the title and section prefix add a
            few more; keep the total under the model's 256).
        overlap_tokens: at most this many tokens of the previous chunk start the next one.
        count_tokens: the embedder's token counter.

    Raises:
        ValueError: overlap_tokens >= chunk_tokens.
    """
    if overlap_tokens >= chunk_tokens:
        raise ValueError("overlap_tokens must be smaller than chunk_tokens")
    drafts: list[ChunkDraft] = []
    for section in sections:
        units = _units(section.text, chunk_tokens, count_tokens)
        for text, tokens in _pack(units, chunk_tokens, overlap_tokens):
            embed_text = "\n".join(p for p in (title, section.title, text) if p)
            digest = hashlib.sha256(f"{section.page}\x00{embed_text}".encode()).hexdigest()
            drafts.append(ChunkDraft(len(drafts), section.title, section.page, text, tokens,
                                     digest, embed_text))
    return _dedupe(drafts)


def _dedupe(drafts: list[ChunkDraft]) -> list[ChunkDraft]:
    """Drop repeated identical chunks (boilerplate repeated on every page), keeping the first."""
    seen: set[str] = set()
    out: list[ChunkDraft] = []
    for d in drafts:
        if d.sha256 in seen:
            continue
        seen.add(d.sha256)
        out.append(ChunkDraft(len(out), d.section, d.page, d.text, d.token_count, d.sha256,
                              d.embed_text))
    return out


def _units(text: str, limit: int, count: Callable[[str], int]) -> list[tuple[str, int]]:
    units: list[tuple[str, int]] = []
    for paragraph in _PARAGRAPH.split(text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        n = count(paragraph)
        if n <= limit:
            units.append((paragraph, n))
            continue
        for sentence in _SENTENCE.split(paragraph):
            m = count(sentence)
            if m <= limit:
                units.append((sentence, m))
            else:
                units.extend(_split_words(sentence, limit, count))
    return units


def _split_words(text: str, limit: int, count: Callable[[str], int]) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    words: list[str] = []
    size = 0
    for word in text.split():
        w = count(word)
        if words and size + w > limit:
            piece = " ".join(words)
            out.append((piece, count(piece)))
            words, size = [], 0
        words.append(word)
        size += w
    if words:
        piece = " ".join(words)
        out.append((piece, count(piece)))
    return out


def _pack(units: list[tuple[str, int]], limit: int, overlap: int) -> list[tuple[str, int]]:
    chunks: list[tuple[str, int]] = []
    current: list[tuple[str, int]] = []
    size = 0
    for unit in units:
        if current and size + unit[1] > limit:
            chunks.append(("\n\n".join(u[0] for u in current), size))
            carried: list[tuple[str, int]] = []
            carried_size = 0
            for prev in reversed(current):
                if carried_size + prev[1] > overlap or carried_size + prev[1] + unit[1] > limit:
                    break
                carried.insert(0, prev)
                carried_size += prev[1]
            current, size = carried, carried_size
        current.append(unit)
        size += unit[1]
    if current:
        chunks.append(("\n\n".join(u[0] for u in current), size))
    return chunks
