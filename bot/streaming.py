"""Streamed answers shown as one message edited in place, at a bounded rate.

`DraftStream` is the `on_delta` sink handed to the generator. It posts the first draft only
once tokens have been arriving for `interval_s` (quick answers are simply sent whole),
then edits that one message at most once per `interval_s`, never with two platform calls in
flight. Drafts are best effort: a failed edit is logged and the final send still delivers the
whole answer. The draft's handle is kept in Redis (`<p>:draft:<message id>`, 1 day), so a
retry of the message after a crash edits the same draft instead of posting another.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.keys import Keys
from bot.log import get_logger
from bot.messages import Message
from bot.protocols import DraftEditor

log = get_logger("bot.streaming")

DRAFT_TTL_S = 24 * 3600
#: The longest the final send waits for a draft edit in flight (one stuck in a 429 wait).
FINISH_TIMEOUT_S = 5.0
_SENTENCE_END = re.compile(r"[.!?…:;]\s|[。！？]|\n")


def complete_sentences(text: str) -> str:
    """`text` up to its last finished sentence or line. A draft never shows a half-written
    last word, so redaction sees every e-mail address, card number or key whole."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[:ends[-1]].rstrip() if ends else ""
#: Appended to a draft so the reader sees that more is coming.
TYPING_MARK = " …"


class DraftStream:
    """Args:
        editor: the platform's sender (implements `DraftEditor`).
        message: the message being answered.
        interval_s: the least time between two platform calls, seconds. Platforms rate-limit
            edits (Slack per method and workspace, Telegram per chat), so keep it at 1 s or
            more when many answers stream at once.
        transform: applied to every draft text before it is shown (the output rails'
            redaction, so a draft never shows what the final reply would redact).
    """

    def __init__(self, editor: DraftEditor, message: Message, redis: Redis, prefix: str, *,
                 interval_s: float, transform: Callable[[str], str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._editor = editor
        self._message = message
        self._redis = redis
        self._key = Keys(prefix).draft(message.id)
        self._interval_s = interval_s
        self._transform = transform
        self._clock = clock
        self._last: float | None = None  # the first token's time: the first draft waits
        # one interval of streaming, so a slow start followed by a quick answer is not drafted
        self._task: asyncio.Task[None] | None = None
        self.handle: str | None = None
        self.edits = 0

    async def __call__(self, text: str) -> None:
        now = self._clock()
        if self._last is None:
            self._last = now
            return
        if now - self._last < self._interval_s:
            return
        if self._task is not None and not self._task.done():
            return
        shown = complete_sentences(text)
        if not shown:
            return
        self._last = now
        self._task = asyncio.create_task(self._show(shown + TYPING_MARK))

    async def _show(self, text: str) -> None:
        if self._transform is not None:
            text = self._transform(text)
        try:
            if self.handle is None:
                stored = await self._redis.get(self._key)
                self.handle = stored.decode() if isinstance(stored, bytes) else stored
            if self.handle is None:
                self.handle = await self._editor.post_draft(self._message, text)
                if self.handle is not None:
                    await self._redis.set(self._key, self.handle, ex=DRAFT_TTL_S)
            else:
                await self._editor.edit_draft(self._message, self.handle, text)
            self.edits += 1
        except Exception as exc:  # drafts never fail the message
            log.debug("draft update failed", error=type(exc).__name__)

    def cancel(self) -> None:
        """Stop the platform call in flight (generation failed or timed out): a late draft
        edit must never land after a retry has finished the message."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def finish(self, timeout_s: float = FINISH_TIMEOUT_S) -> str | None:
        """Wait (up to `timeout_s`, then cancel) for the platform call in flight; return the
        draft's handle (None if no draft was shown and no earlier attempt left one)."""
        if self._task is not None:
            # asyncio.wait neither raises the task's error nor its cancellation
            await asyncio.wait({self._task}, timeout=timeout_s)
            if not self._task.done():
                self._task.cancel()
        if self.handle is None:
            with contextlib.suppress(RedisError, OSError):
                stored = await self._redis.get(self._key)
                self.handle = stored.decode() if isinstance(stored, bytes) else stored
        return self.handle
