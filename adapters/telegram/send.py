"""`Reply` -> Telegram sendMessage through python-telegram-bot's `Bot`.

Markdown is converted to plain text plus message entities (`telegramify-markdown`), so there is
no parse_mode to escape and no "can't parse entities" failure; the text is split at 4,096
UTF-16 code units with the entities clipped per piece
(https://core.telegram.org/bots/api#sendmessage). The first piece
quotes the user's message (`reply_parameters`, sent even if that message was deleted) in the
same forum topic. A 429 raises `RetryAfter` in PTB: we wait `retry_after` seconds and try
again, up to 3 times, then the send fails and the engine retries the message.

`Reply.buttons` become rows (8 buttons each) of an inline keyboard under the last piece
(`callback_data` `sb:<token>`, at most 64 bytes,
https://core.telegram.org/bots/api#inlinekeyboardbutton). When the reply answers a press
(`meta["button_message"]`), that message's keyboard is removed first (editMessageReplyMarkup,
best effort), so a confirmation cannot be pressed twice; not when the reply is for the presser
only (`Reply.ephemeral`, e.g. a stranger pressed Confirm), since the keyboard is still the
requester's.

Pacing (`pacer`, a `bot.ratelimit.SendPacer`; None sends unpaced): every sendMessage,
editMessageText (streamed drafts included) and editMessageReplyMarkup first waits for a token
of Telegram's flood limits
(https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this): about one
message per second in a chat, 20 per minute in a group (negative chat ids), 30 per second for
the bot, shared by every worker through Redis, so a burst is smoothed instead of refused.
"""

from __future__ import annotations

import asyncio

import telegramify_markdown
from telegram import (
    Bot,
    ChatMember,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    MessageEntity,
    ReplyParameters,
)
from telegram.constants import InlineKeyboardMarkupLimit
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError

from adapters.progress import SendProgress
from bot.errors import BotError, TransientError
from bot.log import get_logger
from bot.messages import Button, Message, Reply
from bot.ratelimit import Bucket, Rate, SendPacer

log = get_logger("adapters.telegram")
TEXT_LIMIT_UTF16 = 4096
CALLBACK_DATA_LIMIT = 64  # bytes
BUTTONS_PER_ROW = InlineKeyboardMarkupLimit.BUTTONS_PER_ROW  # 8
ADMIN_STATUSES = (ChatMember.OWNER, ChatMember.ADMINISTRATOR)  # "creator", "administrator"
MAX_RATE_LIMIT_WAITS = 3
#: editMessageText refusals meaning the draft cannot be finished in place.
DRAFT_GONE = ("message to edit not found", "message can't be edited")
#: Telegram's flood limits as token buckets: at most about 2 messages in any second in one
#: chat (1 at once, 1 more per second), 20 in any minute in one group (5 at once, then one
#: every 4 s), 30 in any second for the bot (5 at once, 25 more per second).
CHAT_RATE = Rate(capacity=1, per_s=1.0)
GROUP_RATE = Rate(capacity=5, per_s=15 / 60)
BOT_RATE = Rate(capacity=5, per_s=25.0)
#: The Bot API methods that post or change a message in a chat, and so are paced.
PACED_METHODS = frozenset({"send_message", "edit_message_text", "edit_message_reply_markup"})


def pace_buckets(chat_id: int) -> list[Bucket]:
    """The buckets one message to `chat_id` takes a token from: the chat's, the group's for
    a group, supergroup or channel (negative ids), and the bot's."""
    buckets = [Bucket(f"out:telegram:chat:{chat_id}", CHAT_RATE)]
    if chat_id < 0:
        buckets.append(Bucket(f"out:telegram:group:{chat_id}", GROUP_RATE))
    buckets.append(Bucket("out:telegram:bot", BOT_RATE))
    return buckets


def render(markdown: str) -> list[tuple[str, list[MessageEntity]]]:
    """Markdown -> [(text, entities)], each piece at most 4,096 UTF-16 units."""
    text, entities = telegramify_markdown.convert(markdown)
    pieces = telegramify_markdown.split_entities(text, entities, TEXT_LIMIT_UTF16)
    return [(piece, [MessageEntity(**e.to_dict()) for e in ents]) for piece, ents in pieces]


def keyboard(buttons: tuple[Button, ...]) -> InlineKeyboardMarkup | None:
    """Inline keyboard rows of up to 8 buttons (PTB's `InlineKeyboardMarkupLimit`) with
    `callback_data` `sb:<token>`; a button whose data would exceed 64 bytes is left out
    (logged). None when no button is left."""
    kept: list[InlineKeyboardButton] = []
    for button in buttons:
        data = f"sb:{button.token}"
        if len(data.encode()) > CALLBACK_DATA_LIMIT:
            log.warning("telegram button token too long; button left out", label=button.label)
            continue
        kept.append(InlineKeyboardButton(button.label, callback_data=data))
    rows = [kept[i:i + BUTTONS_PER_ROW] for i in range(0, len(kept), BUTTONS_PER_ROW)]
    return InlineKeyboardMarkup(rows) if rows else None


class TelegramSender:
    """Implements `bot.protocols.Sender`, `TypingIndicator`, `DraftEditor` and
    `GroupDirectory` for Telegram (a streamed draft is a sendMessage edited with
    editMessageText)."""

    def __init__(self, bot: Bot, progress: SendProgress, *,
                 pacer: SendPacer | None = None) -> None:
        self._bot = bot
        self._progress = progress
        self.pacer = pacer

    async def _pace(self, chat_id: int) -> None:
        """Wait for a token of every flood limit `chat_id` is under (no-op unpaced).

        Raises:
            bot.ratelimit.PacingTimeout: the wait would be too long (a TransientError).
        """
        if self.pacer is not None:
            await self.pacer.acquire("telegram", pace_buckets(chat_id))

    async def _call(self, method: str, **kwargs: object) -> object:
        for attempt in range(MAX_RATE_LIMIT_WAITS + 1):
            if method in PACED_METHODS:
                await self._pace(int(str(kwargs["chat_id"])))
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
        # a reply meant for the presser alone (Telegram has no such messages; it is sent to
        # the chat) leaves the keyboard for the others: "only the person who asked can ..."
        if done == 0 and reply.meta.get("button_message") and not reply.ephemeral:
            await self._remove_keyboard(int(conv.channel), int(reply.meta["button_message"]))
        markup = keyboard(reply.buttons)
        for index, (text, entities) in enumerate(pieces[done:], start=done):
            last_markup = markup if index == len(pieces) - 1 else None
            draft = reply.draft if index == 0 else None
            if draft and await self._finish_draft(int(conv.channel), int(draft), text,
                                                  entities, last_markup):
                await self._progress.record(reply.message_id, index + 1)
                continue
            quote = (ReplyParameters(message_id=int(conv.reply_to),
                                     allow_sending_without_reply=True)
                     if index == 0 and conv.reply_to else None)
            await self._call("send_message", chat_id=int(conv.channel), text=text,
                             entities=entities, message_thread_id=thread,
                             reply_parameters=quote, disable_notification=False,
                             reply_markup=last_markup)
            await self._progress.record(reply.message_id, index + 1)

    async def _remove_keyboard(self, chat_id: int, message_id: int) -> None:
        """Best effort: a keyboard already gone, or any error, is ignored."""
        try:
            await self._pace(chat_id)
            await self._bot.edit_message_reply_markup(chat_id=chat_id, message_id=message_id,
                                                      reply_markup=None)
        except (TelegramError, RuntimeError, BotError) as exc:
            log.debug("telegram keyboard not removed", error=type(exc).__name__)

    async def in_group(self, message: Message, group: str) -> bool:
        """Whether the author is in `group`. Only "admins" is known: the chat's creator and
        administrators (getChatMember status "creator" or "administrator"); any other group,
        and any private chat, is False.

        Raises:
            TransientError: Telegram is unreachable.
            telegram.error.TelegramError: Telegram refused (e.g. the bot left the chat).
        """
        chat_id = int(message.conversation.channel)
        # private chats have the user's (positive) id; groups have negative ids
        if group != "admins" or message.meta.get("chat_type") == "private" or chat_id > 0:
            return False
        member = await self._call("get_chat_member", chat_id=chat_id, user_id=int(message.user))
        return getattr(member, "status", None) in ADMIN_STATUSES

    async def _edit(self, chat_id: int, message_id: int, text: str,
                    entities: list[MessageEntity],
                    markup: InlineKeyboardMarkup | None = None) -> None:
        try:
            await self._call("edit_message_text", chat_id=chat_id, message_id=message_id,
                             text=text, entities=entities, reply_markup=markup)
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():  # same text again is no error for us
                raise

    async def _finish_draft(self, chat_id: int, message_id: int, text: str,
                            entities: list[MessageEntity],
                            markup: InlineKeyboardMarkup | None) -> bool:
        """Edit the streamed draft into the first piece; False when it was deleted or can no
        longer be edited, so the piece is sent anew."""
        try:
            await self._edit(chat_id, message_id, text, entities, markup)
        except BadRequest as exc:
            if any(gone in str(exc).lower() for gone in DRAFT_GONE):
                return False
            raise
        return True

    async def post_draft(self, message: Message, text: str) -> str | None:
        conv = message.conversation
        piece, entities = render(text)[0]
        quote = (ReplyParameters(message_id=int(conv.reply_to), allow_sending_without_reply=True)
                 if conv.reply_to else None)
        sent = await self._call("send_message", chat_id=int(conv.channel), text=piece,
                                entities=entities,
                                message_thread_id=int(conv.thread) if conv.thread else None,
                                reply_parameters=quote)
        message_id = getattr(sent, "message_id", None)
        return str(message_id) if message_id is not None else None

    async def edit_draft(self, message: Message, handle: str, text: str) -> None:
        piece, entities = render(text)[0]
        await self._edit(int(message.conversation.channel), int(handle), piece, entities)

    async def typing(self, message: Message) -> None:
        conv = message.conversation
        await self._call("send_chat_action", chat_id=int(conv.channel), action="typing",
                         message_thread_id=int(conv.thread) if conv.thread else None)
