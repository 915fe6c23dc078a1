"""Markdown headings parsed in pieces: the same headings as one parse of the whole document,
with the memory of one piece (issue 14: a 5 MB file held ~130 MB of tokens at once)."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from knowledge.markdown import Heading, markdown_headings

ROOT = Path(__file__).resolve().parents[2]


def _whole(lines: list[str]) -> list[Heading]:
    """The headings of one parse of the whole document, inline parsing included."""
    tokens = MarkdownIt("commonmark").parse("\n".join(lines))
    return [(t.map[0], t.map[1], int(t.tag[1]), tokens[i + 1].content.strip())
            for i, t in enumerate(tokens) if t.type == "heading_open" and t.map]


def _headings_and_peak_bytes(lines: list[str]) -> tuple[list[Heading], int]:
    """`markdown_headings(lines)` and the peak of Python memory allocated meanwhile."""
    tracemalloc.start()
    try:
        headings = markdown_headings(lines)
        return headings, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


#: Lines that open, close or sit inside the blocks a cut must not split: fences whose body
#: holds "# comment" lines after a blank line, raw HTML blocks, lists, quotes, setext.
_LINES = ["# Title", "## Sub", "text line", "", "", "```bash", "# comment", "```", "~~~",
          "````", "<pre>", "</pre>", "<!--", "-->", "<script>", "</script>", "- item",
          "  ```", "> quote", "> ```", "    indented", "Setext", "===", "---", "<div>",
          "</div>", "#no", "###### six", "# ", "#", "1. one", "   # in a list item"]


def test_random_documents_give_the_same_headings_in_pieces_as_whole() -> None:
    rng = random.Random(14)
    for _ in range(2000):
        lines = [rng.choice(_LINES) for _ in range(rng.randint(1, 60))]
        expected = _whole(lines)
        for piece_chars in (1, 7, 40):
            assert markdown_headings(lines, piece_chars) == expected, (lines, piece_chars)


@pytest.mark.parametrize("path", [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"],
                         ids=lambda p: p.name)
def test_this_projects_docs_give_the_same_headings(path: Path) -> None:
    lines = path.read_text().split("\n")
    expected = _whole(lines)
    assert expected
    for piece_chars in (1, 300, 4096):
        assert markdown_headings(lines, piece_chars) == expected


def test_a_carriage_return_ends_a_line_as_the_parser_counts_it() -> None:
    # found by an adversarial pass: old Mac line ends inside one of the lines
    for lines in (["# A\r# B\r# C"], ["\r#"], ["# A\r\r# B", "", "# C"]):
        for piece_chars in (1, 4096):
            assert markdown_headings(lines, piece_chars) == _whole(lines)


def test_a_cut_is_not_made_inside_a_code_block_that_holds_a_heading_like_line() -> None:
    lines = ["# Install", "", "```sh", "make", "", "# then, as root:", "make install", "```",
             "", "# Use", "", "text"]
    headings = markdown_headings(lines, piece_chars=1)
    assert [h[3] for h in headings] == ["Install", "Use"]


def test_the_memory_is_that_of_a_piece_not_of_the_document() -> None:
    section = "\n\n".join(f"Paragraph {i} with a [link](https://example.org/{i}) and `code`."
                          for i in range(40))
    lines = "\n\n".join(f"# Part {n}\n\n{section}" for n in range(800)).split("\n")  # 2 MB
    headings, peak = _headings_and_peak_bytes(lines)
    assert len(headings) == 800
    # one parse of the whole held ~50 MB of tokens here; a piece of 256 KB holds about 5 MB
    assert peak < 16 * 2**20, peak


def test_a_long_code_block_of_heading_like_lines_keeps_the_memory_bounded() -> None:
    """A fenced block of 1.5 MB of shell lines "# step n" (each a failed cut): the next tries
    start where the block does and reach twice as far, instead of parsing the rest at once."""
    fence = ["```sh"] + [line for i in range(25000)
                         for line in ("", f"# step {i}", f"echo {i} with some more shell text")]
    section = "\n\n".join(f"Paragraph {i} with a [link](https://example.org/{i})."
                          for i in range(40))
    rest = "\n\n".join(f"# Part {n}\n\n{section}" for n in range(1000)).split("\n")
    lines = ["# Setup", "", *fence, "```", "", *rest]  # 3.6 MB
    headings, peak = _headings_and_peak_bytes(lines)
    assert headings == _whole(lines)
    assert len(headings) == 1001
    # one parse of the whole held ~70 MB of tokens; the longest piece here is the fence and
    # about as much again of sections
    assert peak < 40 * 2**20, peak
