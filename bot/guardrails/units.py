"""Where an attack can hide in a retrieved passage: the passage's units, with their offsets.

`split_units(text)` cuts a passage into the pieces the passage rail scores one by one
(`bot.guardrails.passages`):

* **elements**, whose content is scored on its own: HTML comments (`<!-- ... -->`), Markdown
  link titles (`[a](url "title")`, and reference definitions `[a]: url "title"`), image alt
  text (`![alt](src)`) and the `alt` / `title` / `aria-label` attributes of raw HTML tags,
  comments in fenced code blocks (`#`, `//`, `--`, `/* */`; consecutive comment lines as one
  block), Markdown table cells, and quoted lines (`> ...`, a quoted e-mail or a blockquote;
  consecutive lines as one block);
* **sentences** of the rest: prose (and the code lines of fenced blocks, kind "code"), with the
  elements inside them left out of the scored text, so that an attack in a link title does not
  take the sentence around it down, and the sentence is still scored.

Sentences end at `.`, `!` or `?` followed by white space, and at line breaks, except where a
line without final punctuation is continued by a line starting in lower case (a wrapped
line). Fragments under `MIN_UNIT_CHARS` characters are joined to the next (the last to the one
before), because a classifier reads a few words without context badly, but never across an
element or between code and prose; a unit of fewer than `MIN_UNIT_WORDS` words is not scored.

Offsets are Python string indices (code points) into `text`, `end` exclusive. An element's
span is its content (the comment's text, the title inside its quotes), so cutting it leaves
the syntax around it; a sentence's span may contain elements.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

#: Unit kinds: the element kinds, then "sentence" (prose) and "code" (code lines).
ELEMENT_KINDS = ("html_comment", "md_link_title", "img_alt", "html_attr", "code_comment",
                 "table_cell", "quote")
UNIT_KINDS = (*ELEMENT_KINDS, "sentence", "code")
#: Fragments shorter than this (characters of scored text) are joined to a neighbour.
MIN_UNIT_CHARS = 20
#: Units with fewer words than this are not scored.
MIN_UNIT_WORDS = 2

_FILL = "\x00"  # stands for an element's content in the view of the text around it
_FENCE = re.compile(r"[ \t]{0,3}(`{3,}|~{3,})")
_QUOTE = re.compile(r"[ \t]{0,3}(?:>[ \t]?)+")
_TABLE_DELIMITER = re.compile(
    r"[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(?:\|[ \t]*:?-{3,}:?[ \t]*)*\|?[ \t]*")
_CELL_PIPE = re.compile(r"(?<!\\)\|")
_COMMENT_LINE = re.compile(r"[ \t]*(?:#+|//+|--[ \t])[ \t]*")
_TRAILING_COMMENT = re.compile(r"(?<=\s)(?:#|//|--)[ \t]+(?=\S)")
_BLOCK_COMMENT = re.compile(r"/\*+[ \t]?(.*?)[ \t]*(?:\*+/|$)")
_HTML_COMMENT = re.compile(r"<!--(.*?)(?:-->|\Z)", re.S)
_LINK_TITLE = re.compile(
    r"\]\([ \t]*(?:<[^<>\n]*>|[^\s()]+)[ \t\n]+"
    r"(?:\"((?:[^\"\\]|\\.)*)\"|'((?:[^'\\]|\\.)*)'|\(((?:[^()\\]|\\.)*)\))[ \t]*\)")
_REF_TITLE = re.compile(
    r"^[ \t]{0,3}\[[^\]\n]+\]:[ \t]*\S+[ \t]+"
    r"(?:\"((?:[^\"\\]|\\.)*)\"|'((?:[^'\\]|\\.)*)'|\(((?:[^()\\]|\\.)*)\))[ \t]*$", re.M)
_IMG_ALT = re.compile(r"!\[((?:[^\[\]\\]|\\.)*)\][(\[]")
_HTML_ATTR = re.compile(r"<[A-Za-z][^<>]*?\b(?:alt|title|aria-label)[ \t]*=[ \t]*"
                        r"(?:\"([^\"]*)\"|'([^']*)')", re.I)
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]*_]*(?=\s)")
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Unit:
    """One scored piece of a passage.

    Attributes:
        kind: one of `UNIT_KINDS`.
        start: offset of the unit's first character in the passage.
        end: offset just past its last character.
        text: what is scored: the span with the elements inside it (and quote or comment
            markers) left out, white space collapsed: a run holding a line break to one line
            break (where the passage's lines were, which the scorer may read apart), any
            other to one space.
    """

    kind: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class _Element:
    kind: str
    start: int
    end: int
    noise: tuple[tuple[int, int], ...] = ()  # markers inside the span, not part of the content


def _lines(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each line, without its newline."""
    start = 0
    for m in re.finditer("\n", text):
        yield start, m.start()
        start = m.end()
    yield start, len(text)


def _fences(text: str) -> list[tuple[int, int]]:
    """Spans of the code inside fenced blocks (the lines between the fences)."""
    spans: list[tuple[int, int]] = []
    fence = ""
    body = 0
    for start, end in _lines(text):
        m = _FENCE.match(text, start, end)
        if not fence and m:
            fence, body = m.group(1), min(end + 1, len(text))
        elif fence and m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) \
                and not text[m.end():end].strip():
            spans.append((body, start))
            fence = ""
    if fence:
        spans.append((body, len(text)))
    return spans


def _block(kind: str, lines: list[tuple[int, int, int]]) -> _Element:
    """One element over consecutive (line start, content start, line end) lines; the markers
    of the lines after the first are noise."""
    return _Element(kind, lines[0][1], lines[-1][2], tuple((s, c) for s, c, _ in lines[1:]))


def _code_comments(text: str, fences: list[tuple[int, int]]) -> list[_Element]:
    out: list[_Element] = []
    for lo, hi in fences:
        block: list[tuple[int, int, int]] = []  # consecutive whole-line comments
        for start, end in _lines(text[:hi]):
            if start < lo:
                continue
            line = _COMMENT_LINE.match(text, start, end)
            if line and text[line.end():end].strip():
                block.append((start, line.end(), end))
                continue
            if block:
                out.append(_block("code_comment", block))
                block = []
            inline = _BLOCK_COMMENT.search(text, start, end)
            trailing = _TRAILING_COMMENT.search(text, start, end)
            if inline and text[inline.start(1):inline.end(1)].strip():
                out.append(_Element("code_comment", inline.start(1), inline.end(1)))
            elif trailing:
                out.append(_Element("code_comment", trailing.end(), end))
        if block:
            out.append(_block("code_comment", block))
    return out


def _quotes(text: str, fences: list[tuple[int, int]]) -> list[_Element]:
    out: list[_Element] = []
    block: list[tuple[int, int, int]] = []
    for start, end in [*_lines(text), (-1, -1)]:
        m = _QUOTE.match(text, start, end) if start >= 0 else None
        if m and not _inside(start, fences):
            block.append((start, m.end(), end))
            continue
        if any(c < e for _, c, e in block):
            out.append(_block("quote", block))
        block = []
    return out


def _table_cells(text: str, fences: list[tuple[int, int]]) -> list[_Element]:
    """Cells of pipe tables: rows of a block of lines with a `|---|` delimiter row, or lines
    that start and end with a pipe."""
    rows: list[tuple[int, int]] = []
    lines = [(s, e) for s, e in _lines(text) if not _inside(s, fences)]
    block: list[tuple[int, int]] = []
    for start, end in [*lines, (-1, -1)]:
        if start >= 0 and "|" in text[start:end]:
            block.append((start, end))
            continue
        if any(_TABLE_DELIMITER.fullmatch(text, s, e) for s, e in block):
            rows += block
        else:
            rows += [(s, e) for s, e in block
                     if text[s:e].strip().startswith("|") and text[s:e].strip().endswith("|")]
        block = []
    out: list[_Element] = []
    for start, end in rows:
        if _TABLE_DELIMITER.fullmatch(text, start, end):
            continue
        cuts = [start - 1, *(m.start() for m in _CELL_PIPE.finditer(text, start, end)), end]
        for a, b in itertools.pairwise(cuts):
            lo, hi = a + 1, b
            while lo < hi and text[lo].isspace():
                lo += 1
            while hi > lo and text[hi - 1].isspace():
                hi -= 1
            if lo < hi:
                out.append(_Element("table_cell", lo, hi))
    return out


def _inline(text: str, fences: list[tuple[int, int]]) -> list[_Element]:
    out: list[_Element] = []
    for m in _HTML_COMMENT.finditer(text):
        out.append(_Element("html_comment", m.start(1), m.end(1)))
    for kind, pattern in (("md_link_title", _LINK_TITLE), ("md_link_title", _REF_TITLE),
                          ("img_alt", _IMG_ALT), ("html_attr", _HTML_ATTR)):
        for m in pattern.finditer(text):
            group = next(g for g in range(1, (m.lastindex or 1) + 1) if m.group(g) is not None)
            if not _inside(m.start(), fences):
                out.append(_Element(kind, m.start(group), m.end(group)))
    return out


def _inside(offset: int, spans: list[tuple[int, int]]) -> bool:
    return any(lo <= offset < hi for lo, hi in spans)


def _elements(text: str, fences: list[tuple[int, int]]) -> list[_Element]:
    """Disjoint elements in order; where two overlap, the one starting first (then the
    longer) is kept."""
    found = [*_inline(text, fences), *_code_comments(text, fences), *_quotes(text, fences),
             *_table_cells(text, fences)]
    kept: list[_Element] = []
    for e in sorted(found, key=lambda e: (e.start, -e.end)):
        if e.start < e.end and (not kept or e.start >= kept[-1].end):
            kept.append(e)
    return kept


def _breaks(view: str, lo: int, hi: int, code: list[tuple[int, int]]) -> list[int]:
    """Offsets in (lo, hi) where a sentence ends in `view`."""
    cuts = {m.end() for m in _SENTENCE_END.finditer(view, lo, hi)}
    for m in re.finditer("\n", view[lo:hi]):
        at = lo + m.start()
        before = view[max(lo, view.rfind("\n", lo, at) + 1):at].strip(" \t" + _FILL)
        after = view[at + 1:hi].lstrip(" \t")
        wrapped = (before and after and after[0].islower() and before[-1] not in ".!?:;"
                   and not before.startswith("#") and not _inside(at, code)
                   and not _inside(at + 1, code))
        if not wrapped:
            cuts.add(at)
    return sorted(c for c in cuts if lo < c < hi)


def _scored(view: str, start: int, end: int) -> str:
    """The text scored for view[start:end]: white space collapsed to one space, or to one line
    break where the run holds one."""
    lines = (" ".join(line.split()) for line in view[start:end].replace(_FILL, " ").split("\n"))
    return "\n".join(line for line in lines if line)


def _segments(view: str, lo: int, hi: int, code: list[tuple[int, int]]
              ) -> list[tuple[int, int, str]]:
    """Sentences of view[lo:hi] as (start, end, scored text), short fragments joined."""
    pieces: list[tuple[int, int]] = []
    bounds = [lo, *_breaks(view, lo, hi, code), hi]
    for a, b in itertools.pairwise(bounds):
        while a < b and view[a].isspace():
            a += 1
        while b > a and view[b - 1].isspace():
            b -= 1
        if a < b and _WORD.search(_scored(view, a, b)):  # not markup alone ("| |", "> ")
            pieces.append((a, b))
    out: list[tuple[int, int, str]] = []
    carry: tuple[int, int] | None = None  # a short fragment waiting for the next piece
    for a, b in pieces:
        if carry is not None and (_inside(carry[0], code) != _inside(a, code)
                                  or _FILL in view[carry[1]:a]):
            out.append((*carry, _scored(view, *carry)))  # not across code/prose or an element
            carry = None
        start = a if carry is None else carry[0]
        text = _scored(view, start, b)
        if len(text) < MIN_UNIT_CHARS:
            carry = (start, b)
            continue
        carry = None
        out.append((start, b, text))
    if carry is not None:
        if out and _inside(out[-1][0], code) == _inside(carry[0], code) \
                and _FILL not in view[out[-1][1]:carry[0]]:
            carry = (out.pop()[0], carry[1])
        out.append((*carry, _scored(view, *carry)))
    return out


def split_units(text: str) -> list[Unit]:
    """The units of `text` (see the module docstring), elements and sentences ordered by
    start offset. Units of fewer than `MIN_UNIT_WORDS` words are left out; an empty or blank
    text gives []. Never raises."""
    fences = _fences(text)
    elements = _elements(text, fences)
    rest = list(text)
    for e in elements:
        for i in range(e.start, e.end):
            if rest[i] != "\n":
                rest[i] = _FILL
    units: list[Unit] = []
    for start, end, scored in _segments("".join(rest), 0, len(text), fences):
        units.append(Unit("code" if _inside(start, fences) else "sentence", start, end, scored))
    view = list(text)
    for e in elements:
        for a, b in e.noise:
            view[a:b] = " " * (b - a)
    plain = "".join(view)
    for e in elements:
        for start, end, scored in _segments(plain, e.start, e.end, []):
            units.append(Unit(e.kind, start, end, scored))
    units = [u for u in units if len(_WORD.findall(u.text)) >= MIN_UNIT_WORDS]
    return sorted(units, key=lambda u: (u.start, -u.end))
