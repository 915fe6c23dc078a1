"""The headings of a Markdown document (CommonMark), found with bounded memory.

markdown-it-py's block parser finds the headings; its inline parser is not run (nothing here
renders text: a heading's title is its source text, as the block parser leaves it). A token
stream costs about 18 bytes of memory per byte of Markdown (88 MB for 5 MB), so a long
document is parsed in pieces of about `PIECE_CHARS` characters, each cut just before an ATX
heading at the start of a line that follows a blank line.

A cut changes nothing the whole document's parse would give. Block parsing runs from the
first line to the last, and an ATX heading is one line: whether the line at a cut is a
heading depends only on the lines before it. So the piece is parsed with that line, and the
cut is made only if the parser reads it as a heading of the top level (not as a line of a
fenced code block or a `<pre>` block left open, say); else the piece runs on to the next
candidate. After a heading of the top level, no block is open, so the next piece starts as
the whole parse would go on.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from markdown_it.token import Token

#: Characters of Markdown parsed at a time, about (a piece grows past it only to the next
#: place it may be cut).
PIECE_CHARS = 256 * 1024

#: Candidates tried in a row inside one open block (a fenced block holding lines like
#: "# comment"), each twice as far from its start as the one before, before the rest of the
#: document is parsed at once.
MAX_TRIES = 16

#: An ATX heading that starts in the first column (CommonMark 0.31, 4.2).
_ATX = re.compile(r"#{1,6}(?:[ \t]|$)")

#: Heading: (first line, line after it, level 1-6, title), lines counted from 0 by "\n".
Heading = tuple[int, int, int, str]


def markdown_headings(lines: list[str], piece_chars: int = PIECE_CHARS) -> list[Heading]:
    """Every heading of the document `lines` (its text split at "\\n"), in order.

    The same as parsing "\\n".join(lines) at once (lines are counted as the parser counts them:
    a "\\r" inside one ends a line too); the memory is that of one piece's tokens, or of a
    piece up to twice as long as a block that holds lines like headings (a fenced block of
    shell lines "# ...", say).
    """
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark").disable("inline")
    if any("\r" in line or "\n" in line for line in lines):  # the parser ends lines there too
        lines = re.split(r"\r\n?|\n", "\n".join(lines))
    cuts = iter(_candidates(lines, piece_chars))
    headings: list[Heading] = []
    start = 0
    while start < len(lines):
        stop, tokens, tries, reach = len(lines), None, 0, start + 1
        for cut in cuts:
            if tries >= MAX_TRIES:  # then the rest at once
                break
            if cut < reach:
                continue
            # the piece with the candidate heading line: cut there only if that line is a
            # heading of the top level when it follows this piece (not inside a code block)
            tokens = parser.parse("\n".join(lines[start:cut + 1]))
            if _heading_at(tokens, cut - start):
                stop = cut
                break
            # the line is inside a block left open (a fence, raw HTML): nothing is open where
            # that block starts, so the lines before it are settled and the next try starts
            # there
            opened = _last_block_start(tokens)
            tries = 0 if opened else tries + 1
            _collect(tokens, start, start + opened, headings)
            start += opened
            tokens = None
            # and reaches twice as far: a block of n lines costs O(n) parsing, not O(n^2)
            reach = start + 2 * (cut + 1 - start)
        if tokens is None:
            tokens = parser.parse("\n".join(lines[start:]))
        _collect(tokens, start, stop, headings)
        start = stop
    return headings


def _collect(tokens: list[Token], offset: int, stop: int, into: list[Heading]) -> None:
    """Append the headings of `tokens` (a parse of the lines from `offset`) that start before
    line `stop` to `into`."""
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.map and offset + tok.map[0] < stop:
            title = tokens[i + 1].content.strip() if i + 1 < len(tokens) else ""
            into.append((offset + tok.map[0], offset + tok.map[1], int(tok.tag[1]), title))


def _last_block(tokens: list[Token]) -> Token | None:
    """The opening token of the last top-level block of `tokens`, or None."""
    return next((tok for tok in reversed(tokens) if tok.level == 0 and tok.map), None)


def _last_block_start(tokens: list[Token]) -> int:
    """The first line of the last top-level block of `tokens` (0 when there is none)."""
    last = _last_block(tokens)
    return last.map[0] if last is not None and last.map else 0


def _candidates(lines: list[str], piece_chars: int) -> list[int]:
    """Lines where a piece may start: an ATX heading in the first column after a blank
    line, the first one at least `piece_chars` characters after the previous candidate."""
    cuts: list[int] = []
    size = 0
    blank_before = False
    for i, line in enumerate(lines):
        if size >= piece_chars and blank_before and _ATX.match(line):
            cuts.append(i)
            size = 0
        size += len(line) + 1
        blank_before = not line.strip()
    return cuts


def _heading_at(tokens: list[Token], line: int) -> bool:
    """Whether the last top-level block of `tokens` is a heading starting at `line`."""
    last = _last_block(tokens)
    return (last is not None and last.map is not None and last.type == "heading_open"
            and last.map[0] == line)
