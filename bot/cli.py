"""The `bot` command line (typer). Every command reads settings from the environment and `.env`
and, when `DATABASE_URL` / `REDIS_URL` are unset, runs on the embedded servers.

Exit codes: 0 success, 1 a command-level failure (no answer, a source that failed to ingest),
2 a configuration error or an unreachable service (one line on stderr naming the cause).
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.cli_actions import actions_app
from bot.cli_common import err, out, usable_cores
from bot.cli_common import error as _error
from bot.cli_common import run as _run
from bot.cli_common import settings as _settings
from bot.cli_eval import eval_app
from bot.cli_rails import rails_app
from bot.messages import Reply

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Switchboard: a chat bot that answers from your knowledge base.")
app.add_typer(eval_app, name="eval")
dlq_app = typer.Typer(no_args_is_help=True,
                      help="Messages that failed BOT_MAX_DELIVERIES times (dead letters).")
app.add_typer(dlq_app, name="dlq")
app.add_typer(rails_app, name="rails")
app.add_typer(actions_app, name="actions")
def _reply_json(reply: Reply) -> dict[str, Any]:
    return {"answer": reply.text,
            "sources": [{"uri": s.uri, "title": s.title, "score": s.score} for s in reply.sources],
            "filtered": [{"uri": f.uri, "reason": f.reason, "score": f.score,
                          "removed_chars": f.removed_chars} for f in reply.filtered]}


def _filtered_note(reply: Reply) -> str:
    """What the passage rails kept from the model, for a terminal ("" when nothing)."""
    if not reply.filtered:
        return ""
    lines = ["", "Removed from the retrieved passages (not shown to the model):"]
    lines += [f"- {f.uri}: {f.reason}; {f.removed_chars} characters, score {f.score:.2f}"
              for f in reply.filtered]
    return "\n".join(lines)


@app.command()
def ingest(sources: Annotated[list[str], typer.Argument(
        help="Files, folders (recursive) and http(s) URLs of .md .txt .html .pdf .docx")]) -> None:
    """Load, chunk, embed and store documents; unchanged ones are skipped. The embedder uses
    every core this process may run on, unless EMBEDDING_THREADS is set.

    Two bars on stderr: documents done, and new chunks embedded (its total grows as each
    document is chunked). Log records written meanwhile go above the bars on a terminal.
    Afterwards one line per source that failed (`failed: ...`, exit code 1) or that was read
    with a repair (`warning: ...`), then the counts. A folder without a supported file stops
    before anything starts: `error: no supported files in DIR (supported: ...)`, exit code 1.
    """
    settings = _settings()
    if "embedding_threads" not in settings.model_fields_set:
        # nothing else runs in this process: the embedder may use every core it is allowed
        # (EMBEDDING_THREADS, when set, wins: say 1 beside a `bot run` on the same machine)
        settings = settings.model_copy(update={"embedding_threads": usable_cores()})

    async def main() -> int:
        import logging

        from bot.runtime import Runtime
        from knowledge.loaders import expand_sources

        expanded = expand_sources(sources)
        stderr = sys.stderr
        async with Runtime(settings) as rt:
            with Progress(TextColumn("[bold]{task.fields[unit]:<9}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(),
                          TextColumn("{task.description}"), console=err,
                          transient=False) as progress:
                docs = progress.add_task("", total=len(expanded), unit="documents")
                chunks = progress.add_task("", total=0, unit="chunks")

                class Bars:
                    def started(self, source: str) -> None:
                        progress.update(docs, description=Path(source).name)

                    def planned(self, source: str, count: int) -> None:
                        total = progress.tasks[chunks].total or 0
                        progress.update(chunks, total=total + count, description="embedding")

                    def embedded(self, source: str, count: int) -> None:
                        progress.update(chunks, advance=count)

                    def finished(self, source: str) -> None:
                        progress.update(docs, advance=1)

                # on a terminal rich replaces sys.stderr with a proxy that prints above the
                # bars; the log handler still holds the real stderr, so point it there too
                moved = [h for h in logging.getLogger().handlers if sys.stderr is not stderr
                         and isinstance(h, logging.StreamHandler) and h.stream is stderr]
                for handler in moved:
                    handler.setStream(sys.stderr)
                try:
                    report = await rt.ingestor().ingest(expanded, Bars())
                finally:
                    for handler in moved:
                        handler.setStream(stderr)
                progress.update(chunks, description="")
        for _source, problem in report.failures:
            _error(f"failed: {problem}")
        for _source, warning in report.warnings:
            _error(f"warning: {warning}")
        if report.wrote_nothing and not report.failures:
            out.print(f"nothing changed: {report.documents} documents up to date, "
                      f"{report.chunks_unchanged} chunks unchanged ({report.seconds:.1f} s)")
        else:
            out.print(f"documents: {report.documents} ({report.documents_changed} changed); "
                      f"chunks: {report.chunks_added} added, {report.chunks_unchanged} "
                      f"unchanged, {report.chunks_removed} removed; {report.seconds:.1f} s")
        return 1 if report.failures else 0

    _run(main())


@app.command()
def ask(question: str,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        conversation: Annotated[str | None, typer.Option(
            help="Continue this conversation (its memory); default: a new one.")] = None,
        timeout_s: Annotated[float, typer.Option("--timeout", min=1.0,
                                                 help="Seconds to wait.")] = 120.0,
        ) -> None:
    """Ask one question and print the answer with numbered sources, and what the passage rails
    removed from the retrieved text, if anything (`--json`: {"answer", "sources",
    "filtered": [{"uri", "reason", "score", "removed_chars"}]}). A question that shows
    nothing (only spaces, zero-width or bidi control characters) exits 2."""
    from bot.messages import is_blank

    if is_blank(question):
        _error("error: the question is empty")
        raise typer.Exit(2)
    settings = _settings()

    async def main() -> int:
        from bot.runtime import Runtime

        async with Runtime(settings) as rt:
            rt.start_workers(1)
            reply = await rt.console.ask(question, conversation or f"ask-{uuid.uuid4().hex}",
                                         timeout_s)
        if reply is None:
            _error(f"error: no answer within {timeout_s:g} s")
            return 1
        if as_json:
            sys.stdout.write(json.dumps(_reply_json(reply), ensure_ascii=False) + "\n")
        else:
            out.print(reply.render(), markup=False, highlight=False)
            if note := _filtered_note(reply):  # one line per removal, however wide
                out.print(note, markup=False, highlight=False, soft_wrap=True)
        return 0

    _run(main())


@app.command()
def chat(conversation: Annotated[str | None, typer.Option(
            help="Resume this conversation; default: a new one.")] = None,
         timeout_s: Annotated[float, typer.Option("--timeout", min=1.0,
                                                  help="Seconds to wait for each answer.")
                              ] = 120.0) -> None:
    """Talk to the bot in the terminal; it remembers earlier turns. /help lists the chat's
    commands; Ctrl-C stops waiting for an answer; Ctrl-D, /quit or Ctrl-C at an empty prompt
    leaves. Piped stdin is read line by line."""
    settings = _settings()

    async def main() -> int:
        from bot.cli_chat import new_conversation, run_chat
        from bot.runtime import Runtime

        async with Runtime(settings) as rt:
            rt.start_workers(1)
            await run_chat(rt.console, conversation or new_conversation(),
                           settings.bot_data_dir / "chat_history", timeout_s)
            # Leaving is at once: a question whose answer was cancelled is not waited for
            # (the worker is cancelled; the message stays pending on the inbox).
            await rt.stop_workers(grace_s=min(1.0, settings.bot_shutdown_grace_s))
        return 0

    _run(main())


@app.command()
def run(workers: Annotated[int | None, typer.Option(
            help="Messages in flight in this process (default BOT_CONCURRENCY; 0 = ingress "
                 "only).")] = None,
        host: Annotated[str | None, typer.Option(help="Default BOT_HTTP_HOST.")] = None,
        port: Annotated[int | None, typer.Option(help="Default BOT_HTTP_PORT.")] = None) -> None:
    """Serve the webhook adapter and health endpoints, with engine workers."""
    settings = _settings(quiet=False)
    from bot.server import serve

    _run(serve(settings, workers=settings.concurrency if workers is None else workers,
               host=host or settings.bot_http_host,
               port=settings.bot_http_port if port is None else port, http=True))


@app.command()
def worker(workers: Annotated[int | None, typer.Option(
        help="Messages in flight in this process (default BOT_CONCURRENCY).")] = None,
        port: Annotated[int | None, typer.Option(
            help="Serve /health/live, /health/ready and /metrics on this port of "
                 "BOT_HTTP_HOST (default BOT_METRICS_PORT; 0 = none).")] = None) -> None:
    """Run engine workers only (no webhooks); scale out by starting more of these."""
    settings = _settings(quiet=False)
    from bot.server import serve

    _run(serve(settings, workers=max(1, settings.concurrency if workers is None else workers),
               host=settings.bot_http_host,
               port=settings.bot_metrics_port if port is None else port, http=False))


@app.command()
def admin(port: Annotated[int, typer.Option(
              help="Port on 127.0.0.1 (0: a free one, printed).")] = 0,
          browser: Annotated[bool, typer.Option(
              help="Open the console in the default browser.")] = True) -> None:
    """Open the admin console on this machine: conversations, overview, knowledge base,
    dead letters (no login unless ADMIN_TOKEN is set; loopback only)."""
    settings = _settings(quiet=False)
    from bot.cli_admin import serve_admin

    _run(serve_admin(settings, port=port, open_browser=browser))


@app.command()
def migrate() -> None:
    """Apply pending database migrations and create the inbox's consumer group (start-up does
    this too, unless BOT_MIGRATE_ON_START is false)."""
    settings = _settings()

    async def main() -> int:
        from bot.runtime import Runtime

        async with Runtime(settings, migrate=True):
            pass
        out.print("schema up to date")
        return 0

    _run(main())


@app.command()
def forget(source: str) -> None:
    """Soft-delete a source (a path or URL as ingested); retrieval no longer returns it."""
    from knowledge.loaders import is_url

    settings = _settings()
    uri = source if is_url(source) else str(Path(source).expanduser().resolve())

    async def main() -> int:
        from bot.runtime import Runtime

        async with Runtime(settings) as rt:
            found = await rt.store.forget(uri)
        if not found:
            _error(f"error: no ingested source {uri}")
            return 1
        out.print(f"forgotten: {uri}", markup=False, highlight=False)
        return 0

    _run(main())


@dlq_app.command("list")
def dlq_list(limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 100,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show dead-lettered messages, oldest first, with their error."""
    settings = _settings()

    async def main() -> int:
        from bot.runtime import Runtime

        async with Runtime(settings) as rt:
            letters = await rt.inbox.dead_letters(limit)
        if as_json:
            sys.stdout.write(json.dumps([
                {"id": d.id, "message_id": d.message.id if d.message else None,
                 "conversation": d.message.conversation.key if d.message else None,
                 "error": d.error, "attempts": d.attempts} for d in letters]) + "\n")
            return 0
        if not letters:
            out.print("no dead letters")
        for d in letters:
            what = f"{d.message.id} ({d.message.conversation.key})" if d.message else "?"
            out.print(f"{d.id}  {what}  attempts={d.attempts}  error={d.error}",
                      markup=False, highlight=False)
        return 0

    _run(main())


@dlq_app.command("retry")
def dlq_retry(ids: Annotated[list[str] | None, typer.Argument(
                  help="Dead-letter ids from `bot dlq list`.")] = None,
              all_: Annotated[bool, typer.Option("--all", help="Retry every one.")] = False
              ) -> None:
    """Put dead-lettered messages back on the inbox."""
    settings = _settings()
    if not ids and not all_:
        _error("error: name dead-letter ids or pass --all")
        raise typer.Exit(2)

    async def main() -> int:
        from bot.runtime import Runtime

        async with Runtime(settings) as rt:
            requeued, missing = await rt.inbox.retry_dead_letters(None if all_ else ids)
        for i in missing:
            _error(f"error: no dead letter {i}")
        out.print(f"requeued {requeued}")
        return 1 if missing else 0

    _run(main())


@app.command()
def preflight(as_json: Annotated[bool, typer.Option(
        "--json", help='One JSON object: {"ok": bool, "checks": [{"name", "status", "detail", '
                       '"remedy"}]}.')] = False) -> None:
    """Check a deployment before traffic: database, pgvector, migrations, Redis and the
    consumer group, the embedder, the LLM endpoints, each platform's token, the secrets
    enabled endpoints need. One line per check; exit 1 on any failure."""
    from bot.cli_preflight import preflight as run_preflight

    run_preflight(as_json)


def main() -> None:
    """Console-script entry point."""
    app()
