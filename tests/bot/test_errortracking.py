"""Error tracking as an operator with Sentry sees it: an error logged by the bot (with its
exception) arrives as one event, scrubbed like the logs; warnings do not. The Sentry ingest
endpoint is a real HTTP server on loopback; the bot side runs in its own process (the SDK is
process-global)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from aiohttp import web

from tests.fakes.openai_server import LoopbackServer

API_KEY = "sk-errortracking-secret-0042"
SCRIPT = """
import os
from bot import errortracking
from bot.config import load_settings
from bot.log import configure_logging, get_logger
settings = load_settings()
configure_logging("INFO", "json", settings.secret_values())
assert errortracking.start(settings)
log = get_logger("bot.worker")
try:
    raise RuntimeError("the provider refused key " + os.environ["OPENAI_API_KEY"])
except RuntimeError:
    log.exception("message failed; left pending for retry", message_id="m-1",
                  session_token="tok-visible-in-no-event")
log.warning("a warning is not an event")
errortracking.stop()
"""


class FakeSentry(LoopbackServer):
    """`POST /api/{project}/envelope/`: the events of each envelope."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/{project}/envelope/", self._envelope)]

    async def _envelope(self, request: web.Request) -> web.Response:
        body = await request.read()  # (aiohttp undoes the Content-Encoding itself)
        lines = body.split(b"\n")
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if json.loads(header).get("type") == "event":
                self.events.append(json.loads(payload))
        return web.json_response({})


async def test_an_error_becomes_one_scrubbed_event() -> None:
    sentry = await FakeSentry().start()
    try:
        env = {**os.environ, "OPENAI_API_KEY": API_KEY,
               "SENTRY_DSN": f"http://publickey@127.0.0.1:{sentry.port}/42"}
        done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", SCRIPT],
                                       env=env, capture_output=True, text=True, timeout=60)
    finally:
        await sentry.stop()
    assert done.returncode == 0, done.stderr
    [event] = sentry.events
    text = json.dumps(event)
    assert API_KEY not in text and "tok-visible-in-no-event" not in text
    assert "[redacted]" in text
    [exception] = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert exception["value"] == "the provider refused key [redacted]"
    assert event["logger"] == "bot.worker" and event["level"] == "error"
    assert "message failed" in text
    frames = exception["stacktrace"]["frames"]
    assert frames and all("vars" not in frame for frame in frames)  # no local variables
