"""Chunking: token limits, overlap, sections never crossed, stable hashes."""

from __future__ import annotations

import itertools

from knowledge.chunking import chunk_sections
from knowledge.embedders.tokenizer import count_tokens
from knowledge.loaders import Section, load_file
from tests.conftest import CORPUS


def test_chunks_respect_the_token_limit_and_keep_their_section() -> None:
    doc = load_file(str(CORPUS / "python-try-and-with-statements.pdf"))
    chunks = chunk_sections(doc.title, doc.sections, chunk_tokens=96, overlap_tokens=16,
                            count_tokens=count_tokens)
    assert len(chunks) > len(doc.sections)
    for chunk in chunks:
        assert chunk.token_count <= 96
        assert count_tokens(chunk.text) <= 96 + 4  # re-joined units may merge a few pieces
        assert chunk.section in {s.title for s in doc.sections}
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert {c.page for c in chunks} == {1, 2, 3}


def test_overlap_repeats_the_tail_of_the_previous_chunk() -> None:
    paragraphs = [f"Paragraph {i} talks about topic number {i} in some detail." for i in range(40)]
    section = Section("Topics", "\n\n".join(paragraphs))
    chunks = chunk_sections("Doc", [section], chunk_tokens=60, overlap_tokens=20,
                            count_tokens=count_tokens)
    assert len(chunks) > 3
    for previous, current in itertools.pairwise(chunks):
        last_paragraph = previous.text.split("\n\n")[-1]
        assert current.text.startswith(last_paragraph)


def test_no_overlap_means_disjoint_chunks_and_hashes_are_stable() -> None:
    section = Section("S", "\n\n".join(f"Sentence {i} is here." for i in range(50)))
    a = chunk_sections("T", [section], chunk_tokens=40, overlap_tokens=0,
                       count_tokens=count_tokens)
    b = chunk_sections("T", [section], chunk_tokens=40, overlap_tokens=0,
                       count_tokens=count_tokens)
    assert [c.sha256 for c in a] == [c.sha256 for c in b]
    joined = "\n\n".join(c.text for c in a)
    assert joined == section.text
    # the title takes part in the hash: a renamed document re-embeds
    c = chunk_sections("Other", [section], chunk_tokens=40, overlap_tokens=0,
                       count_tokens=count_tokens)
    assert {x.sha256 for x in c}.isdisjoint({x.sha256 for x in a})


def test_a_giant_word_run_is_split_not_dropped() -> None:
    words = [f"w{i}" for i in range(1000)]
    chunks = chunk_sections("T", [Section("", " ".join(words))], chunk_tokens=100,
                            overlap_tokens=0, count_tokens=count_tokens)
    assert " ".join(c.text for c in chunks).split() == words
    assert all(c.token_count <= 100 for c in chunks)


def test_identical_chunks_within_a_document_are_stored_once() -> None:
    boilerplate = Section("Footer", "Copyright the authors. All rights reserved.")
    chunks = chunk_sections("T", [boilerplate, Section("Body", "Real text."), boilerplate],
                            chunk_tokens=100, overlap_tokens=0, count_tokens=count_tokens)
    assert [c.text for c in chunks] == [boilerplate.text, "Real text."]
    assert [c.ordinal for c in chunks] == [0, 1]
