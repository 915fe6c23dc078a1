"""What the composition root needs from a platform adapter, and what it gives one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from bot.inbox import Inbox
from bot.protocols import CommandSpec, Sender


@dataclass(frozen=True)
class AdapterDeps:
    """The narrow capabilities an adapter receives: the inbox to put messages on, Redis for
    its own small state (keys under `prefix`), a shared HTTP client session, and the commands
    the bot offers (registered where the platform has a command menu; a platform command
    with one of these names becomes a `Message` with `meta["command"]`)."""

    inbox: Inbox
    redis: Redis
    prefix: str
    http: aiohttp.ClientSession
    commands: tuple[CommandSpec, ...] = ()


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
