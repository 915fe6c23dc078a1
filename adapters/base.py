"""What the composition root needs from a platform adapter, and what it gives one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from bot.inbox import Inbox
from bot.messages import Message
from bot.protocols import CommandSpec, Sender
from bot.rendezvous import ReplyRendezvous


@dataclass(frozen=True)
class AdapterDeps:
    """The narrow capabilities an adapter receives: the inbox to put messages on, Redis for
    its own small state (keys under `prefix`), a shared HTTP client session, and the commands
    the bot offers (registered where the platform has a command menu; a platform command
    with one of these names becomes a `Message` with `meta["command"]`). The console and the
    generic webhook also get the reply hand-off (`rendezvous`, for callers that wait), and
    the webhook the longest accepted text and the inbound rate limit (`limit`: seconds to
    wait, or None when a message may go in)."""

    inbox: Inbox
    redis: Redis
    prefix: str
    http: aiohttp.ClientSession
    commands: tuple[CommandSpec, ...] = ()
    rendezvous: ReplyRendezvous | None = None
    max_text_chars: int = 4000
    limit: Callable[[Message], Awaitable[float | None]] | None = None


class PlatformAdapter(Protocol):
    """One chat platform: HTTP routes and/or a long-lived connection in, a `Sender` out.

    `start`/`stop` run only in processes that receive (`bot run`); processes that only work
    (`bot worker`) use `sender` alone.
    """

    name: str

    @property
    def sender(self) -> Sender: ...

    def routes(self) -> list[web.RouteDef]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
