"""A fake Slack Web API and Socket Mode server on 127.0.0.1, recording every call.

- `POST /api/auth.test`, `/api/chat.postMessage`, `/api/chat.update`,
  `/api/apps.connections.open` (JSON or form; bodies recorded as sent, `blocks` included);
  `rate_limit_next` makes the next chat.postMessage calls answer 429 with Retry-After: 1.
- `GET /api/usergroups.users.list?usergroup=S...`: the members in `usergroups` (group id ->
  user ids), `{"ok": false, "error": "no_such_subteam"}` for another group.
- `GET /link` (WebSocket): sends `hello`, then every envelope put on `envelopes`; records acks.
- `POST /response/{id}`: a slash command's or interaction's response_url (JSON body recorded).
- `failing` (method -> HTTP status): every call of that method is recorded, then answered with
  that status and `{"ok": false, "error": "fatal_error"}` (Slack's answer to an internal
  error), e.g. `{"auth.test": 500}` for a Web API that cannot tell the bot who it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import parse_qs

from aiohttp import WSMsgType, web

from tests.fakes.openai_server import LoopbackServer

BOT_USER_ID = "U0SWITCHBD"
BOT_ID = "B0SWITCHBD"
TEAM_ID = "T0TEAM0001"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def signed_headers(body: bytes, secret: str = SIGNING_SECRET, timestamp: int | None = None,
                   content_type: str = "application/json") -> dict[str, str]:
    """The headers Slack sends with a request to the app: `X-Slack-Signature` =
    "v0=" + hex HMAC-SHA256(secret, "v0:<timestamp>:" + body)
    (https://docs.slack.dev/authentication/verifying-requests-from-slack)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": content_type}


class FakeSlack(LoopbackServer):
    def __init__(self) -> None:
        self.update_error: str | None = None  # e.g. "message_not_found": chat.update fails
        super().__init__()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.acks: list[dict[str, Any]] = []
        self.envelopes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.rate_limit_next = 0
        self.socket_auth_fails = False
        self.bot_auth_fails = False  # auth.test answers {"ok": false, "error": "invalid_auth"}
        self.response_url_status = 200
        self.usergroups: dict[str, list[str]] = {}
        self.failing: dict[str, int] = {}
        self.changed = asyncio.Condition()
        self._ts = 1_700_000_000

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def posts(self) -> list[dict[str, Any]]:
        return [body for method, body in self.calls if method == "chat.postMessage"]

    def called(self, method: str) -> int:
        """How many times `method` was called (failed calls included)."""
        return sum(m == method for m, _ in self.calls)

    def responses(self) -> list[dict[str, Any]]:
        """Bodies posted to response_urls, with the url's `id`."""
        return [body for method, body in self.calls if method == "response_url"]

    async def wait_for(self, predicate: Any, timeout_s: float = 30) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout_s)

    async def _record(self, method: str, body: dict[str, Any]) -> None:
        async with self.changed:
            self.calls.append((method, body))
            self.changed.notify_all()

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        raw = await request.read()
        if request.content_type == "application/json":
            body = json.loads(raw) if raw else {}
        else:
            body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        body.update(request.query)
        body["_auth"] = request.headers.get("Authorization", "")
        if method == "chat.postMessage" and self.rate_limit_next > 0:
            self.rate_limit_next -= 1
            await self._record("ratelimited", body)
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": "1"})
        await self._record(method, body)
        if method in self.failing:
            return web.json_response({"ok": False, "error": "fatal_error"},
                                     status=self.failing[method])
        if method == "auth.test" and self.bot_auth_fails:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if method == "auth.test":
            return web.json_response({"ok": True, "user_id": BOT_USER_ID, "bot_id": BOT_ID,
                                      "team_id": TEAM_ID, "user": "switchboard"})
        if method == "apps.connections.open":
            if self.socket_auth_fails:
                return web.json_response({"ok": False, "error": "invalid_auth"})
            return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"})
        if method == "usergroups.users.list":
            group = str(body.get("usergroup", ""))
            if group not in self.usergroups:
                return web.json_response({"ok": False, "error": "no_such_subteam"})
            return web.json_response({"ok": True, "users": self.usergroups[group]})
        if method == "chat.update" and self.update_error:
            return web.json_response({"ok": False, "error": self.update_error})
        if method == "chat.update":
            return web.json_response({"ok": True, "channel": body.get("channel"),
                                      "ts": body.get("ts"), "text": body.get("text")})
        if method == "chat.postMessage":
            self._ts += 1
            return web.json_response({"ok": True, "channel": body.get("channel"),
                                      "ts": f"{self._ts}.000100"})
        return web.json_response({"ok": False, "error": "unknown_method"}, status=404)

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1,
                                      "connection_info": {"app_id": "A0APP"}}))

        async def pump() -> None:
            while True:
                envelope = await self.envelopes.get()
                await ws.send_str(json.dumps(envelope))

        sender = asyncio.create_task(pump())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    async with self.changed:
                        self.acks.append(json.loads(msg.data))
                        self.changed.notify_all()
        finally:
            sender.cancel()
        return ws

    async def _response_url(self, request: web.Request) -> web.Response:
        await self._record("response_url", {"id": request.match_info["id"],
                                            **(await request.json())})
        return web.Response(text="ok", status=self.response_url_status)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/{method}", self._api), web.get("/api/{method}", self._api),
                web.get("/link", self._socket),
                web.post("/response/{id}", self._response_url)]
