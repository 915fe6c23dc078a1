"""`POST /webhooks/{name}`: verify, parse, enqueue, and answer fast.

Order of checks, each before any parsing of what follows: body size (413 above
`BOT_MAX_BODY_BYTES`, enforced by the server while reading), signature over the raw bytes (401),
JSON (400), shape (400). A repeated `id` is acknowledged with 200 and not processed again.
With Redis down the answer is 503 with Retry-After, so the caller retries rather than losing
the message.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiohttp import web
from redis.exceptions import RedisError

from adapters.verification import verify_sha256_signature
from adapters.webhook.normalize import normalize
from adapters.webhook.send import reply_body
from bot.errors import BacklogFull, PayloadError
from bot.inbox import Inbox
from bot.log import get_logger
from bot.messages import Message
from bot.protocols import Sender
from bot.rendezvous import ReplyRendezvous

log = get_logger("adapters.webhook")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


class WebhookAdapter:
    """The generic webhook: its HTTP ingress and its sender (callbacks, waiting callers).

    Args:
        sender: delivers replies (`WebhookSender`); every process has it, so a worker
            answers messages another process received.
        secret: the HMAC key (`WEBHOOK_SECRET`); requests must carry
            `X-Signature: sha256=<hex HMAC-SHA256 of the raw body>`. None: no route is
            served (the ingress is off), the sender still works.
        wait_timeout_s: the longest `?wait=true` waits for the reply before answering 202.
        max_text_chars: the longest `text` accepted (BOT_MAX_TEXT_CHARS); longer is 400.
        limit: the inbound rate limit (`InboundLimiter.check_inbound`): seconds to wait when
            the message is over its author's or conversation's limit (429 with Retry-After),
            None when it may go in; None (the default) limits nothing.
    """

    name = "webhook"

    def __init__(self, inbox: Inbox, rendezvous: ReplyRendezvous, *, sender: Sender,
                 secret: str | None, wait_timeout_s: float, max_text_chars: int = 4000,
                 limit: Callable[[Message], Awaitable[float | None]] | None = None) -> None:
        self._sender = sender
        self._inbox = inbox
        self._rendezvous = rendezvous
        self._secret = secret
        self._wait_timeout_s = wait_timeout_s
        self._limit = limit
        self._max_text_chars = max_text_chars

    @property
    def sender(self) -> Sender:
        return self._sender

    def routes(self) -> list[web.RouteDef]:
        if self._secret is None:
            log.warning("webhook adapter disabled: set WEBHOOK_SECRET to enable it")
            return []
        return [web.post("/webhooks/{name}", self.handle)]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not _NAME.match(name):
            return _error(404, "unknown webhook")
        body = await request.read()  # raises 413 past the server's client_max_size
        if self._secret is None or not verify_sha256_signature(
                self._secret, body, request.headers.get("X-Signature")):
            return _error(401, "invalid signature")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return _error(400, "body is not valid JSON")
        try:
            message = normalize(name, payload, self._max_text_chars)
        except PayloadError as exc:
            return _error(400, str(exc))
        if self._limit is not None:
            if (retry_after_s := await self._limit(message)) is not None:
                return _error(429, "too many messages; slow down",
                              **{"Retry-After": str(max(1, math.ceil(retry_after_s)))})
            message = replace(message, rate_checked=True)
        wait = request.query.get("wait", "").lower() in ("1", "true", "yes")
        marker = self._rendezvous.marker_key(message.id) if wait else ""
        try:
            entry = await self._inbox.enqueue(message, wait_marker=marker,
                                              wait_ttl_s=self._rendezvous.lease_s)
        except (RedisError, OSError, BacklogFull) as exc:
            log.error("inbox unavailable; asked the caller to retry", message_id=message.id,
                      error=type(exc).__name__)
            return _error(503, "temporarily unavailable", **{"Retry-After": "5"})
        public_id = message.meta["id"]
        status = "accepted" if entry is not None else "duplicate"
        try:
            if entry is None:  # a repeat: its answer if there is one, else wait as the first
                reply = await (self._rendezvous.attach(message.id) if wait
                               else self._rendezvous.result(message.id))
                if reply is not None:
                    return web.json_response(reply_body(reply), status=200)
            if wait:
                reply = await self._rendezvous.wait(message.id, self._wait_timeout_s,
                                                    gone=lambda: _gone(request))
                if reply is not None:  # else the worker's sender posts it to the callback
                    return web.json_response(reply_body(reply), status=200)
        except (RedisError, OSError) as exc:  # stored already: the marker lapses by itself
            log.warning("reply wait failed; the reply goes to the callback",
                        message_id=message.id, error=type(exc).__name__)
        return web.json_response({"id": public_id, "status": status}, status=202)


def _gone(request: web.Request) -> bool:
    """True once the HTTP caller has closed its connection."""
    transport = request.transport
    return transport is None or transport.is_closing()
