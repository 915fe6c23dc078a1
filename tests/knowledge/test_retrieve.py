"""Retrieval on the real corpus: each question's answer sits in a known document and section,
and that section comes first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.config import RetrievalMode
from bot.messages import Passage
from bot.runtime import Runtime
from knowledge.loaders import expand_sources
from knowledge.retrieve import fuse
from tests.conftest import CORPUS, Services, fresh_database, isolated_env, settings_from

QUESTIONS = [
    ("How do I get pathlib Path objects instead of strings from platformdirs?",
     "platformdirs-readme.md", "Quick start"),
    ("What buffer size does the zlib example define as CHUNK for feeding deflate and inflate?",
     "zlib-usage-example.html", "zlib Usage Example"),
    ("When is the finally clause executed if a return statement runs in the try suite?",
     "python-try-and-with-statements.pdf", '"finally" clause'),
    ("In which two steps is the basic import statement executed?",
     "python-import-statement.docx", 'The "import" statement'),
    ("What must appear near the top of a module for a future statement to be valid?",
     "python-import-statement.docx", "Future statements"),
]


@pytest.fixture(scope="module")
async def ingested(services: Services, tmp_path_factory: pytest.TempPathFactory
                   ) -> AsyncIterator[Runtime]:
    """One knowledge base for the whole module: ingesting the corpus takes seconds."""
    async with fresh_database(services) as url:
        env = isolated_env(services, url, tmp_path_factory.mktemp("retrieve"))
        async with Runtime(settings_from(env)) as rt:
            report = await rt.ingestor().ingest(expand_sources([str(CORPUS)]))
            assert report.failures == []
            yield rt


@pytest.mark.parametrize(("question", "document", "section"), QUESTIONS)
async def test_dense_retrieval_finds_the_right_section_first(
        ingested: Runtime, question: str, document: str, section: str) -> None:
    hits = await ingested.knowledge_retriever(RetrievalMode.DENSE).retrieve(question, 5)
    assert hits[0].uri.endswith(document), [h.uri for h in hits]
    assert section in hits[0].section
    assert hits[0].score > hits[-1].score or len(hits) == 1
    assert -1.0 <= hits[-1].score <= hits[0].score <= 1.0


async def test_lexical_and_hybrid_modes_rank_the_right_document_first(ingested: Runtime) -> None:
    for mode in (RetrievalMode.LEXICAL, RetrievalMode.HYBRID):
        retriever = ingested.knowledge_retriever(mode)
        hits = await retriever.retrieve("deflateInit inflateInit zlib CHUNK", 5)
        assert hits[0].uri.endswith("zlib-usage-example.html"), mode
    lexical = ingested.knowledge_retriever(RetrievalMode.LEXICAL)
    assert await lexical.retrieve("the and of", 5) == []  # stop words only: no match
    assert await lexical.retrieve("   ", 5) == []


def _p(cid: int) -> Passage:
    return Passage(text="", uri=f"u{cid}", title="", section="", page=None, score=0.0,
                   chunk_id=cid)


def test_weighted_fusion_follows_the_weights() -> None:
    dense = [_p(1), _p(2), _p(3)]
    lexical = [_p(3), _p(2), _p(4)]
    assert [p.chunk_id for p in fuse(dense, lexical, 1.0)][:3] == [1, 2, 3]
    assert [p.chunk_id for p in fuse(dense, lexical, 0.0)][:3] == [3, 2, 4]
    balanced = fuse(dense, lexical, 0.5)
    assert balanced[0].chunk_id in (2, 3)  # in both lists beats first in one
    assert balanced[0].score == pytest.approx(max(0.5 / 62 + 0.5 / 62, 0.5 / 63 + 0.5 / 61))


async def test_lexical_search_stems_the_query_once(runtime: Runtime, tmp_path: Path) -> None:
    doc = tmp_path / "release-notes.md"
    doc.write_text("# Release notes\n\nThis release changes how embedding databases parse "
                   "dense vectors.\n")
    await runtime.ingestor().ingest([str(doc)])
    lexical = runtime.knowledge_retriever(RetrievalMode.LEXICAL)
    for word in ("release", "embedding", "databases", "parse", "dense"):
        hits = await lexical.retrieve(word, 3)
        assert hits and hits[0].uri == str(doc), word
