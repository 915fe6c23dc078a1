"""A fake Discord REST API and gateway on 127.0.0.1.

REST (`/api/v10`): users/@me, oauth2/applications/@me, channel messages and typing, the
interaction webhook (`PATCH`/`DELETE .../messages/@original`, follow-up `POST`), interaction
responses (`POST /interactions/{id}/{token}/callback`, for gateway interactions), the bulk overwrite
of global commands (`PUT /applications/{app}/commands`, echoed with ids; `commands_status`
other than 200 makes it fail). Every call is recorded with its JSON body; responses carry
`Content-Type: application/json` exactly (discord.py parses nothing else); `rate_limit_next`
makes the next channel message answer 429 with `retry_after`
(https://discord.com/developers/docs/topics/rate-limits#exceeding-a-rate-limit) and `Via`
(without it discord.py's discord/http.py takes a 429 for a Cloudflare ban).
`route_limit = (limit, window_s)` makes channel messages a rate-limit bucket per channel, as
https://discord.com/developers/docs/topics/rate-limits describes: every answer carries
`X-RateLimit-Bucket`, `-Limit`, `-Remaining` and `-Reset-After`, and a post beyond `limit`
within the window answers 429 (recorded as "429") with the seconds left as `retry_after`.
Gateway (`/gateway`): HELLO, IDENTIFY (recorded, with its intents), READY, a GUILD_CREATE with
one text channel and one thread, heartbeat ACKs, then every event put on `events`
(`interaction_create` builds an INTERACTION_CREATE).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.openai_server import LoopbackServer

BOT_ID = "1100000000000000001"
APP_ID = "1100000000000000002"
GUILD_ID = "1200000000000000001"
CHANNEL_ID = "1300000000000000001"
THREAD_ID = "1300000000000000002"
DM_CHANNEL_ID = "1300000000000000003"
ROLE_ID = "1600000000000000001"  # the guild's "Support" role


def _json(payload: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(body=json.dumps(payload).encode(), status=status,
                        headers={"Content-Type": "application/json", **headers})


class FakeDiscord(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = []
        self.identify: dict[str, Any] | None = None
        #: gateway dispatches to send: a MESSAGE_CREATE payload, or (event name, payload)
        self.events: asyncio.Queue[dict[str, Any] | tuple[str, dict[str, Any]]] = \
            asyncio.Queue()
        self.rate_limit_next = 0
        self.route_limit: tuple[int, float] | None = None
        self._windows: dict[str, tuple[float, int]] = {}  # channel -> (window start, posts)
        self.reject_from_post = -1  # with rate_limit_next: start rate limiting at that post
        self.refuse_intents = False
        self.commands_status = 200
        #: the next N calls on an interaction's webhook answer 404 Unknown Webhook, as
        #: Discord does before it has the interaction's initial response
        self.webhook_unknown = 0
        #: when set, GET /oauth2/applications/@me waits until it is (Discord being slow)
        self.app_gate: asyncio.Event | None = None
        self.changed = asyncio.Condition()
        self._id = 1400000000000000000
        self._seq = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        return [(path, body or {}) for method, path, body, _ in self.calls
                if method == "POST" and path.endswith("/messages")]

    def bodies(self, method: str, path: str) -> list[Any]:
        """The JSON bodies of the calls of `method` on `path` (relative to /api/v10)."""
        return [body for m, p, body, _ in self.calls if m == method and p == path]

    async def wait_for(self, predicate: Any, timeout_s: float = 30) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout_s)

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        async with self.changed:
            self.calls.append((request.method, request.path.removeprefix("/api/v10"), body,
                               {"authorization": request.headers.get("Authorization", "")}))
            self.changed.notify_all()
        return body

    async def _me(self, request: web.Request) -> web.Response:
        await self._record(request)
        return _json({"id": BOT_ID, "username": "switchboard", "discriminator": "0",
                      "global_name": None, "avatar": None, "bot": True, "flags": 0})

    async def _app(self, request: web.Request) -> web.Response:
        if self.app_gate is not None:
            await self.app_gate.wait()
        await self._record(request)
        return _json({"id": APP_ID, "name": "Switchboard", "icon": None, "description": "",
                      "bot_public": True, "bot_require_code_grant": False,
                      "verify_key": "00" * 32, "flags": 0, "team": None,
                      "owner": {"id": "1", "username": "owner", "discriminator": "0",
                                "avatar": None}})

    def _route_bucket(self, channel: str) -> tuple[dict[str, str], float | None]:
        """Count one post on `channel`'s bucket: its headers, and the wait when it is over."""
        assert self.route_limit is not None
        limit, window_s = self.route_limit
        now = time.monotonic()
        start, posts = self._windows.get(channel, (now, 0))
        if now - start >= window_s:
            start, posts = now, 0
        reset_after = window_s - (now - start)
        over = posts >= limit
        if not over:
            posts += 1
            self._windows[channel] = (start, posts)
        headers = {"X-RateLimit-Bucket": "fake-channel-messages",
                   "X-RateLimit-Limit": str(limit),
                   "X-RateLimit-Remaining": str(max(0, limit - posts)),
                   "X-RateLimit-Reset-After": f"{reset_after:.3f}"}
        return headers, reset_after if over else None

    async def _channel_message(self, request: web.Request) -> web.Response:
        limit_headers: dict[str, str] = {}
        if self.route_limit is not None:
            limit_headers, wait = self._route_bucket(request.match_info["channel"])
            if wait is not None:
                async with self.changed:
                    self.calls.append(("429", request.path, None, {}))
                return _json({"message": "You are being rate limited.",
                              "retry_after": round(wait, 3), "global": False}, 429,
                             **limit_headers, **{"Retry-After": str(math.ceil(wait)),
                                                 "X-RateLimit-Scope": "user",
                                                 "Via": "1.1 google"})
        if self.rate_limit_next > 0 and len(self.messages()) >= self.reject_from_post:
            self.rate_limit_next -= 1
            async with self.changed:
                self.calls.append(("429", request.path, None, {}))
            return _json({"message": "You are being rate limited.", "retry_after": 0.5,
                          "global": False}, 429, **{"Retry-After": "1", "Via": "1.1 google"})
        body = await self._record(request)
        self._id += 1
        return _json({"id": str(self._id), "channel_id": request.match_info["channel"],
                      "content": (body or {}).get("content", ""), "type": 0}, 200, **limit_headers)

    async def _ok(self, request: web.Request) -> web.Response:
        if "/webhooks/" in request.path and self.webhook_unknown > 0:
            self.webhook_unknown -= 1
            async with self.changed:
                self.calls.append(("404", request.path.removeprefix("/api/v10"), None, {}))
            return _json({"message": "Unknown Webhook", "code": 10015}, 404)
        await self._record(request)
        if request.method == "DELETE" or request.path.endswith(("/typing", "/callback")):
            return web.Response(status=204)
        self._id += 1
        return _json({"id": str(self._id), "type": 0, "content": ""})

    async def _commands(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        if self.commands_status != 200:
            return _json({"message": "Invalid Form Body", "code": 50035}, self.commands_status)
        echoed = []
        for command in body or []:
            self._id += 1
            echoed.append({**command, "id": str(self._id), "version": str(self._id),
                           "application_id": request.match_info["app"]})
        return _json(echoed)

    async def _send(self, ws: web.WebSocketResponse, kind: str, data: Any) -> None:
        self._seq += 1
        await ws.send_str(json.dumps({"op": 0, "t": kind, "s": self._seq, "d": data}))

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        pump: asyncio.Task[None] | None = None
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            if frame["op"] == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif frame["op"] == 2:
                async with self.changed:
                    self.identify = frame["d"]
                    self.changed.notify_all()
                if self.refuse_intents:
                    await ws.close(code=4014, message=b"Disallowed intent(s).")
                    break
                await self._send(ws, "READY", {
                    "v": 10, "user": {"id": BOT_ID, "username": "switchboard",
                                      "discriminator": "0", "avatar": None, "bot": True},
                    "guilds": [{"id": GUILD_ID, "unavailable": True}],
                    "session_id": "fake-session", "private_channels": [],
                    "resume_gateway_url": self.gateway_url,
                    "application": {"id": APP_ID, "flags": 0}})
                await self._send(ws, "GUILD_CREATE", guild())
                pump = asyncio.create_task(self._pump(ws))
        if pump is not None:
            pump.cancel()
        return ws

    async def _pump(self, ws: web.WebSocketResponse) -> None:
        while True:
            event = await self.events.get()
            kind, data = event if isinstance(event, tuple) else ("MESSAGE_CREATE", event)
            await self._send(ws, kind, data)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/v10/users/@me", self._me),
                web.get("/api/v10/oauth2/applications/@me", self._app),
                web.post("/api/v10/channels/{channel}/messages", self._channel_message),
                web.post("/api/v10/channels/{channel}/typing", self._ok),
                web.patch("/api/v10/channels/{channel}/messages/{message}", self._ok),
                web.patch("/api/v10/webhooks/{app}/{token}/messages/@original", self._ok),
                web.delete("/api/v10/webhooks/{app}/{token}/messages/@original", self._ok),
                web.post("/api/v10/webhooks/{app}/{token}", self._ok),
                web.post("/api/v10/interactions/{id}/{token}/callback", self._ok),
                web.put("/api/v10/applications/{app}/commands", self._commands),
                web.get("/gateway", self._gateway)]


def guild() -> dict[str, Any]:
    return {
        "id": GUILD_ID, "name": "Test guild", "icon": None, "owner_id": "1",
        "afk_timeout": 300, "verification_level": 0, "default_message_notifications": 0,
        "explicit_content_filter": 0, "features": [], "mfa_level": 0, "premium_tier": 0,
        "system_channel_flags": 0, "nsfw_level": 0, "preferred_locale": "en-US",
        "member_count": 2, "large": False, "unavailable": False, "joined_at": None,
        "roles": [{"id": GUILD_ID, "name": "@everyone", "permissions": "0", "position": 0,
                   "color": 0, "hoist": False, "managed": False, "mentionable": False,
                   "flags": 0},
                  {"id": ROLE_ID, "name": "Support", "permissions": "0", "position": 1,
                   "color": 0, "hoist": False, "managed": False, "mentionable": False,
                   "flags": 0}],
        "emojis": [], "stickers": [], "members": [], "voice_states": [], "presences": [],
        "channels": [{"id": CHANNEL_ID, "type": 0, "guild_id": GUILD_ID, "name": "general",
                      "position": 0, "permission_overwrites": [], "nsfw": False,
                      "parent_id": None}],
        "threads": [{"id": THREAD_ID, "type": 11, "guild_id": GUILD_ID, "name": "help thread",
                     "parent_id": CHANNEL_ID, "owner_id": "42", "message_count": 1,
                     "member_count": 2,
                     "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                         "archive_timestamp": "2026-11-21T00:00:00+00:00",
                                         "locked": False}}],
    }


def message_create(content: str, *, channel: str = CHANNEL_ID, guild_id: str | None = GUILD_ID,
                   author_id: str = "42", bot: bool = False, mention_bot: bool = False,
                   message_id: str = "1500000000000000001", roles: tuple[str, ...] = ()
                   ) -> dict[str, Any]:
    """A MESSAGE_CREATE payload as Discord documents it (developers/resources/message);
    in a guild the author's partial `member` has `roles` (role ids)."""
    author = {"id": author_id, "username": "ada", "discriminator": "0", "avatar": None,
              "global_name": "Ada", "bot": bot}
    data: dict[str, Any] = {
        "id": message_id, "channel_id": channel, "author": author, "content": content,
        "timestamp": "2026-11-21T12:00:00.000000+00:00", "edited_timestamp": None,
        "tts": False, "mention_everyone": False,
        "mentions": ([{"id": BOT_ID, "username": "switchboard", "discriminator": "0",
                       "avatar": None, "bot": True}] if mention_bot else []),
        "mention_roles": [], "attachments": [], "embeds": [], "pinned": False, "type": 0}
    if guild_id:
        data["guild_id"] = guild_id
        data["member"] = {"roles": list(roles), "joined_at": "2026-01-01T00:00:00+00:00",
                          "deaf": False, "mute": False, "flags": 0}
    return data


def interaction_create(kind: int, data: dict[str, Any], *, interaction_id: str,
                       user_id: str = "42", roles: tuple[str, ...] = (),
                       message: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """A gateway INTERACTION_CREATE in a guild text channel, as Discord documents the
    interaction object (developers/interactions/receiving-and-responding): `kind` 2 is an
    application command, 3 a message component (`message` is the message holding it)."""
    payload: dict[str, Any] = {
        "id": interaction_id, "application_id": APP_ID, "type": kind, "data": data,
        "guild_id": GUILD_ID, "channel_id": CHANNEL_ID,
        "channel": {"id": CHANNEL_ID, "type": 0, "guild_id": GUILD_ID, "name": "general"},
        "member": {"user": {"id": user_id, "username": "ada", "discriminator": "0",
                            "avatar": None, "global_name": "Ada"},
                   "roles": list(roles), "permissions": "2248473465835073",
                   "joined_at": "2026-01-01T00:00:00+00:00", "deaf": False, "mute": False,
                   "flags": 0},
        "token": f"gateway-interaction-token-{interaction_id}", "version": 1,
        "app_permissions": "2248473465835073", "locale": "en-US", "guild_locale": "en-US",
        "entitlements": [], "authorizing_integration_owners": {"0": GUILD_ID}, "context": 0,
        "attachment_size_limit": 10485760}
    if message is not None:
        payload["message"] = message
    return "INTERACTION_CREATE", payload
