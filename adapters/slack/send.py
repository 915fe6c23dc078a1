"""`Reply` -> Slack: chat.postMessage in the message's thread, or the slash command's
`response_url`.

Markdown becomes Slack mrkdwn (`slackify-markdown`: **bold** -> *bold*, links -> <url|text>,
`&`, `<`, `>` escaped). Text is split into messages of at most 3,900 characters, under the
4,000 Slack recommends for `text`. Rate limits: slack_sdk's `AsyncRateLimitErrorRetryHandler`
waits for `Retry-After` on 429 (up to 3 times) before the send fails and the engine retries.
"""

from __future__ import annotations

import asyncio
import contextlib

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
from bot.messages import Message, Reply

TEXT_LIMIT = 3900
THREAD_TTL_S = 7 * 24 * 3600
MAX_RATE_LIMIT_WAITS = 3
#: chat.update errors meaning the draft cannot be finished in place.
DRAFT_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})


class SlackThreads:
    """Threads the bot has replied in (`<p>:slack:thread:<channel>:<thread_ts>`, 7 days), so
    follow-ups there are answered without a new mention."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, channel: str, thread_ts: str) -> str:
        return f"{self._prefix}:slack:thread:{channel}:{thread_ts}"

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


class SlackSender:
    """Implements `bot.protocols.Sender` and `DraftEditor` for Slack. Pieces already delivered
    by an earlier attempt at the same reply are skipped. A streamed draft is a
    chat.postMessage edited with chat.update; slash commands (response_url) are not drafted."""

    def __init__(self, client: AsyncWebClient, threads: SlackThreads,
                 http: aiohttp.ClientSession, progress: SendProgress) -> None:
        self._client = client
        self._threads = threads
        self._http = http
        self._progress = progress

    async def send(self, reply: Reply) -> None:
        pieces = split_text(to_mrkdwn(reply.render()), TEXT_LIMIT)
        conv = reply.conversation
        if conv.thread and not reply.meta.get("response_url"):
            # before posting, best effort: the thread's follow-ups are answered from now on
            with contextlib.suppress(RedisError, OSError):
                await self._threads.mark(conv.channel, conv.thread)
        done = await self._progress.delivered(reply.message_id)
        for index, piece in enumerate(pieces[done:], start=done):
            draft = reply.meta.get("draft") if index == 0 else None
            if not (draft and await self._finish_draft(conv.channel, draft, piece)):
                await self._post(reply, piece)
            await self._progress.record(reply.message_id, index + 1)

    async def _post(self, reply: Reply, piece: str) -> None:
        if reply.meta.get("response_url"):
            await self._post_response_url(reply.meta["response_url"], piece)
        else:
            await self._client.chat_postMessage(
                channel=reply.conversation.channel, text=piece,
                thread_ts=reply.conversation.thread, unfurl_links=False, unfurl_media=False)

    async def _finish_draft(self, channel: str, ts: str, piece: str) -> bool:
        """Edit the streamed draft into the answer's first piece; False when the draft is
        gone or can no longer be edited (deleted by a user), so the piece is posted anew."""
        try:
            await self._client.chat_update(channel=channel, ts=ts, text=piece)
        except SlackApiError as exc:
            if exc.response.get("error") in DRAFT_GONE:
                return False
            raise
        return True

    async def post_draft(self, message: Message, text: str) -> str | None:
        if message.meta.get("response_url"):
            return None
        conv = message.conversation
        response = await self._client.chat_postMessage(
            channel=conv.channel, text=to_mrkdwn(text)[:TEXT_LIMIT], thread_ts=conv.thread,
            unfurl_links=False, unfurl_media=False)
        ts = response.get("ts")
        return str(ts) if ts else None

    async def edit_draft(self, message: Message, handle: str, text: str) -> None:
        await self._client.chat_update(channel=message.conversation.channel, ts=handle,
                                       text=to_mrkdwn(text)[:TEXT_LIMIT])

    async def _post_response_url(self, url: str, piece: str) -> None:
        """POST to a slash command's response_url. Errors carry the status only: the URL is a
        credential (it can post to the channel for 30 minutes) and must not reach a log."""
        for _attempt in range(MAX_RATE_LIMIT_WAITS + 1):
            try:
                async with self._http.post(url, json={"response_type": "in_channel",
                                                      "text": piece}) as response:
                    if response.status == 429:
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                        continue
                    if response.status >= 400:
                        raise TransientError(f"response_url answered {response.status}")
                    return
            except aiohttp.ClientError as exc:
                raise TransientError(f"response_url: {type(exc).__name__}") from None
        raise TransientError("response_url kept answering 429")
