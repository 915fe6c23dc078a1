"""The console adapter's ingress: enqueue a question and wait for its reply."""

from __future__ import annotations

from aiohttp import web

from adapters.console.normalize import normalize
from adapters.console.send import ConsoleSender
from bot.inbox import Inbox
from bot.messages import Reply
from bot.protocols import Sender
from bot.rendezvous import ReplyRendezvous


class ConsoleAdapter:
    """Asks questions through the inbox, as any platform message travels (`bot ask`,
    `bot chat`); a platform like the others, without routes or a connection."""

    name = "console"

    def __init__(self, inbox: Inbox, rendezvous: ReplyRendezvous) -> None:
        self._inbox = inbox
        self._rendezvous = rendezvous
        self._sender = ConsoleSender(rendezvous)

    @property
    def sender(self) -> Sender:
        return self._sender

    def routes(self) -> list[web.RouteDef]:
        return []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ask(self, text: str, conversation: str, timeout_s: float) -> Reply | None:
        """Enqueue `text` and wait up to `timeout_s` seconds; None on timeout."""
        message = normalize(text, conversation)
        await self._inbox.enqueue(message, wait_marker=self._rendezvous.marker_key(message.id),
                                  wait_ttl_s=self._rendezvous.lease_s)
        return await self._rendezvous.wait(message.id, timeout_s)
