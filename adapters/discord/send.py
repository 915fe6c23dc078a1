"""`Reply` -> Discord REST: a message in the channel quoting the user's (gateway messages), or
the deferred interaction response completed through the interaction webhook.

Channel messages carry a `nonce` derived from the message id with `enforce_nonce`, so a resend
after a crash returns the message already posted. Content is split at 2,000 characters
(https://discord.com/developers/docs/resources/message#create-message); mentions in answers
are not pinged (`allowed_mentions.parse = []`). On 429 the body's `retry_after` (or
`Retry-After`) is waited out, up to 3 times. Interaction follow-ups need no bot token (the
interaction token authorizes them); channel messages and typing use `Authorization: Bot
<token>`.

`Reply.buttons` go under the last piece as button components (`custom_id` `sb:<token>`, label
<= 80 characters; style 1 primary, 4 danger, 2 secondary), in action rows of up to 5 buttons,
at most 5 rows. An interaction's original response is always sent with `components` (empty
without buttons), so a message whose button was pressed loses its buttons when the answer
replaces it; a reply for the caller alone (`Reply.ephemeral`: a denial, a usage error, a
stranger's press) is an ephemeral follow-up instead and leaves the pressed message alone.

Pacing (`DiscordRest.pacer`, a `bot.ratelimit.SendPacer`; None calls unpaced), after
https://discord.com/developers/docs/topics/rate-limits: every response's `X-RateLimit-Bucket`,
`-Remaining` and `-Reset-After` are recorded in Redis for the call's route and major
parameter (channel, guild, or the hashed interaction webhook), and a call on a bucket with
nothing remaining waits for its reset first, whichever worker made the earlier calls; a 429
records its wait the same way (a global one blocks every route). Calls with the bot token,
except interaction endpoints, also take a token of the global 50 requests per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from adapters.progress import SendProgress
from adapters.text import split_text
from bot.keys import Keys
from bot.messages import Button, Message, Reply
from bot.ratelimit import Bucket, Rate, SendPacer

CONTENT_LIMIT = 2000
BUTTON_LABEL_LIMIT = 80
BUTTONS_PER_ROW = 5
MAX_ROWS = 5
ACTION_ROW, BUTTON = 1, 2
BUTTON_STYLES = {"primary": 1, "danger": 4}
SECONDARY = 2
EPHEMERAL = 1 << 6  # message flag: only the interaction's user sees it
ORIGINAL_WAIT_S = 5.0
MAX_RATE_LIMIT_WAITS = 3
THREAD_TTL_S = 7 * 24 * 3600
#: The global limit of 50 requests per second as a token bucket: at most 50 in any second
#: (10 at once, 40 more per second).
GLOBAL_RATE = Rate(capacity=10, per_s=40.0)
GLOBAL_BUCKETS = (Bucket("out:discord:global", GLOBAL_RATE),)
_SNOWFLAKE = re.compile(r"^[0-9]{5,20}$")


def route_of(method: str, path: str) -> tuple[str, str]:
    """(route, major parameter) of a REST call, as Discord keys its rate-limit buckets: the
    path with its ids replaced ("POST /channels/{id}/messages"), and the channel or guild id,
    or a hash of the webhook id and token (a credential: never stored as it is), else "-"."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    major = "-"
    if len(parts) >= 2 and parts[0] in ("channels", "guilds"):
        major, parts[1] = parts[1], "{id}"
    elif len(parts) >= 3 and parts[0] in ("webhooks", "interactions"):
        major = hashlib.sha256(f"{parts[1]}/{parts[2]}".encode()).hexdigest()[:16]
        parts[1], parts[2] = "{id}", "{token}"
    template = "/".join("{id}" if _SNOWFLAKE.match(part) else part for part in parts)
    return f"{method.upper()} /{template}", major


def nonce(message_id: str, piece: int) -> str:
    """A 25-character idempotency key for piece `piece` of the reply to `message_id`."""
    return hashlib.sha256(f"{message_id}:{piece}".encode()).hexdigest()[:25]


class DiscordError(Exception):
    """Discord answered a REST call with an error status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"Discord answered {status}: {detail[:200]}")
        self.status = status


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, DiscordError) and exc.status == 404


class DiscordRest:
    """Minimal REST client over aiohttp with rate-limit waits. Never logs URLs (interaction
    tokens travel in them)."""

    def __init__(self, http: aiohttp.ClientSession, api_url: str, bot_token: str | None, *,
                 pacer: SendPacer | None = None) -> None:
        self._http = http
        self._api = api_url.rstrip("/")
        self._bot_token = bot_token
        self.pacer = pacer

    async def request(self, method: str, path: str,
                      body: dict[str, Any] | list[Any] | None = None, *,
                      bot_auth: bool = True) -> Any:
        """One REST call; the parsed JSON answer (None for an empty body).

        Raises:
            DiscordError: an error status (429 after 3 waits included).
            aiohttp.ClientError, OSError: no answer.
            bot.ratelimit.PacingTimeout: the route's bucket would make the call wait too long.
        """
        headers = {"Content-Type": "application/json"}
        if bot_auth and self._bot_token:
            headers["Authorization"] = f"Bot {self._bot_token}"
        data = json.dumps(body).encode() if body is not None else None
        route, major = route_of(method, path)
        # interaction endpoints (the interaction webhook, callbacks) are outside the global limit
        global_limited = "Authorization" in headers and \
            not path.startswith(("/webhooks/", "/interactions/"))
        for attempt in range(MAX_RATE_LIMIT_WAITS + 1):
            if self.pacer is not None:
                await self.pacer.acquire_route("discord", route, major,
                                               GLOBAL_BUCKETS if global_limited else (),
                                               global_limited=global_limited)
            async with self._http.request(method, self._api + path, data=data,
                                          headers=headers) as response:
                text = await response.text()
                if self.pacer is not None:
                    await self._observe(route, major, response.status, text, response.headers)
                if response.status == 429 and attempt < MAX_RATE_LIMIT_WAITS:
                    await asyncio.sleep(_retry_after(text, response.headers))
                    continue
                if response.status >= 400:
                    raise DiscordError(response.status, text)
                return json.loads(text) if text else None
        raise AssertionError("unreachable")

    async def _observe(self, route: str, major: str, status: int, text: str,
                       headers: Mapping[str, str]) -> None:
        """Record the rate-limit headers of one response (and a 429's wait) for the pacer."""
        assert self.pacer is not None
        remaining = _number(headers.get("X-RateLimit-Remaining"))
        reset_after = _number(headers.get("X-RateLimit-Reset-After"))
        global_wait = None
        if status == 429:
            wait = _retry_after(text, headers)
            if headers.get("X-RateLimit-Global", "").lower() == "true" or _is_global(text):
                global_wait = wait
            else:
                remaining, reset_after = 0, max(wait, reset_after or 0.0)
        await self.pacer.observe_route(
            "discord", route, major, bucket=headers.get("X-RateLimit-Bucket"),
            remaining=int(remaining) if remaining is not None else None,
            reset_after_s=reset_after, global_retry_after_s=global_wait)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _is_global(text: str) -> bool:
    try:
        return json.loads(text).get("global") is True
    except (ValueError, AttributeError):
        return False


def components(buttons: tuple[Button, ...]) -> list[dict[str, Any]]:
    """Action rows of button components for `buttons` (up to 25; the rest are dropped)."""
    rows: list[dict[str, Any]] = []
    kept = buttons[:BUTTONS_PER_ROW * MAX_ROWS]
    for start in range(0, len(kept), BUTTONS_PER_ROW):
        rows.append({"type": ACTION_ROW, "components": [
            {"type": BUTTON, "style": BUTTON_STYLES.get(b.style, SECONDARY),
             "label": b.label[:BUTTON_LABEL_LIMIT], "custom_id": f"sb:{b.token}"}
            for b in kept[start:start + BUTTONS_PER_ROW]]})
    return rows


def _original_path(meta: dict[str, str]) -> str:
    """The interaction's original response (the deferred "thinking" message)."""
    return f"/webhooks/{meta['application_id']}/{meta['token']}/messages/@original"


def _retry_after(text: str, headers: Any) -> float:
    try:
        return float(json.loads(text)["retry_after"])
    except (ValueError, KeyError, TypeError):
        return float(headers.get("Retry-After", "1"))


class DiscordThreads:
    """Channels (threads) the bot replied in: `<p>:discord:thread:<channel id>`, 7 days."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._keys = Keys(prefix)

    async def mark(self, channel: str) -> None:
        await self._redis.set(self._keys.discord_thread(channel), "1", ex=THREAD_TTL_S)

    async def contains(self, channel: str) -> bool:
        return bool(await self._redis.exists(self._keys.discord_thread(channel)))


class DiscordSender:
    """Implements `bot.protocols.Sender`, `TypingIndicator`, `DraftEditor` and
    `GroupDirectory` for Discord. A streamed draft is the interaction's original response
    (edited with PATCH @original) or a channel message (posted with its own nonce, edited
    with PATCH)."""

    def __init__(self, rest: DiscordRest, threads: DiscordThreads,
                 progress: SendProgress) -> None:
        self._rest = rest
        self._threads = threads
        self._progress = progress

    @property
    def pacer(self) -> SendPacer | None:
        """The pacer of this sender's REST client (set it to pace every call)."""
        return self._rest.pacer

    @pacer.setter
    def pacer(self, value: SendPacer | None) -> None:
        self._rest.pacer = value

    async def send(self, reply: Reply) -> None:
        pieces = split_text(reply.render(), CONTENT_LIMIT)
        no_pings: dict[str, list[str]] = {"parse": []}
        conv = reply.conversation
        if reply.meta.get("in_thread") == "1":
            with contextlib.suppress(RedisError, OSError):  # best effort, before posting
                await self._threads.mark(conv.channel)
        done = await self._progress.delivered(reply.message_id)
        for index, piece in enumerate(pieces[done:], start=done):
            body: dict[str, Any] = {"content": piece, "allowed_mentions": no_pings}
            if reply.buttons and index == len(pieces) - 1:
                body["components"] = components(reply.buttons)
            if reply.meta.get("mode") == "interaction":
                await self._interaction_piece(reply.meta, index, body, reply.ephemeral)
            else:
                draft = reply.draft if index == 0 else None
                if not (draft and await self._finish_draft(conv.channel, draft, body)):
                    await self._post(reply, index, body)
            await self._progress.record(reply.message_id, index + 1)

    async def _interaction_piece(self, meta: dict[str, str], index: int,
                                 body: dict[str, Any], ephemeral: bool) -> None:
        """Piece `index` of the answer to an interaction, through its webhook (the interaction
        token authorizes it). The first piece edits the original response (a command's
        deferred "thinking...", or the message whose button was pressed, which loses its
        buttons); later pieces are follow-ups. A reply for the caller alone
        (`ephemeral`) is sent as ephemeral follow-ups (flag 64) instead: a command's
        public "thinking..." is deleted first, a pressed message is left as it is (its
        buttons may be someone else's confirmation)."""
        webhook = f"/webhooks/{meta['application_id']}/{meta['token']}"
        if ephemeral:
            if index == 0 and not meta.get("button"):
                await self._webhook("DELETE", _original_path(meta), None, missing_ok=True)
            # the first call on the webhook may come before Discord has the initial response
            await self._webhook("POST", webhook, {**body, "flags": EPHEMERAL},
                                wait=index == 0)
        elif index == 0:  # the deferred response, or the draft streamed into it
            body.setdefault("components", [])
            await self._webhook("PATCH", _original_path(meta), body)
        else:
            await self._rest.request("POST", webhook, body, bot_auth=False)

    async def _webhook(self, method: str, path: str, body: dict[str, Any] | None, *,
                       missing_ok: bool = False, wait: bool = True) -> None:
        """One call on the interaction webhook. Discord knows the webhook only once it has
        the interaction's initial response, which the adapter sends after storing the
        message, so a fast answer can come first and get 404: with `wait`, 404s are retried
        for up to `ORIGINAL_WAIT_S` (5 s).

        Raises:
            DiscordError: another error status, or still 404 (unless `missing_ok`: a
                deletion that a crashed earlier attempt already made).
        """
        try:
            async for attempt in AsyncRetrying(
                    retry=retry_if_exception(_not_found),
                    stop=stop_after_delay(ORIGINAL_WAIT_S if wait else 0),
                    wait=wait_exponential(multiplier=0.1, max=1.0), reraise=True):
                with attempt:
                    await self._rest.request(method, path, body, bot_auth=False)
        except DiscordError as exc:
            if not (missing_ok and exc.status == 404):
                raise

    async def _post(self, reply: Reply, index: int, body: dict[str, Any]) -> None:
        """Post piece `index` as a channel message (the first one quoting the user's)."""
        conv = reply.conversation
        if index == 0 and conv.reply_to:
            body["message_reference"] = {"message_id": conv.reply_to,
                                         "fail_if_not_exists": False}
        # Discord's own idempotency key: a resend with the same nonce within minutes
        # returns the message already created instead of posting it again
        body["nonce"] = nonce(reply.message_id, index)
        body["enforce_nonce"] = True
        await self._rest.request("POST", f"/channels/{conv.channel}/messages", body)

    async def _finish_draft(self, channel: str, message_id: str, body: dict[str, Any]
                            ) -> bool:
        """Edit the streamed draft into the first piece; False when it was deleted (404)."""
        try:
            await self._rest.request("PATCH", f"/channels/{channel}/messages/{message_id}",
                                     body)
        except DiscordError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def post_draft(self, message: Message, text: str) -> str | None:
        body: dict[str, Any] = {"content": text[:CONTENT_LIMIT],
                                "allowed_mentions": {"parse": []}}
        if message.meta.get("mode") == "interaction":
            await self._webhook("PATCH", _original_path(message.meta), body)
            return "@original"
        conv = message.conversation
        if conv.reply_to:
            body["message_reference"] = {"message_id": conv.reply_to,
                                         "fail_if_not_exists": False}
        body["nonce"] = nonce(message.id, -1)
        body["enforce_nonce"] = True
        created = await self._rest.request("POST", f"/channels/{conv.channel}/messages", body)
        return str(created["id"]) if isinstance(created, dict) and "id" in created else None

    async def edit_draft(self, message: Message, handle: str, text: str) -> None:
        body = {"content": text[:CONTENT_LIMIT], "allowed_mentions": {"parse": []}}
        if message.meta.get("mode") == "interaction":
            await self._webhook("PATCH", _original_path(message.meta), body)
        else:
            await self._rest.request(
                "PATCH", f"/channels/{message.conversation.channel}/messages/{handle}", body)

    async def in_group(self, message: Message, group: str) -> bool:
        """Whether the author has the role `group` (a role id), from `meta["roles"]` as the
        adapter read it from the member; False outside guilds. Never calls Discord."""
        roles = message.meta.get("roles", "")
        return bool(group) and group in roles.split(",")

    async def typing(self, message: Message) -> None:
        if message.meta.get("mode") == "gateway":
            await self._rest.request("POST", f"/channels/{message.conversation.channel}/typing")
