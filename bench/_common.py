"""Helpers shared by the benchmarks: percentiles and an isolated bot on embedded services."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from bot.config import Settings, load_settings
from bot.log import configure_logging
from bot.runtime import Runtime

configure_logging("WARNING", "console")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = [str(ROOT / "docs"), str(ROOT / "tests" / "fixtures" / "corpus")]


def summary(samples_s: list[float]) -> str:
    """'median X ms, p99 Y ms (n=N)' of samples in seconds."""
    ordered = sorted(samples_s)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (f"median {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
            f"(n={len(ordered)})")


@asynccontextmanager
async def isolated_runtime(**overrides: object) -> AsyncIterator[Runtime]:
    """A Runtime on a fresh data directory (embedded servers), unless DATABASE_URL/REDIS_URL
    are set, in which case a fresh key prefix is used on those servers."""
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp:
        values: dict[str, object] = {"bot_data_dir": Path(tmp),
                                     "bot_key_prefix": f"bench{os.getpid()}"}
        values.update(overrides)
        settings: Settings = load_settings(**values)
        async with Runtime(settings) as rt:
            yield rt


async def wait_ready(session: aiohttp.ClientSession, url: str, timeout_s: float = 60) -> None:
    """Poll `url/health/ready` until it answers 200.

    Raises:
        TimeoutError: not ready within `timeout_s`.
    """
    for _ in range(int(timeout_s / 0.2)):
        try:
            async with session.get(url + "/health/ready") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} was not ready within {timeout_s:g} s")
