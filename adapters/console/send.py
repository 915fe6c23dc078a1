"""`Reply` -> the waiting console caller."""

from __future__ import annotations

from bot.log import get_logger
from bot.messages import Reply
from bot.rendezvous import ReplyRendezvous

log = get_logger("adapters.console")


class ConsoleSender:
    """Hands replies to the `bot ask` / `bot chat` process waiting for them."""

    def __init__(self, rendezvous: ReplyRendezvous) -> None:
        self._rendezvous = rendezvous

    async def send(self, reply: Reply) -> None:
        if not await self._rendezvous.deliver(reply):
            # expected after Ctrl-C in `bot chat`: not a warning printed into the chat
            log.info("console reply dropped: the caller stopped waiting",
                     message_id=reply.message_id)
