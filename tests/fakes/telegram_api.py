"""A fake Telegram Bot API server on 127.0.0.1: `/bot<token>/<method>` answers getMe,
sendMessage, editMessageText, editMessageReplyMarkup, sendChatAction, answerCallbackQuery,
setMyCommands, getChatMember, deleteWebhook and getUpdates (long polling over a queue of
updates, honouring `offset`), and records every call with its parameters (JSON-encoded values
such as `reply_markup` and `commands` decoded). `rate_limit_next` makes the next sendMessage
calls answer 429 with `retry_after: 1`. getChatMember answers "creator" for `creators`,
"administrator" for `admins` (chat id -> user ids), "member" otherwise. `errors` (method ->
description) makes every call of that method (getMe included) fail with `error_status` (400
unless set) and that description; the failed calls are recorded too."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from tests.fakes.openai_server import LoopbackServer

BOT_ID = 7000000001
BOT_USERNAME = "switchboard_test_bot"
TOKEN = f"{BOT_ID}:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"


class FakeTelegram(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.updates: list[dict[str, Any]] = []
        self.rate_limit_next = 0
        self.admins: dict[int, set[int]] = {}
        self.creators: dict[int, int] = {}
        self.errors: dict[str, str] = {}
        self.error_status = 400
        self.changed = asyncio.Condition()
        self._message_id = 5000

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sent(self) -> list[dict[str, Any]]:
        return [p for m, p in self.calls if m == "sendMessage"]

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]

    def params(self, method: str) -> list[dict[str, Any]]:
        """The parameters of every call of `method`, in order."""
        return [p for m, p in self.calls if m == method]

    async def wait_for(self, predicate: Any, timeout_s: float = 30) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout_s)

    async def push(self, update: dict[str, Any]) -> None:
        async with self.changed:
            self.updates.append(update)
            self.changed.notify_all()

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            return dict(await request.json())
        form = await request.post()
        params: dict[str, Any] = {}
        for key, value in form.items():
            try:
                params[key] = json.loads(str(value))
            except ValueError:
                params[key] = str(value)
        return params

    async def _method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TOKEN:
            return web.json_response({"ok": False, "error_code": 401,
                                      "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params = await self._params(request)
        if method == "sendMessage" and self.rate_limit_next > 0:
            self.rate_limit_next -= 1
            async with self.changed:
                self.calls.append(("ratelimited", params))
            return web.json_response({"ok": False, "error_code": 429,
                                      "description": "Too Many Requests: retry after 1",
                                      "parameters": {"retry_after": 1}}, status=429)
        if method == "getUpdates":
            return web.json_response({"ok": True, "result": await self._get_updates(params)})
        async with self.changed:
            self.calls.append((method, params))
            self.changed.notify_all()
        if method in self.errors:
            return web.json_response({"ok": False, "error_code": self.error_status,
                                      "description": self.errors[method]},
                                     status=self.error_status)
        if method == "getMe":
            return web.json_response({"ok": True, "result": {
                "id": BOT_ID, "is_bot": True, "first_name": "Switchboard",
                "username": BOT_USERNAME, "can_join_groups": True,
                "can_read_all_group_messages": False, "supports_inline_queries": False}})
        if method == "getChatMember":
            return web.json_response({"ok": True, "result": self._member(
                int(params["chat_id"]), int(params["user_id"]))})
        if method == "editMessageReplyMarkup":
            return web.json_response({"ok": True, "result": {
                "message_id": int(params["message_id"]), "date": int(time.time()),
                "chat": {"id": params["chat_id"], "type": "supergroup"}, "text": "..."}})
        if method == "editMessageText":
            return web.json_response({"ok": True, "result": {
                "message_id": int(params["message_id"]), "date": int(time.time()),
                "edit_date": int(time.time()),
                "chat": {"id": params["chat_id"], "type": "private"},
                "text": params.get("text", "")}})
        if method == "sendMessage":
            self._message_id += 1
            return web.json_response({"ok": True, "result": {
                "message_id": self._message_id, "date": int(time.time()),
                "chat": {"id": params["chat_id"], "type": "private"},
                "text": params.get("text", "")}})
        return web.json_response({"ok": True, "result": True})

    def _member(self, chat_id: int, user_id: int) -> dict[str, Any]:
        """A ChatMember as the Bot API returns it (every field PTB requires)."""
        user = {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"}
        if self.creators.get(chat_id) == user_id:
            return {"status": "creator", "user": user, "is_anonymous": False}
        if user_id in self.admins.get(chat_id, set()):
            rights = ("can_be_edited", "is_anonymous", "can_manage_chat", "can_delete_messages",
                      "can_manage_video_chats", "can_restrict_members", "can_promote_members",
                      "can_change_info", "can_invite_users", "can_post_stories",
                      "can_edit_stories", "can_delete_stories")
            return {"status": "administrator", "user": user,
                    **{right: right != "is_anonymous" for right in rights}}
        return {"status": "member", "user": user}

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)

        def pending() -> list[dict[str, Any]]:
            return [u for u in self.updates if u["update_id"] >= offset]

        async with self.changed:
            self.calls.append(("getUpdates", params))
            self.changed.notify_all()
            if offset:  # confirmed updates are forgotten, as the Bot API does
                self.updates = pending()
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: bool(pending())),
                                       min(timeout, 2))
            except TimeoutError:
                pass
            return pending()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/bot{token}/{method}", self._method)]
