"""Retrieval evaluation: nDCG@10, recall@10 and MRR over a labelled query set.

Input: JSON lines `{"query": str, "relevant": [str, ...]}`. A relevant entry names a document
by its source URI, by a suffix of it (`guide/install.md`), or by its exact title. Ranking is
over distinct documents (a document's rank is that of its best chunk); relevance is binary.

- nDCG@10 (Järvelin and Kekäläinen, 2002): DCG = sum over ranks r <= 10 of rel_r / log2(r + 1),
  divided by the DCG of the ideal ranking.
- recall@10: relevant documents in the top 10 / relevant documents (at most 10).
- MRR: mean over queries of 1 / rank of the first relevant document (0 if none in the top 10).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

from bot.messages import Passage
from bot.protocols import Retriever

CUTOFF = 10


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    relevant: tuple[str, ...]


@dataclass(frozen=True)
class EvalResult:
    """Mean metrics over `queries` queries, each in [0, 1]."""

    queries: int
    ndcg_at_10: float
    recall_at_10: float
    mrr: float


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


async def evaluate(retriever: Retriever, queries: list[LabelledQuery],
                   chunks_per_query: int = 50) -> EvalResult:
    """Run every query through `retriever` and average the metrics."""
    totals = [0.0, 0.0, 0.0]
    for q in queries:
        docs = rank_documents(await retriever.retrieve(q.query, chunks_per_query))
        for i, value in enumerate(score_query(docs, q.relevant)):
            totals[i] += value
    n = max(len(queries), 1)
    return EvalResult(len(queries), totals[0] / n, totals[1] / n, totals[2] / n)
