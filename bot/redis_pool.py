"""The process's Redis connection pool, and round trips shared by concurrent callers.

`WaitingConnectionPool` waits for a free connection, at a plain pool's cost.

redis-py's `ConnectionPool` raises `MaxConnectionsError` once `max_connections` are in use;
its `BlockingConnectionPool` waits instead, but takes an asyncio `Condition` and a timeout
scope for every command, whether or not it has to wait: 44 against 32 us of client CPU per GET
(measured in one process against the embedded Valkey, 4 tasks), on a path of about ten round
trips per chat message. `WaitingConnectionPool` takes the plain pool's path and waits only when
that raises, woken by the next release (first come, first served among the waiters).

`Coalesced` sends the commands of concurrent callers in one pipeline (group commit,
bot/batching.py): the engine's workers each make a few round trips per message, and with
many messages in flight the ones that fall while a round trip is out go in the next together.
Each round trip costs a write, a read and a wake-up of the event loop in the bot and a read
and a write in Valkey, whatever it carries.

A round trip is bounded as a whole (`Coalesced(timeout_s=...)`) on a client whose connections
have no socket timeout of their own: redis-py arms a timer for every reply it reads and runs
every send in `asyncio.wait_for` when its connection has one, which cost 190-200 against
119-125 us of client CPU per pipeline of 11 GETs (measured in one process against the
embedded Valkey). A round trip cut off by its timeout closes its connection (redis-py
disconnects on any exception while sending or reading), so no reply is left on it.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ExecAbortError, MaxConnectionsError, NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.batching import Batched


class WaitingConnectionPool(ConnectionPool):
    """A `ConnectionPool` that waits up to `timeout` seconds for a connection when
    `max_connections` are in use (as `BlockingConnectionPool` does).

    Raises (from `get_connection`):
        redis.exceptions.ConnectionError: no connection was released within `timeout`.
    """

    def __init__(self, *args: Any, timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        # (the arguments are redis-py's deprecated command name and keys, unused)
        try:
            return await self._take()
        except MaxConnectionsError:
            pass
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    await self._wait_for_release()
                    try:
                        return await self._take()
                    except MaxConnectionsError:
                        continue  # a caller on the fast path took it first: wait again
        except TimeoutError:
            raise RedisConnectionError("No connection available.") from None

    async def _take(self) -> AbstractConnection:
        """The plain pool's way: a free connection, or a new one below the maximum.

        Raises:
            MaxConnectionsError: `max_connections` are in use.
        """
        connection: AbstractConnection = await super().get_connection()  # type: ignore[no-untyped-call]
        return connection

    async def _wait_for_release(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake()  # woken, then cancelled before taking it: pass the turn on
            raise

    async def release(self, connection: AbstractConnection) -> None:
        try:
            await super().release(connection)
        finally:
            self._wake()

    def _wake(self) -> None:
        """Wake the longest waiting caller still waiting (cancelled ones are skipped)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class Coalesced:
    """Commands of concurrent callers in one pipeline round trip.

    `await coalesced.execute(queue)` calls `queue(pipe)` to queue the caller's commands on a
    pipeline shared with the callers that arrived meanwhile, and returns their replies in
    order, an error reply as its exception (`Pipeline.execute(raise_on_error=False)`): the
    caller raises or handles it. With `transaction`, the pipeline is one MULTI/EXEC, so every
    caller's commands run atomically (with the others').

    One caller's commands cannot fail the others': a `queue` that raises fails that caller
    before anything is sent, and a round trip in which nothing ran (an argument that cannot be
    encoded, such as a lone surrogate in a text, fails the packing before the send; a
    transaction the server aborted, EXECABORT: a command refused when queued, as any write is
    under `maxmemory`) is run again caller by caller (`Batched`'s `rerun_if`, which skips the
    callers that gave up and stops at the first failure that is not of this kind).

    Args:
        redis: the client of the round trips; give one whose connections have no socket
            timeout (`socket_timeout=None`) together with `timeout_s`.
        timeout_s: the longest one round trip may take, waiting for a connection included,
            seconds (None: only the connections' own timeouts apply).

    Raises (from `execute`): the caller's own error (see above), or what the shared round
    trip raised (the connection broke, `redis.exceptions.TimeoutError` past `timeout_s`),
    for every caller in it, since some of their commands may have run: no caller's commands
    are sent twice.
    """

    def __init__(self, redis: Redis, *, transaction: bool = False,
                 timeout_s: float | None = None) -> None:
        self._redis = redis
        self._transaction = transaction
        self.timeout_s = timeout_s
        self.batched: Batched[Callable[[Pipeline], object], list[Any]] = Batched(
            self._run, rerun_if=_nothing_ran)

    async def execute(self, queue: Callable[[Pipeline], object]) -> list[Any]:
        """The replies of the commands `queue(pipe)` queued (its return value is ignored)."""
        return await self.batched(queue)

    def sibling(self, *, transaction: bool) -> Coalesced:
        """Another set of shared round trips on the same client and timeout (for example the
        transactions beside the pipelines)."""
        return Coalesced(self._redis, transaction=transaction, timeout_s=self.timeout_s)

    async def _run(self, queues: list[Callable[[Pipeline], object]]
                   ) -> list[list[Any] | Exception]:
        out: list[list[Any] | Exception] = []
        sizes: list[int] = []
        async with self._redis.pipeline(transaction=self._transaction) as pipe:
            stack = pipe.command_stack
            for queue in queues:
                before = len(stack)
                try:
                    queue(pipe)
                except Exception as exc:
                    del stack[before:]
                    out.append(exc)
                    sizes.append(0)
                    continue
                out.append([])
                sizes.append(len(stack) - before)
            if not stack:
                return out
            try:
                async with asyncio.timeout(self.timeout_s) as deadline:
                    replies: list[Any] = await pipe.execute(raise_on_error=False)
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise RedisTimeoutError(
                    f"no reply from Redis within {self.timeout_s:g} s") from None
        start = 0
        for k, size in enumerate(sizes):
            if not isinstance(out[k], Exception):
                out[k] = replies[start:start + size]
                start += size
        return out


def _nothing_ran(exc: Exception) -> bool:
    """True for a failed round trip in which no command ran: an argument redis-py could not
    encode (raised while packing, before the send) or a transaction the server aborted
    (redis-py raises a queued command's error, or for some a TypeError, from or while
    handling the ExecAbortError)."""
    return isinstance(exc, (UnicodeEncodeError, DataError)) or any(
        isinstance(e, ExecAbortError) for e in (exc, exc.__cause__, exc.__context__))


def raise_first(replies: list[Any]) -> list[Any]:
    """`replies` (from `Coalesced.execute`), or the first error among them raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


async def run_script(script: AsyncScript, keys: Sequence[Any], args: Sequence[Any],
                     via: Coalesced | None = None) -> Any:
    """EVALSHA of a registered `script` (loaded and run again on NOSCRIPT: a server that
    restarted empty), in `via`'s shared round trip when given. redis-py's `script(...)` does
    the same with two `isinstance` checks against a Protocol-derived class per call, which
    cost as much as building the command.

    Raises: the script's error reply, or the connection's error.
    """
    if via is None:
        client: Redis = script.registered_client  # type: ignore[assignment]
        try:
            return await client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await script(keys=keys, args=args)
    [reply] = await via.execute(
        lambda pipe: pipe.evalsha(script.sha, len(keys), *keys, *args))
    if isinstance(reply, NoScriptError):
        return await script(keys=keys, args=args)
    if isinstance(reply, Exception):
        raise reply
    return reply


async def call(redis: Redis, via: Coalesced | None, queue: Callable[[Pipeline], object]
               ) -> Any:
    """The reply of the one command `queue(pipe)` queues: in `via`'s shared round trip, else
    on its own pipeline. Raises its error reply, or the connection's error."""
    if via is not None:
        [reply] = raise_first(await via.execute(queue))
        return reply
    async with redis.pipeline(transaction=False) as pipe:
        queue(pipe)
        [reply] = await pipe.execute()
    return reply
