"""Splitting long replies for platforms with a message length limit."""

from __future__ import annotations

from collections.abc import Callable


def split_text(text: str, limit: int, length: Callable[[str], int] = len) -> list[str]:
    """Cut `text` into pieces of at most `limit` (as measured by `length`), preferring
    paragraph breaks, then line breaks, then spaces; a single word longer than `limit` is cut
    hard. Pieces are stripped of surrounding blank lines; empty pieces are dropped.

    Raises:
        ValueError: limit < 1.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    pieces: list[str] = []
    rest = text.strip("\n")
    while rest:
        if length(rest) <= limit:
            pieces.append(rest)
            break
        cut = _best_cut(rest, limit, length)
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip("\n ")
    return [p for p in pieces if p.strip()]


def _best_cut(text: str, limit: int, length: Callable[[str], int]) -> int:
    # the longest prefix within the limit (length may count UTF-16 units, not characters)
    hi = min(len(text), limit)
    while hi > 1 and length(text[:hi]) > limit:
        hi -= 1
    for separator in ("\n\n", "\n", " "):
        at = text.rfind(separator, 0, hi)
        if at > hi // 3:
            return at + len(separator)
    return hi
