"""`bot eval ...`: measure the bot on your own data."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bot.config import RetrievalMode

if TYPE_CHECKING:  # imported when used: `bot --help` does not pay for them
    from bot.messages import Passage
    from bot.runtime import Runtime
    from knowledge.evaluate import PassageFilter

eval_app = typer.Typer(no_args_is_help=True, help="Measure the bot.")


@eval_app.command("retrieval")
def eval_retrieval(
        queries: Annotated[Path, typer.Argument(
            help='JSON lines: {"query": str, "relevant": [uri, uri suffix or title, ...]}')],
        mode: Annotated[str, typer.Option(help="dense, lexical, hybrid or all")] = "all",
        as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Report nDCG@10, recall@10 and MRR of retrieval on a labelled query set, and the same
    retrieval after the passage rails: nDCG@10 of what they let through, and how many of the
    top 10 documents they cut (cut@10) or dropped (dropped@10), per query ("-" when the
    policy turns the passage check off)."""
    from bot.cli_common import error as _error
    from bot.cli_common import out
    from bot.cli_common import run as _run
    from bot.cli_common import settings as _settings
    from knowledge.evaluate import evaluate, read_queries

    settings = _settings()

    try:
        labelled = read_queries(queries.read_text(encoding="utf-8").splitlines())
        modes = list(RetrievalMode) if mode == "all" else [RetrievalMode(mode)]
    except (OSError, ValueError) as exc:
        _error(f"error: {queries}: {exc}")
        raise typer.Exit(2) from None

    async def main() -> int:
        from bot.runtime import Runtime

        results = {}
        async with Runtime(settings) as rt:
            rails = _passage_filter(rt)
            for m in modes:
                results[m.value] = await evaluate(rt.knowledge_retriever(m), labelled,
                                                  rails=rails)
        if as_json:
            sys.stdout.write(json.dumps({k: vars(v) for k, v in results.items()}) + "\n")
        else:
            out.print(f"{'mode':<8} {'queries':>7} {'nDCG@10':>8} {'recall@10':>9} {'MRR':>6}"
                      f" {'railed nDCG@10':>14} {'cut@10':>6} {'dropped@10':>10}")
            for name, r in results.items():
                railed = [f"{x:.3f}" if x is not None else "-"
                          for x in (r.railed_ndcg_at_10, r.cut_at_10, r.dropped_at_10)]
                out.print(f"{name:<8} {r.queries:>7} {r.ndcg_at_10:>8.3f} {r.recall_at_10:>9.3f} "
                          f"{r.mrr:>6.3f} {railed[0]:>14} {railed[1]:>6} {railed[2]:>10}")
        return 0

    _run(main())


def _passage_filter(rt: Runtime) -> PassageFilter | None:
    """The runtime's passage rails as `knowledge.evaluate` applies them, or None when the
    policy has no passage check."""
    from bot.guardrails.rails import kept_passage

    injection = rt.guardrails.injection
    if injection is None or not rt.guardrails.passage_injection:
        return None

    async def rails(passages: list[Passage]) -> list[Passage | None]:
        checks = await injection.filter_passages(passages)
        return [kept_passage(p, c) for p, c in zip(passages, checks, strict=True)]

    return rails
