"""What every `bot` subcommand module shares: the consoles, one-line errors, settings with
the CLI's log level, and running a command's coroutine to an exit code (see bot/cli.py for the
codes)."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Coroutine
from typing import Any

import typer
from rich.console import Console

from bot.config import Settings, load_settings
from bot.errors import BotError, ConfigError, ServiceUnavailable

out = Console()
err = Console(stderr=True)


def error(line: str) -> None:
    """One unwrapped line on stderr (rich would wrap it at the terminal width)."""
    sys.stderr.write(line.rstrip() + "\n")


def settings(quiet: bool = True) -> Settings:
    """The settings (exit 2 with one line on a configuration error), logging configured: at
    WARNING unless BOT_LOG_LEVEL is set, when `quiet`."""
    from bot.log import configure_logging  # (structlog: not for --help)

    try:
        loaded = load_settings()
    except ConfigError as exc:
        error(f"error: {exc}")
        raise typer.Exit(2) from None
    level = loaded.bot_log_level
    if quiet and "BOT_LOG_LEVEL" not in os.environ:
        level = "WARNING"
    configure_logging(level, loaded.bot_log_format, loaded.secret_values())
    return loaded


def run(coro: Coroutine[Any, Any, int]) -> None:
    """Run a command's coroutine and exit with its code; errors become one line on stderr
    (exit 2: configuration or an unreachable service; 1: other failures, with a trace id)."""
    try:
        code = asyncio.run(coro)
    except (ConfigError, ServiceUnavailable) as exc:
        error(f"error: {exc}")
        raise typer.Exit(2) from None
    except BotError as exc:
        error(f"error: {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as exc:  # a bug or an unexpected failure: no traceback on the terminal
        from bot.log import get_logger

        trace_id = uuid.uuid4().hex[:12]
        get_logger("bot.cli").error("command failed", trace_id=trace_id,
                                    error=type(exc).__name__, exc_info=exc)
        error(f"error: unexpected {type(exc).__name__} (trace id {trace_id})")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, so a container's or `taskset`'s
    limit counts), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
