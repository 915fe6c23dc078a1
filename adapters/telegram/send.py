"""`Reply` -> Telegram sendMessage through python-telegram-bot's `Bot`.

Markdown is converted to plain text plus message entities (`telegramify-markdown`), so there is
no parse_mode to escape and no "can't parse entities" failure; the text is split at 4,096
UTF-16 code units with the entities clipped per piece (PROTOCOLS.md 2.4). The first piece
quotes the user's message (`reply_parameters`, sent even if that message was deleted) in the
same forum topic. A 429 raises `RetryAfter` in PTB: we wait `retry_after` seconds and try
again, up to 3 times, then the send fails and the engine retries the message.
"""

from __future__ import annotations

import asyncio

import telegramify_markdown
from telegram import Bot, MessageEntity, ReplyParameters
from telegram.error import BadRequest, NetworkError, RetryAfter

from adapters.progress import SendProgress
from bot.errors import TransientError
from bot.messages import Message, Reply

TEXT_LIMIT_UTF16 = 4096
MAX_RATE_LIMIT_WAITS = 3


def render(markdown: str) -> list[tuple[str, list[MessageEntity]]]:
    """Markdown -> [(text, entities)], each piece at most 4,096 UTF-16 units."""
    text, entities = telegramify_markdown.convert(markdown)
    pieces = telegramify_markdown.split_entities(text, entities, TEXT_LIMIT_UTF16)
    return [(piece, [MessageEntity(**e.to_dict()) for e in ents]) for piece, ents in pieces]


class TelegramSender:
    """Implements `bot.protocols.Sender` and `TypingIndicator` for Telegram."""

    def __init__(self, bot: Bot, progress: SendProgress) -> None:
        self._bot = bot
        self._progress = progress

    async def _call(self, method: str, **kwargs: object) -> object:
        for attempt in range(MAX_RATE_LIMIT_WAITS + 1):
            try:
                return await getattr(self._bot, method)(**kwargs)
            except BadRequest:
                raise
            except RuntimeError as exc:  # PTB: "HTTPXRequest is not initialized" (closed)
                raise TransientError(f"Telegram {method}: client closed") from exc
            except NetworkError as exc:  # connection errors and timeouts, not refusals
                raise TransientError(f"Telegram {method}: {type(exc).__name__}") from exc
            except RetryAfter as exc:
                if attempt == MAX_RATE_LIMIT_WAITS:
                    raise
                delay = exc.retry_after
                await asyncio.sleep(delay.total_seconds() if hasattr(delay, "total_seconds")
                                    else float(delay))
        raise AssertionError("unreachable")

    async def send(self, reply: Reply) -> None:
        conv = reply.conversation
        thread = int(conv.thread) if conv.thread else None
        pieces = render(reply.render())
        done = await self._progress.delivered(reply.message_id)
        for index, (text, entities) in enumerate(pieces[done:], start=done):
            quote = (ReplyParameters(message_id=int(conv.reply_to),
                                     allow_sending_without_reply=True)
                     if index == 0 and conv.reply_to else None)
            await self._call("send_message", chat_id=int(conv.channel), text=text,
                             entities=entities, message_thread_id=thread,
                             reply_parameters=quote, disable_notification=False)
            await self._progress.record(reply.message_id, index + 1)

    async def typing(self, message: Message) -> None:
        conv = message.conversation
        await self._call("send_chat_action", chat_id=int(conv.channel), action="typing",
                         message_thread_id=int(conv.thread) if conv.thread else None)
