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

#: Candidates tried for one cut before the rest of the document is parsed at once (a piece is
#: parsed again for each; a cut fails where a code block holds a line like "# comment").
MAX_TRIES = 4

#: An ATX heading that starts in the first column (CommonMark 0.31, 4.2).
_ATX = re.compile(r"#{1,6}(?:[ \t]|$)")

#: Heading: (first line, line after it, level 1-6, title), lines counted from 0 by "\n".
Heading = tuple[int, int, int, str]


def markdown_headings(lines: list[str], piece_chars: int = PIECE_CHARS) -> list[Heading]:
    """Every heading of the document `lines` (its text split at "\\n"), in order.

    The same as parsing "\\n".join(lines) at once (lines are counted as the parser counts them:
    a "\\r" inside one ends a line too); the memory is that of one piece's tokens, unless
    `MAX_TRIES` cuts in a row fall inside one code block (a fenced block of shell lines
    "# ..." longer than about four pieces, say): the rest is then parsed at once.
    """
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark").disable("inline")
    if any("\r" in line or "\n" in line for line in lines):  # the parser ends lines there too
        lines = re.split(r"\r\n?|\n", "\n".join(lines))
    cuts = _candidates(lines, piece_chars)
    headings: list[Heading] = []
    start = 0
    while start < len(lines):
        while cuts and cuts[0] <= start:
            cuts.pop(0)
        stop, tokens = len(lines), None
        for _ in range(MAX_TRIES):  # then the rest at once: each try parses the piece again
            if not cuts:
                break
            cut = cuts.pop(0)
            # the piece with the candidate heading line: cut there only if that line is a
            # heading of the top level when it follows this piece (not inside a code block)
            tokens = parser.parse("\n".join(lines[start:cut + 1]))
            if _heading_at(tokens, cut - start):
                stop = cut
                break
        if stop == len(lines):
            tokens = parser.parse("\n".join(lines[start:]))
        assert tokens is not None
        for i, tok in enumerate(tokens):
            if tok.type == "heading_open" and tok.map and start + tok.map[0] < stop:
                title = tokens[i + 1].content.strip() if i + 1 < len(tokens) else ""
                headings.append((start + tok.map[0], start + tok.map[1], int(tok.tag[1]),
                                 title))
        start = stop
    return headings


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
    for tok in reversed(tokens):
        if tok.level == 0 and tok.map:
            return tok.type == "heading_open" and tok.map[0] == line
    return False
