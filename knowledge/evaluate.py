"""Retrieval evaluation: nDCG@10, recall@10 and MRR over a labelled query set.

Input: JSON lines `{"query": str, "relevant": [str, ...]}`. A relevant entry names a document
by its source URI, by a suffix of it (`guide/install.md`), or by its exact title. Ranking is
over distinct documents (a document's rank is that of its best chunk); relevance is binary.

- nDCG@10 (Järvelin and Kekäläinen, 2002): DCG = sum over ranks r <= 10 of rel_r / log2(r + 1),
  divided by the DCG of the ideal ranking.
- recall@10: relevant documents in the top 10 / relevant documents (at most 10).
- MRR: mean over queries of 1 / rank of the first relevant document (0 if none in the top 10).

With a passage filter (the bot's passage rails), the same retrieval is scored again on what the
rails let through, as the model would see it: a passage dropped whole no longer ranks its
document (the document's next passage may), and the counts of top-10 documents whose best
passage was cut or dropped are reported, so that a cost in recall on your own corpus shows at
once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from bot.messages import Passage
from bot.protocols import Retriever

CUTOFF = 10


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    relevant: tuple[str, ...]


PassageFilter = Callable[[list[Passage]], Awaitable[list[Passage | None]]]
"""The passage rails as evaluation sees them: one entry per passage, in order: None when the
passage is dropped, else the passage as the model would read it (its text cut or not)."""


@dataclass(frozen=True)
class EvalResult:
    """Mean metrics over `queries` queries. The `railed_*` metrics (in [0, 1]) score the same
    retrieval after the passage filter; `cut_at_10` and `dropped_at_10` are the mean numbers
    of top-10 documents (before the filter) whose best passage it cut or dropped. All None
    without a filter."""

    queries: int
    ndcg_at_10: float
    recall_at_10: float
    mrr: float
    railed_ndcg_at_10: float | None = None
    railed_recall_at_10: float | None = None
    railed_mrr: float | None = None
    cut_at_10: float | None = None
    dropped_at_10: float | None = None


def read_queries(lines: Iterable[str]) -> list[LabelledQuery]:
    """Parse JSON lines; blank lines are skipped.

    Raises:
        ValueError: a line is not an object with a string `query` and a list `relevant`.
    """
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        item = json.loads(line)
        if not isinstance(item, dict) or not isinstance(item.get("query"), str) \
                or not isinstance(item.get("relevant"), list) or not item["relevant"]:
            raise ValueError(f"line {n}: expected {{\"query\": str, \"relevant\": [str, ...]}}")
        out.append(LabelledQuery(item["query"], tuple(str(r) for r in item["relevant"])))
    return out


def _matches(passage: Passage, label: str) -> bool:
    return passage.uri == label or passage.uri.endswith("/" + label.lstrip("/")) \
        or passage.title == label


def rank_documents(passages: list[Passage]) -> list[Passage]:
    """Best passage per document, in order of first appearance."""
    seen: set[str] = set()
    out = []
    for p in passages:
        if p.uri not in seen:
            seen.add(p.uri)
            out.append(p)
    return out


def score_query(ranked_docs: list[Passage], relevant: tuple[str, ...]
                ) -> tuple[float, float, float]:
    """(nDCG@10, recall@10, reciprocal rank) of one ranked document list."""
    top = ranked_docs[:CUTOFF]
    gains = [1.0 if any(_matches(p, r) for r in relevant) else 0.0 for p in top]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), CUTOFF)))
    found = {r for r in relevant if any(_matches(p, r) for p in top)}
    recall = len(found) / min(len(relevant), CUTOFF)
    rr = next((1.0 / (i + 1) for i, g in enumerate(gains) if g), 0.0)
    return dcg / ideal if ideal else 0.0, recall, rr


async def railed(passages: list[Passage], rails: PassageFilter, batch: int = CUTOFF
                 ) -> tuple[list[Passage], int, int]:
    """Run `rails` over `passages` (in rank order, `batch` at a time, until 10 documents are
    kept or none is left). Returns the kept passages in order, and how many of the best
    passages of the top-10 documents before filtering were cut and dropped."""
    best = {id(p) for p in rank_documents(passages)[:CUTOFF]}
    kept: list[Passage] = []
    cut = dropped = 0
    for start in range(0, len(passages), batch):
        chunk = passages[start:start + batch]
        for before, after in zip(chunk, await rails(chunk), strict=True):
            if after is not None:
                kept.append(after)
            if id(before) in best:
                dropped += after is None
                cut += after is not None and after.text != before.text
        if len(rank_documents(kept)) >= CUTOFF:
            break
    return kept, cut, dropped


async def evaluate(retriever: Retriever, queries: list[LabelledQuery],
                   chunks_per_query: int = 50, rails: PassageFilter | None = None
                   ) -> EvalResult:
    """Run every query through `retriever` and average the metrics; with `rails`, also after
    the passage filter (see `EvalResult`)."""
    totals = [0.0] * 8
    for q in queries:
        passages = await retriever.retrieve(q.query, chunks_per_query)
        for i, value in enumerate(score_query(rank_documents(passages), q.relevant)):
            totals[i] += value
        if rails is not None:
            kept, cut, dropped = await railed(passages, rails)
            for i, value in enumerate(score_query(rank_documents(kept), q.relevant)):
                totals[3 + i] += value
            totals[6] += cut
            totals[7] += dropped
    n = max(len(queries), 1)
    mean = [t / n for t in totals]
    if rails is None:
        return EvalResult(len(queries), *mean[:3])
    return EvalResult(len(queries), *mean)
