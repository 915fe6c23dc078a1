"""`Reply` -> the waiting HTTP caller, or a signed POST to the callback URL."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from adapters.verification import sha256_signature
from bot.errors import TransientError
from bot.log import get_logger
from bot.messages import NOTICE_META, Reply
from bot.rendezvous import ReplyRendezvous
from bot.retrying import retried, retry_on

log = get_logger("adapters.webhook")


class CallbackError(TransientError):
    """The callback URL answered with a retryable status (429 or 5xx): the receiver is down or
    overloaded, not the message at fault, so the engine keeps retrying it (up to
    BOT_MAX_RETRY_AGE_S) without counting it against BOT_MAX_DELIVERIES."""


def reply_body(reply: Reply) -> dict[str, Any]:
    """The JSON shape of a reply, in responses and callbacks; `buttons` only when the reply
    has some (press one by sending `{"button": token}` in place of `text`); `notice` only on a
    notice instead of an answer ("dead_letter": the message was given up on)."""
    body: dict[str, Any] = {
        "id": reply.meta.get("id", reply.message_id),
        "conversation": reply.conversation.channel,
        "answer": reply.text,
        "sources": [{"uri": s.uri, "title": s.title, "score": s.score} for s in reply.sources]}
    if reply.buttons:
        body["buttons"] = [{"label": b.label, "token": b.token} for b in reply.buttons]
    if NOTICE_META in reply.meta:  # not an answer: why the message will not be answered
        body["notice"] = reply.meta[NOTICE_META]
    return body


class WebhookSender:
    """Delivers to a `?wait=true` caller if one still waits, else POSTs to `callback_url`
    (3 attempts, exponential backoff with jitter, on connection errors and 5xx/429), with an
    `Idempotency-Key` header (the message id): a process killed after the POST but before it
    recorded the send may send once more on redelivery, with the same key.

    Raises (from `send`): CallbackError or aiohttp.ClientError when every attempt failed, so
    the message stays pending and is retried by the engine.
    """

    def __init__(self, rendezvous: ReplyRendezvous, session: aiohttp.ClientSession, *,
                 secret: str | None, callback_url: str | None, timeout_s: float) -> None:
        self._rendezvous = rendezvous
        self._session = session
        self._secret = secret
        self._callback_url = callback_url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, reply: Reply) -> None:
        # a notice (the message was given up on) never replaces an answer kept for repeats
        if await self._rendezvous.deliver(reply, replace=NOTICE_META not in reply.meta):
            return
        await self.post_callback(reply)

    async def post_callback(self, reply: Reply) -> None:
        """POST the reply to `callback_url` (retried; see the class docstring)."""
        url = self._callback_url
        if not url:
            log.warning("webhook reply dropped: no caller waits and WEBHOOK_CALLBACK_URL is "
                        "unset", message_id=reply.message_id)
            return
        body = json.dumps(reply_body(reply), ensure_ascii=False).encode()
        # the same key on every attempt and every redelivery of this message's reply
        headers = {"Content-Type": "application/json", "Idempotency-Key": reply.message_id}
        if self._secret:
            headers["X-Signature"] = sha256_signature(self._secret, body)

        async def post() -> None:
            async with self._session.post(url, data=body, headers=headers,
                                          timeout=self._timeout) as response:
                if response.status == 429 or response.status >= 500:
                    raise CallbackError(f"callback answered {response.status}")
                if response.status >= 400:
                    log.error("callback rejected the reply", status=response.status,
                              message_id=reply.message_id)

        await retried(post, retry_if=retry_on(aiohttp.ClientError, CallbackError, TimeoutError),
                      attempts=3, initial_s=0.5, max_s=5)
        log.debug("callback delivered", message_id=reply.message_id)
