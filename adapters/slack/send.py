"""`Reply` -> Slack: chat.postMessage in the message's thread, or the slash command's
`response_url`.

Markdown becomes Slack mrkdwn (`slackify-markdown`: **bold** -> *bold*, links -> <url|text>,
`&`, `<`, `>` escaped). Text is split into messages of at most 3,900 characters, under the
4,000 Slack recommends for `text`. Rate limits: slack_sdk's `AsyncRateLimitErrorRetryHandler`
waits for `Retry-After` on 429 (up to 3 times) before the send fails and the engine retries.

`Reply.buttons` go under the last message as Block Kit
(https://docs.slack.dev/reference/block-kit/blocks/section-block,
https://docs.slack.dev/reference/block-kit/blocks/actions-block): a `section` with the piece
as mrkdwn (a section holds at most 3,000 characters, so a reply with buttons is split at
3,000) and an `actions` block of `button` elements whose `action_id` is `sb:<token>`; `text`
stays as the notification fallback. A press comes back as a `block_actions` payload
(https://docs.slack.dev/reference/interaction-payloads/block_actions-payload; see
normalize.py).

Pacing (`pacer`, a `bot.ratelimit.SendPacer`; None sends unpaced): every chat.postMessage,
chat.update (streamed drafts included) and response_url post of a reply first waits for a
token of the channel's bucket, about one message per second per channel
(https://docs.slack.dev/apis/web-api/rate-limits), shared by every
worker through Redis, so a burst is smoothed instead of refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slackify_markdown import slackify_markdown

from adapters.progress import SendProgress
from adapters.text import split_text
from bot.errors import TransientError
from bot.keys import Keys
from bot.log import get_logger
from bot.messages import Button, Message, Reply
from bot.ratelimit import Bucket, Rate, SendPacer

log = get_logger("adapters.slack")
TEXT_LIMIT = 3900
SECTION_LIMIT = 3000
BUTTON_LABEL_LIMIT = 75
MAX_BUTTONS = 25  # elements of one actions block
GROUP_CACHE_S = 60.0
THREAD_TTL_S = 7 * 24 * 3600
MAX_RATE_LIMIT_WAITS = 3
#: chat.update errors meaning the draft cannot be finished in place.
DRAFT_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
#: chat.postMessage's limit as a token bucket: 1 message at once per channel, 1 more per second.
CHANNEL_RATE = Rate(capacity=1, per_s=1.0)


def pace_buckets(channel: str) -> list[Bucket]:
    """The bucket one message to `channel` takes a token from."""
    return [Bucket(f"out:slack:channel:{channel}", CHANNEL_RATE)]


class SlackThreads:
    """Threads the bot has replied in (`<p>:slack:thread:<channel>:<thread_ts>`, 7 days), so
    follow-ups there are answered without a new mention."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._keys = Keys(prefix)

    def _key(self, channel: str, thread_ts: str) -> str:
        return self._keys.slack_thread(channel, thread_ts)

    async def mark(self, channel: str, thread_ts: str) -> None:
        await self._redis.set(self._key(channel, thread_ts), "1", ex=THREAD_TTL_S)

    async def contains(self, channel: str, thread_ts: str) -> bool:
        return bool(await self._redis.exists(self._key(channel, thread_ts)))


def web_client(token: str, api_url: str, session: aiohttp.ClientSession | None = None
               ) -> AsyncWebClient:
    """A Web API client for `api_url` that honours 429 Retry-After and retries connection
    errors."""
    return AsyncWebClient(token=token, base_url=api_url, session=session, retry_handlers=[
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncRateLimitErrorRetryHandler(max_retry_count=3)])


def to_mrkdwn(markdown: str) -> str:
    return str(slackify_markdown(markdown)).strip()


def button_blocks(piece: str, buttons: tuple[Button, ...]) -> list[dict[str, Any]]:
    """Block Kit for a message with buttons: a mrkdwn section holding `piece` (at most
    3,000 characters) and an actions block with up to 25 buttons (label <= 75 characters,
    `action_id` `sb:<token>`, `value` the token; `style` only for "primary"/"danger")."""
    elements: list[dict[str, Any]] = []
    for button in buttons[:MAX_BUTTONS]:
        element: dict[str, Any] = {
            "type": "button", "action_id": f"sb:{button.token}", "value": button.token,
            "text": {"type": "plain_text", "text": button.label[:BUTTON_LABEL_LIMIT]}}
        if button.style in ("primary", "danger"):
            element["style"] = button.style
        elements.append(element)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": piece[:SECTION_LIMIT]}},
            {"type": "actions", "elements": elements}]


class SlackSender:
    """Implements `bot.protocols.Sender`, `DraftEditor` and `GroupDirectory` for Slack. Pieces
    already delivered by an earlier attempt at the same reply are skipped. A streamed draft is
    a chat.postMessage edited with chat.update; slash commands (response_url) are not
    drafted."""

    def __init__(self, client: AsyncWebClient, threads: SlackThreads,
                 http: aiohttp.ClientSession, progress: SendProgress, *,
                 pacer: SendPacer | None = None) -> None:
        self._client = client
        self._threads = threads
        self._http = http
        self._progress = progress
        self._groups: dict[str, tuple[float, frozenset[str]]] = {}
        self.pacer = pacer

    async def _pace(self, channel: str) -> None:
        """Wait for a token of `channel`'s bucket (no-op unpaced).

        Raises:
            bot.ratelimit.PacingTimeout: the wait would be too long (a TransientError).
        """
        if self.pacer is not None:
            await self.pacer.acquire("slack", pace_buckets(channel))

    async def send(self, reply: Reply) -> None:
        limit = SECTION_LIMIT if reply.buttons else TEXT_LIMIT
        pieces = split_text(to_mrkdwn(reply.render()), limit)
        conv = reply.conversation
        if conv.thread and not reply.meta.get("response_url"):
            # before posting, best effort: the thread's follow-ups are answered from now on
            with contextlib.suppress(RedisError, OSError):
                await self._threads.mark(conv.channel, conv.thread)
        done = await self._progress.delivered(reply.message_id)
        for index, piece in enumerate(pieces[done:], start=done):
            blocks = (button_blocks(piece, reply.buttons)
                      if reply.buttons and index == len(pieces) - 1 else None)
            draft = reply.draft if index == 0 else None
            if not (draft and await self._finish_draft(conv.channel, draft, piece, blocks)):
                await self._post(reply, index, piece, blocks)
            await self._progress.record(reply.message_id, index + 1)

    async def _post(self, reply: Reply, index: int, piece: str,
                    blocks: list[dict[str, Any]] | None) -> None:
        await self._pace(reply.conversation.channel)
        if reply.meta.get("response_url"):
            body: dict[str, Any] = {
                "response_type": "ephemeral" if reply.ephemeral else "in_channel",
                "text": piece}
            if blocks:
                body["blocks"] = blocks
            if index == 0 and reply.meta.get("replace_original") == "1":
                # the message holding the pressed button becomes the answer's first piece,
                # unless only the presser may see the answer ("only the person who asked
                # can confirm this"): then the message and its buttons stay for the others
                body["replace_original"] = not reply.ephemeral
            await self._post_response_url(reply.meta["response_url"], body)
        else:
            await self._client.chat_postMessage(
                channel=reply.conversation.channel, text=piece, blocks=blocks,
                thread_ts=reply.conversation.thread, unfurl_links=False, unfurl_media=False)

    async def _finish_draft(self, channel: str, ts: str, piece: str,
                            blocks: list[dict[str, Any]] | None) -> bool:
        """Edit the streamed draft into the answer's first piece; False when the draft is
        gone or can no longer be edited (deleted by a user), so the piece is posted anew."""
        await self._pace(channel)
        try:
            await self._client.chat_update(channel=channel, ts=ts, text=piece, blocks=blocks)
        except SlackApiError as exc:
            if exc.response.get("error") in DRAFT_GONE:
                return False
            raise
        return True

    async def post_draft(self, message: Message, text: str) -> str | None:
        if message.meta.get("response_url"):
            return None
        conv = message.conversation
        await self._pace(conv.channel)
        response = await self._client.chat_postMessage(
            channel=conv.channel, text=to_mrkdwn(text)[:TEXT_LIMIT], thread_ts=conv.thread,
            unfurl_links=False, unfurl_media=False)
        ts = response.get("ts")
        return str(ts) if ts else None

    async def edit_draft(self, message: Message, handle: str, text: str) -> None:
        await self._pace(message.conversation.channel)
        await self._client.chat_update(channel=message.conversation.channel, ts=handle,
                                       text=to_mrkdwn(text)[:TEXT_LIMIT])

    async def in_group(self, message: Message, group: str) -> bool:
        """Whether the message's author is in the Slack user group `group` (an id such as
        "S0SUPPORT"), from `usergroups.users.list`; each group's members are cached in-process
        for 60 s.

        Raises:
            slack_sdk.errors.SlackApiError: Slack refused (unknown group, missing scope
                `usergroups:read`, ...); connection errors as slack_sdk raises them.
        """
        now = time.monotonic()
        cached = self._groups.get(group)
        if cached is None or cached[0] <= now:
            response = await self._client.usergroups_users_list(usergroup=group)
            users = response.get("users") or []
            cached = (now + GROUP_CACHE_S, frozenset(str(u) for u in users))
            self._groups[group] = cached
        return message.user in cached[1]

    async def tell(self, response_url: str, text: str) -> None:
        """Best effort, within 2 s: an ephemeral message to the user through an
        interaction's `response_url`, leaving the message that holds the button as it is.
        Errors are logged by type only (the URL is a credential)."""
        body = {"response_type": "ephemeral", "replace_original": False, "text": text}
        try:
            await asyncio.wait_for(self._post_response_url(response_url, body), 2.0)
        except (TransientError, TimeoutError) as exc:
            log.warning("slack response_url message not delivered", error=type(exc).__name__)

    async def _post_response_url(self, url: str, body: dict[str, Any]) -> None:
        """POST to a slash command's or interaction's response_url
        (https://docs.slack.dev/interactivity/handling-user-interaction#message_responses). Errors
        carry the status only: the URL is a credential (it can post to the channel for 30
        minutes) and must not reach a log."""
        for _attempt in range(MAX_RATE_LIMIT_WAITS + 1):
            try:
                async with self._http.post(url, json=body) as response:
                    if response.status == 429:
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                        continue
                    if response.status >= 400:
                        raise TransientError(f"response_url answered {response.status}")
                    return
            except aiohttp.ClientError as exc:
                raise TransientError(f"response_url: {type(exc).__name__}") from None
        raise TransientError("response_url kept answering 429")
