"""Telegram ingress: the webhook at `POST /telegram/webhook` when `TELEGRAM_WEBHOOK_SECRET` is
set, long polling (getUpdates) otherwise.

Webhook (https://core.telegram.org/bots/api#setwebhook): the
`X-Telegram-Bot-Api-Secret-Token` header must equal the secret (constant-time compare; 403
otherwise, as PTB's own server answers); a body that is not JSON is 400. Telegram redelivers
every update that does not get a 2xx, with backoff, until it expires, so every other body is
classified from its content alone and, unless the bot may answer it, acknowledged 200 at
once: JSON that is no update, edits, other update kinds, messages from bots, presses of other
buttons. Only an update the bot may answer needs its identity (getMe) and the inbox, so only
such an update gets 503 when either is unavailable, and Telegram delivers it again.

Polling (https://core.telegram.org/bots/api#getupdates): getUpdates with
`offset = last update_id + 1`, the offset kept in Redis (`<p>:telegram:offset:<bot id>`) and
advanced only after the updates are stored, so a restart neither loses nor re-answers updates.
Callback queries are always answered (answerCallbackQuery), or the client shows a spinner; a
press of one of the bot's buttons is then stored like a message.

At start, in both modes, the bot's commands (`deps.commands`) are registered for the chat
menu with setMyCommands (https://core.telegram.org/bots/api#setmycommands), in the
background: a failure is logged, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError
from telegram import Bot, BotCommand
from telegram.error import TelegramError
from telegram.request import HTTPXRequest

from adapters.base import AdapterDeps
from adapters.payload import Skip
from adapters.progress import SendProgress
from adapters.telegram.normalize import (
    TelegramIdentity,
    normalize_callback,
    normalize_update,
    update_skip,
)
from adapters.telegram.send import TelegramSender
from bot.errors import BacklogFull
from bot.keys import Keys
from bot.log import get_logger
from bot.protocols import CommandSpec
from bot.retrying import back_off

log = get_logger("adapters.telegram")
ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
OFFSET_TTL_S = 6 * 24 * 3600
T = TypeVar("T")
COMMAND_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
COMMAND_DESCRIPTION_LIMIT = 256
MAX_COMMANDS = 100


def bot_commands(specs: tuple[CommandSpec, ...]) -> list[BotCommand]:
    """setMyCommands entries (https://core.telegram.org/bots/api#setmycommands and #botcommand):
    names of 1-32 of [a-z0-9_] (others are skipped with a warning), descriptions cut to 256
    characters (the name when empty), at most 100 commands."""
    commands: list[BotCommand] = []
    for spec in specs:
        if not COMMAND_NAME.match(spec.name):
            log.warning("telegram cannot offer this command name; skipped", command=spec.name)
            continue
        description = (spec.description.strip() or spec.name)[:COMMAND_DESCRIPTION_LIMIT]
        commands.append(BotCommand(spec.name, description))
    if len(commands) > MAX_COMMANDS:
        log.warning("telegram offers at most 100 commands; the rest are not in the menu",
                    dropped=len(commands) - MAX_COMMANDS)
    return commands[:MAX_COMMANDS]


def _understood(update: Any, classify: Callable[[], T]) -> T | Skip:
    """`classify()`, or a Skip when it raises: a shape we did not foresee must not block the
    updates after it (Telegram redelivers an update until it gets a 2xx)."""
    try:
        return classify()
    except Exception as exc:
        log.error("telegram update not understood; skipped", error=type(exc).__name__,
                  update_id=update.get("update_id") if isinstance(update, dict) else None)
        return Skip("not understood")


class Unavailable(Exception):
    """Redis or the Bot API is unreachable; the update is not acknowledged."""


class TelegramAdapter:
    """Telegram's ingress (webhook or polling) and sender."""

    name = "telegram"

    def __init__(self, deps: AdapterDeps, *, token: str, api_url: str,
                 webhook_secret: str | None, poll_timeout_s: int) -> None:
        self._deps = deps
        self._commands = frozenset(c.name for c in deps.commands)
        base = api_url.rstrip("/")
        # our own request objects, so that stop() closes their connections even when the Bot
        # was never initialized (PTB's shutdown() does nothing then)
        self._requests = (HTTPXRequest(), HTTPXRequest())
        self._bot = Bot(token, base_url=f"{base}/bot", base_file_url=f"{base}/file/bot",
                        request=self._requests[0], get_updates_request=self._requests[1])
        self._get_updates_url = f"{base}/bot{token}/getUpdates"  # never logged: holds the token
        self._webhook_secret = webhook_secret
        self._poll_timeout_s = poll_timeout_s
        self.sender = TelegramSender(self._bot, SendProgress(deps.redis, deps.prefix))
        self._identity: TelegramIdentity | None = None
        self._poller: asyncio.Task[None] | None = None
        self._registering: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/telegram/webhook", self.handle)] if self._webhook_secret else []

    async def identity(self) -> TelegramIdentity:
        if self._identity is None:
            try:
                me = await self._bot.get_me()
            except (TelegramError, OSError) as exc:
                raise Unavailable(f"getMe failed: {type(exc).__name__}") from exc
            self._identity = TelegramIdentity(id=me.id, username=me.username or "")
        return self._identity

    async def start(self) -> None:
        for request in self._requests:
            await request.initialize()  # re-opens clients closed by an earlier stop()
        if self._deps.commands:
            self._registering = asyncio.create_task(self._register_commands(),
                                                    name="telegram-commands")
        if self._webhook_secret is None:
            self._stopping.clear()
            self._poller = asyncio.create_task(self._poll(), name="telegram-poller")

    async def _register_commands(self) -> None:
        """setMyCommands with the bot's commands; failures are logged, never raised."""
        commands = bot_commands(self._deps.commands)
        if not commands:
            return
        try:
            await self._bot.set_my_commands(commands)
        except (TelegramError, OSError, RuntimeError) as exc:
            log.error("telegram setMyCommands failed; the command menu is not updated",
                      error=type(exc).__name__)
        else:
            log.info("telegram commands registered", count=len(commands))

    async def stop(self) -> None:
        self._stopping.set()
        if self._registering is not None:
            self._registering.cancel()
            # never raises by design; if it ever did, stop() must still close the rest
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._registering
            self._registering = None
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for request in self._requests:
            with contextlib.suppress(TelegramError, OSError, RuntimeError):
                await request.shutdown()

    # webhook ----------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._webhook_secret is not None
        presented = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"),
                                   self._webhook_secret.encode()):
            return web.json_response({"error": "forbidden"}, status=403)
        body = await request.read()
        try:
            update = json.loads(body)
        except (ValueError, RecursionError):
            return web.json_response({"error": "body is not valid JSON"}, status=400)
        try:
            await self._process(update)
        except Unavailable as exc:
            log.error("telegram update not stored; asking Telegram to retry", error=str(exc))
            return web.json_response({"error": "temporarily unavailable"}, status=503,
                                     headers={"Retry-After": "5"})
        return web.Response(status=200)

    # shared -----------------------------------------------------------------------------------

    async def _process(self, update: Any) -> None:
        """Store `update` if it is answered; any update is first decided from its content
        alone, so one that is never answered needs neither getMe nor Redis. A callback query
        is answered (the spinner stopped) whether it is stored or not.

        Raises:
            Unavailable: getMe or the inbox failed; the update may be answered, so it must
                be delivered again.
        """
        if isinstance(update, dict) and isinstance(update.get("callback_query"), dict):
            await self._answer_callback(update["callback_query"])
        skip = _understood(update, lambda: update_skip(update))
        if skip is not None:
            log.debug("telegram update not answered", reason=skip.reason)
            return
        me = await self.identity()
        message = _understood(update, lambda: (
            normalize_callback(update, me) if "callback_query" in update
            else normalize_update(update, me, self._commands)))
        if isinstance(message, Skip):
            log.debug("telegram update not answered", reason=message.reason)
            return
        try:
            await self._deps.inbox.enqueue(message)
        except (RedisError, OSError, BacklogFull) as exc:
            raise Unavailable(type(exc).__name__) from exc

    async def _answer_callback(self, query: dict[str, Any]) -> None:
        """Stop the client's spinner (a press is then stored like a message)."""
        query_id = query.get("id")
        if not isinstance(query_id, str):
            return
        try:
            await self._bot.answer_callback_query(query_id)
        except TelegramError as exc:  # an old query (over 15 min) cannot be answered: fine
            log.info("callback query not answered", error=type(exc).__name__)

    # long polling -----------------------------------------------------------------------------

    async def _get_updates(self, offset: int | None) -> list[Any]:
        """Raw update dicts from getUpdates (raw, not PTB objects: see normalize.py).

        Raises:
            Unavailable: the Bot API answered with an error or not at all.
        """
        params: dict[str, Any] = {"timeout": self._poll_timeout_s,
                                  "allowed_updates": ALLOWED_UPDATES}
        if offset is not None:
            params["offset"] = offset
        timeout = aiohttp.ClientTimeout(total=self._poll_timeout_s + 10)
        async with self._deps.http.post(self._get_updates_url, json=params,
                                        timeout=timeout) as response:
            body = await response.json(content_type=None)
        if not isinstance(body, dict) or not body.get("ok"):
            code = body.get("error_code") if isinstance(body, dict) else response.status
            raise Unavailable(f"getUpdates failed with {code}")
        result = body.get("result")
        return result if isinstance(result, list) else []

    def _offset_key(self, bot_id: int) -> str:
        return Keys(self._deps.prefix).telegram_offset(str(bot_id))

    async def _poll(self) -> None:
        with contextlib.suppress(TelegramError, OSError):
            # getUpdates answers 409 while a webhook is set
            # (https://core.telegram.org/bots/api#getupdates)
            await self._bot.delete_webhook(drop_pending_updates=False)
        backoff_s = 1.0
        while not self._stopping.is_set():
            try:
                me = await self.identity()
                stored = await self._deps.redis.get(self._offset_key(me.id))
                offset = int(stored) if stored else None
                updates = await self._get_updates(offset)
                for update in updates:
                    await self._process(update)
                    update_id = update.get("update_id") if isinstance(update, dict) else None
                    if isinstance(update_id, int):
                        # expires: after a week without updates Telegram restarts update_id
                        # at a random value, which a stale offset would skip
                        # (https://core.telegram.org/bots/api#update)
                        await self._deps.redis.set(self._offset_key(me.id), update_id + 1,
                                                   ex=OFFSET_TTL_S)
                backoff_s = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the poller must outlive any failure
                log.warning("telegram polling failed; backing off", error=type(exc).__name__,
                            delay_s=round(backoff_s, 1))
                backoff_s = await back_off(self._stopping, backoff_s, cap_s=60.0)
