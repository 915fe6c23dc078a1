"""The console adapter's ingress: enqueue a question and wait for its reply."""

from __future__ import annotations

from adapters.console.normalize import normalize
from bot.inbox import Inbox
from bot.messages import Reply
from bot.rendezvous import ReplyRendezvous


class ConsoleAdapter:
    """Asks questions through the inbox, as any platform message travels."""

    def __init__(self, inbox: Inbox, rendezvous: ReplyRendezvous) -> None:
        self._inbox = inbox
        self._rendezvous = rendezvous

    async def ask(self, text: str, conversation: str, timeout_s: float) -> Reply | None:
        """Enqueue `text` and wait up to `timeout_s` seconds; None on timeout."""
        message = normalize(text, conversation)
        await self._inbox.enqueue(message, wait_marker=self._rendezvous.marker_key(message.id),
                                  wait_ttl_s=self._rendezvous.lease_s)
        return await self._rendezvous.wait(message.id, timeout_s)
