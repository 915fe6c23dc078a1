"""`Reply` -> Slack: chat.postMessage in the message's thread, or the slash command's
`response_url`.

Markdown becomes Slack mrkdwn (`slackify-markdown`: **bold** -> *bold*, links -> <url|text>,
`&`, `<`, `>` escaped). Text is split into messages of at most 3,900 characters, under the
4,000 Slack recommends for `text`. Rate limits: slack_sdk's `AsyncRateLimitErrorRetryHandler`
waits for `Retry-After` on 429 (up to 3 times) before the send fails and the engine retries.
"""

from __future__ import annotations

import aiohttp
from redis.asyncio import Redis
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slackify_markdown import slackify_markdown

from adapters.text import split_text
from bot.messages import Reply

TEXT_LIMIT = 3900
THREAD_TTL_S = 7 * 24 * 3600


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
    """Implements `bot.protocols.Sender` for Slack."""

    def __init__(self, client: AsyncWebClient, threads: SlackThreads,
                 http: aiohttp.ClientSession) -> None:
        self._client = client
        self._threads = threads
        self._http = http

    async def send(self, reply: Reply) -> None:
        pieces = split_text(to_mrkdwn(reply.render()), TEXT_LIMIT)
        response_url = reply.meta.get("response_url")
        if response_url:
            for piece in pieces:
                async with self._http.post(response_url, json={
                        "response_type": "in_channel", "text": piece}) as response:
                    response.raise_for_status()
            return
        conv = reply.conversation
        for piece in pieces:
            await self._client.chat_postMessage(channel=conv.channel, text=piece,
                                                thread_ts=conv.thread, unfurl_links=False,
                                                unfurl_media=False)
        if conv.thread:
            await self._threads.mark(conv.channel, conv.thread)
