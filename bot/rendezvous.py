"""Hand a reply to a caller that waits for it, across processes, through Redis.

Used by the console adapter (`bot ask`, `bot chat`) and by `POST /webhooks/{name}?wait=true`:
the caller's interest marker (`marker_key`) is set by the inbox in the same atomic step that
stores the message, and only if the message is new; the caller then blocks on `wait`. Whichever
worker produces the reply, in this process or another, calls `deliver`, which atomically
consumes the interest marker and pushes the reply onto a per-message list. A caller that gives
up withdraws its marker; if `deliver` finds no marker it returns False and the sender uses its
fallback (the webhook callback URL).
"""

from __future__ import annotations

from redis.asyncio import Redis

from bot.messages import Reply


class ReplyRendezvous:
    """Per-message reply hand-off. Keys: `<p>:wait:<message id>` (marker),
    `<p>:reply:<message id>` (list holding the reply JSON)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def marker_key(self, message_id: str) -> str:
        """The key that says a caller waits for this message's reply (set by the inbox)."""
        return f"{self._prefix}:wait:{message_id}"

    def _box(self, message_id: str) -> str:
        return f"{self._prefix}:reply:{message_id}"

    async def wait(self, message_id: str, timeout_s: float) -> Reply | None:
        """Block until the reply arrives or `timeout_s` passes (then withdraw; None)."""
        box = self._box(message_id)
        item = await self._redis.blpop([box], timeout=timeout_s)
        if item is None:
            withdrawn = await self._redis.delete(self.marker_key(message_id))
            if withdrawn:
                return None
            # deliver() consumed the marker just now: the reply is on its way into the box
            item = await self._redis.blpop([box], timeout=5)
            if item is None:
                return None
        return Reply.from_json(item[1])

    async def deliver(self, reply: Reply) -> bool:
        """Give the reply to its waiting caller; False if nobody waits for it."""
        if not await self._redis.delete(self.marker_key(reply.message_id)):
            return False
        box = self._box(reply.message_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(box, reply.to_json())
            pipe.expire(box, 300)
            await pipe.execute()
        return True
