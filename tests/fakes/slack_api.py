"""A fake Slack Web API and Socket Mode server on 127.0.0.1, recording every call.

- `POST /api/auth.test`, `/api/chat.postMessage`, `/api/apps.connections.open` (JSON or form);
  `rate_limit_next` makes the next chat.postMessage calls answer 429 with Retry-After: 1.
- `GET /link` (WebSocket): sends `hello`, then every envelope put on `envelopes`; records acks.
- `POST /response/{id}`: a slash command's response_url.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

from aiohttp import WSMsgType, web

from tests.fakes.openai_server import LoopbackServer

BOT_USER_ID = "U0SWITCHBD"
BOT_ID = "B0SWITCHBD"
TEAM_ID = "T0TEAM0001"


class FakeSlack(LoopbackServer):
    def __init__(self) -> None:
        self.update_error: str | None = None  # e.g. "message_not_found": chat.update fails
        super().__init__()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.acks: list[dict[str, Any]] = []
        self.envelopes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.rate_limit_next = 0
        self.socket_auth_fails = False
        self.response_url_status = 200
        self.changed = asyncio.Condition()
        self._ts = 1_700_000_000

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def posts(self) -> list[dict[str, Any]]:
        return [body for method, body in self.calls if method == "chat.postMessage"]

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
        body["_auth"] = request.headers.get("Authorization", "")
        if method == "chat.postMessage" and self.rate_limit_next > 0:
            self.rate_limit_next -= 1
            await self._record("ratelimited", body)
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": "1"})
        await self._record(method, body)
        if method == "auth.test":
            return web.json_response({"ok": True, "user_id": BOT_USER_ID, "bot_id": BOT_ID,
                                      "team_id": TEAM_ID, "user": "switchboard"})
        if method == "apps.connections.open":
            if self.socket_auth_fails:
                return web.json_response({"ok": False, "error": "invalid_auth"})
            return web.json_response({"ok": True, "url": f"ws://127.0.0.1:{self.port}/link"})
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
        return [web.post("/api/{method}", self._api), web.get("/link", self._socket),
                web.post("/response/{id}", self._response_url)]
