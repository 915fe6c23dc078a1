"""Bounds on incoming HTTP connections: how long a request's headers and body may take to
arrive, and how many connections one peer address may hold (slowloris and connection floods).

aiohttp's server has a keep-alive timeout for idle connections, but a connection that keeps
sending part of its headers, or a body slower than any honest client, is held open for as long
as the peer likes. `ConnectionGuard` adds:

- a header deadline: a new connection must complete its request headers within
  `header_timeout_s`; after a response, within the keep-alive time plus `header_timeout_s`.
  A sweeper closes connections past their deadline.
- a body deadline: a middleware reads the whole body within `body_timeout_s` before the route
  handler runs (the handler's own `request.read()` then returns the cached bytes); past it the
  answer is 408 and the connection is closed. A handler marked `streams_body` (an upload)
  reads its body itself, under its own size limit; the connection is closed if the body
  has not all arrived by the deadline.
- a per-peer bound: connections from one address beyond `max_per_peer` are closed as they
  open (0: no bound). Behind a reverse proxy every connection comes from the proxy: raise it
  or set 0 there, and bound connections at the proxy instead.

`GuardedRunner` is an `aiohttp.web.AppRunner` that installs the guard on its server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from bot.log import get_logger

log = get_logger("bot.httpguard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Any])

#: aiohttp's keep-alive timeout, seconds: an idle connection is closed after it.
KEEPALIVE_TIMEOUT_S = 75.0


@dataclass
class _Connection:
    peer: str
    deadline: float  # monotonic; 0 while a request is being handled
    transport: asyncio.Transport


class ConnectionGuard:
    """Deadlines and per-peer bounds for one server's connections.

    Args:
        header_timeout_s: longest time for a request's headers to arrive, seconds.
        body_timeout_s: longest time for a request's body to arrive, seconds.
        max_per_peer: most open connections per peer address; 0 for no bound.
    """

    def __init__(self, *, header_timeout_s: float, body_timeout_s: float,
                 max_per_peer: int) -> None:
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_per_peer = max_per_peer
        self._connections: dict[object, _Connection] = {}
        self._per_peer: Counter[str] = Counter()
        self.closed_slow = 0
        self.refused_peer = 0

    def connection_made(self, handler: object, transport: asyncio.Transport) -> None:
        peername = transport.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) and peername else "?"
        if self.max_per_peer and self._per_peer[peer] >= self.max_per_peer:
            self.refused_peer += 1
            log.warning("connection refused: too many from one peer", peer=peer,
                        limit=self.max_per_peer)
            transport.abort()
            return
        self._per_peer[peer] += 1
        self._connections[handler] = _Connection(
            peer, time.monotonic() + self.header_timeout_s, transport)

    def connection_lost(self, handler: object) -> None:
        conn = self._connections.pop(handler, None)
        if conn is not None:
            self._per_peer[conn.peer] -= 1
            if self._per_peer[conn.peer] <= 0:
                del self._per_peer[conn.peer]

    def sweep(self) -> None:
        """Close every connection past its header deadline."""
        now = time.monotonic()
        for conn in list(self._connections.values()):
            if conn.deadline and now > conn.deadline and not conn.transport.is_closing():
                self.closed_slow += 1
                log.info("connection closed: request headers too slow", peer=conn.peer)
                conn.transport.abort()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        conn = self._connections.get(request.protocol)
        if conn is not None:
            conn.deadline = 0.0  # headers are in
        try:
            if request.body_exists and request.match_info.handler in _STREAMING:
                return await self._streamed(request, handler)
            if request.body_exists:
                try:
                    await asyncio.wait_for(request.read(), self.body_timeout_s)
                except TimeoutError:
                    log.info("request refused: body too slow", path=request.path)
                    response = web.json_response(
                        {"error": "request body did not arrive in time"}, status=408)
                    response.force_close()
                    return response
            return await handler(request)
        finally:
            if conn is not None:
                conn.deadline = time.monotonic() + KEEPALIVE_TIMEOUT_S + self.header_timeout_s

    async def _streamed(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Run a handler that reads its own body (`streams_body`): the connection is closed
        if the body has not all arrived `body_timeout_s` after the headers."""
        def too_slow() -> None:
            if not request.content.is_eof() and request.transport is not None:
                log.info("connection closed: request body too slow", path=request.path)
                request.transport.abort()

        timer = asyncio.get_running_loop().call_later(self.body_timeout_s, too_slow)
        try:
            return await handler(request)
        finally:
            timer.cancel()


_STREAMING: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


def streams_body(handler: H) -> H:
    """Mark a route handler that reads its own body as a stream (an upload larger than
    BOT_MAX_BODY_BYTES, with a limit of its own): the guard does not read the body first, and
    closes the connection when it has not all arrived within the body deadline."""
    _STREAMING.add(handler)
    return handler


async def _server_header(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "Switchboard"  # no library or Python versions


GUARD = web.AppKey("connection_guard", ConnectionGuard)


def install(app: web.Application, guard: ConnectionGuard) -> None:
    """Add the guard's middleware (innermost) and the version-free `Server` header."""
    app[GUARD] = guard
    app.middlewares.append(guard.middleware)
    app.on_response_prepare.append(_server_header)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server reports connections to the app's `ConnectionGuard` (see
    `install`) and runs its sweeper."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        # lingering: after an early answer (408, 413) the rest of a body is read and dropped
        # for 2 s at most (aiohttp's default is 10 s), so a slow sender is not kept longer
        super().__init__(app, keepalive_timeout=KEEPALIVE_TIMEOUT_S, lingering_time=2.0,
                         **kwargs)
        self._guard = app[GUARD]
        self._sweeper: asyncio.Task[None] | None = None

    async def setup(self) -> None:
        await super().setup()
        server = self.server
        assert server is not None
        made, lost = server.connection_made, server.connection_lost
        guard = self._guard

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            made(handler, transport)
            guard.connection_made(handler, transport)

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            guard.connection_lost(handler)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        self._sweeper = asyncio.create_task(self._sweep(), name="http-connection-sweeper")

    async def _sweep(self) -> None:
        interval_s = min(1.0, self._guard.header_timeout_s / 4)
        while True:
            await asyncio.sleep(interval_s)
            self._guard.sweep()

    async def cleanup(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await super().cleanup()
