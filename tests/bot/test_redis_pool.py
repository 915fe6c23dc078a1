"""WaitingConnectionPool against the real Valkey: with every connection in use, a command
waits for the next release (instead of failing as redis-py's plain pool does), gives up after
its timeout, and a waiter cancelled after being woken passes its turn on. Coalesced: callers
share round trips and each gets its own replies and errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from urllib.parse import unquote

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.redis_pool import Coalesced, WaitingConnectionPool, call, raise_first, run_script
from tests.conftest import Services


async def _hold(redis: Redis, key: str, timeout_s: float) -> object:
    """Hold one connection for `timeout_s` seconds (BLPOP on an empty key)."""
    return await redis.blpop([key], timeout=timeout_s)


def _client(services: Services, *, max_connections: int, timeout: float) -> Redis:
    pool = WaitingConnectionPool.from_url(services.redis_url, max_connections=max_connections,
                                          timeout=timeout, socket_timeout=10)
    return Redis.from_pool(pool)


async def test_commands_wait_for_a_connection_and_then_run(services: Services) -> None:
    redis = _client(services, max_connections=2, timeout=10)
    try:
        # two commands hold both connections for 0.5 s (BLPOP on an empty key); a third waits
        holders = [asyncio.create_task(_hold(redis, f"empty-{i}", 0.5)) for i in range(2)]
        await asyncio.sleep(0.1)
        pool = redis.connection_pool
        assert isinstance(pool, WaitingConnectionPool)
        assert len(pool._in_use_connections) == 2
        assert await redis.ping() is True  # after a holder released its connection
        assert await asyncio.gather(*holders) == [None, None]
        # many more commands than connections, all served
        assert await asyncio.gather(*[redis.incr("pool-counter") for _ in range(50)])
    finally:
        await redis.delete("pool-counter")
        await redis.aclose()


async def test_no_release_within_the_timeout_is_a_connection_error(
        services: Services) -> None:
    redis = _client(services, max_connections=1, timeout=0.2)
    try:
        holder = asyncio.create_task(_hold(redis, "empty-x", 1))
        await asyncio.sleep(0.1)
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await redis.ping()
        await holder
        assert await redis.ping() is True
    finally:
        await redis.aclose()


async def test_a_waiter_cancelled_after_its_wake_passes_it_on(services: Services) -> None:
    pool = WaitingConnectionPool.from_url(services.redis_url, max_connections=1, timeout=5)
    try:
        held = await pool.get_connection()
        first = asyncio.create_task(pool.get_connection())
        second = asyncio.create_task(pool.get_connection())
        await asyncio.sleep(0.05)
        await pool.release(held)  # wakes `first` ...
        first.cancel()  # ... which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await first
        connection = await asyncio.wait_for(second, 2)  # the turn went on to `second`
        await pool.release(connection)
    finally:
        await pool.disconnect()


@pytest.fixture
async def redis(services: Services) -> AsyncIterator[Redis]:
    """A client of 4 connections; the keys the tests below write are deleted afterwards."""
    client = _client(services, max_connections=4, timeout=10)
    yield client
    for pattern in ("coalesced-*", "script-*", "tx-*"):
        keys = [key async for key in client.scan_iter(match=pattern)]
        if keys:
            await client.delete(*keys)
    await client.aclose()


async def test_coalesced_callers_share_round_trips_and_keep_their_own_replies(
        redis: Redis) -> None:
    await redis.set("coalesced-text", "not a number")
    coalesced = Coalesced(redis)

    def incr(n: int) -> Callable[[Pipeline], object]:
        def queue(pipe: Pipeline) -> None:
            pipe.incrby("coalesced-counter", n)
            pipe.get("coalesced-counter")
        return queue

    def bad(pipe: Pipeline) -> None:
        pipe.incr("coalesced-text")  # an error reply, for this caller only
        pipe.exists("coalesced-text")

    outcomes = await asyncio.gather(*[coalesced.execute(incr(1)) for _ in range(20)],
                                    coalesced.execute(bad))
    # 21 callers, fewer round trips: the first went alone, the rest together
    assert coalesced.batched.batches < 21 and coalesced.batched.items == 21
    totals = sorted(int(replies[0]) for replies in outcomes[:20])
    assert totals == list(range(1, 21))
    error, exists = outcomes[20]
    assert isinstance(error, ResponseError) and exists == 1
    with pytest.raises(ResponseError):
        raise_first(outcomes[20])
    assert raise_first(outcomes[0]) == outcomes[0]


async def test_coalesced_transaction_and_a_broken_connection_fail_every_caller(
        redis: Redis) -> None:
    finishing = Coalesced(redis, transaction=True)

    def push(value: str) -> Callable[[Pipeline], object]:
        return lambda pipe: pipe.rpush("coalesced-list", value)

    replies = await asyncio.gather(*[finishing.execute(push(str(i))) for i in range(5)])
    assert sorted(r[0] for r in replies) == [1, 2, 3, 4, 5]
    assert await redis.llen("coalesced-list") == 5
    # a server that is gone: every caller of the round trip gets the error, none is
    # run again on its own (its commands may have run)
    gone = Redis.from_url("unix:///nonexistent/valkey.sock")
    lost = Coalesced(gone)
    outcomes = await asyncio.gather(*[lost.execute(push("x")) for _ in range(3)],
                                    return_exceptions=True)
    assert all(isinstance(o, RedisConnectionError) for o in outcomes)
    assert lost.batched.items == 3
    await gone.aclose()


async def test_a_round_trip_past_its_timeout_fails_its_callers_and_leaves_no_reply_behind(
        services: Services) -> None:
    # connections without a socket timeout, as the process's shared round trips have: the
    # round trip as a whole is bounded; a BLPOP of 2 s stands for a server that stalls
    untimed = Redis.from_pool(WaitingConnectionPool.from_url(
        services.redis_url, max_connections=1, timeout=10, socket_timeout=None))
    try:
        coalesced = Coalesced(untimed, timeout_s=0.3)
        sibling = coalesced.sibling(transaction=True)
        assert sibling.timeout_s == 0.3
        stalled = await asyncio.gather(
            coalesced.execute(lambda pipe: pipe.blpop(["coalesced-empty"], timeout=2)),
            coalesced.execute(lambda pipe: pipe.set("coalesced-after", "1")),
            return_exceptions=True)
        assert all(isinstance(o, RedisTimeoutError) for o in stalled), stalled
        # the one connection was closed, not handed on with the BLPOP's reply still due:
        # the next round trip gets its own replies
        await untimed.rpush("coalesced-list", "a")
        assert raise_first(await coalesced.execute(
            lambda pipe: pipe.lrange("coalesced-list", 0, -1))) == [[b"a"]]
        assert raise_first(await sibling.execute(
            lambda pipe: pipe.incr("coalesced-counter"))) == [1]
        # an untimed set of round trips keeps waiting as its connections say (here: forever)
        waiting = Coalesced(untimed).execute(
            lambda pipe: pipe.blpop(["coalesced-empty"], timeout=0.5))
        assert raise_first(await waiting) == [None]
    finally:
        await untimed.delete("coalesced-list", "coalesced-counter", "coalesced-after")
        await untimed.aclose()


class StallAfterExec:
    """A Unix-socket proxy in front of Valkey that forwards everything until the first EXEC
    has gone through, then holds every later request (counted in `held`): a server that
    stalls right after answering an aborted transaction."""

    def __init__(self, upstream: str, path: str) -> None:
        self.upstream, self.path = upstream, path
        self.exec_seen = False
        self.held = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_unix_server(self._serve, self.path)
        return "unix://" + self.path

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)

        async def replies() -> None:
            while data := await up_reader.read(65536):
                writer.write(data)

        pump = asyncio.create_task(replies())
        try:
            # (a client cut off by its deadline closes its connection: that ends the loop)
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    if self.exec_seen:
                        self.held += 1
                        continue
                    self.exec_seen = b"EXEC" in data
                    up_writer.write(data)
        finally:
            pump.cancel()
            up_writer.close()
            writer.close()


async def test_a_rerun_that_times_out_ends_the_reruns_of_an_aborted_transaction(
        services: Services, tmp_path_factory: pytest.TempPathFactory) -> None:
    """An aborted transaction's callers are run again one by one, and a rerun that fails
    otherwise (here: the server stalled after the abort, past the deadline) ends the reruns:
    the later callers get its error without reaching the server, instead of each waiting a
    full timeout of its own."""
    upstream = services.redis_url.removeprefix("unix://")
    proxy = StallAfterExec(unquote(upstream), str(tmp_path_factory.mktemp("stall") / "r.sock"))
    untimed = Redis.from_pool(WaitingConnectionPool.from_url(
        await proxy.start(), max_connections=4, timeout=10, socket_timeout=None))
    try:
        finishing = Coalesced(untimed, transaction=True, timeout_s=0.3)
        outcomes = await asyncio.gather(
            finishing.execute(lambda pipe: pipe.execute_command("SET", "tx-refused")),
            *[finishing.execute(lambda pipe: pipe.rpush("tx-late", "1")) for _ in range(5)],
            return_exceptions=True)
        # the refused command aborted the EXEC (held: the reruns that followed), and the
        # stalled server left every caller, the refused one too, to the deadline
        assert all(isinstance(o, RedisTimeoutError) for o in outcomes), outcomes
        assert 1 <= proxy.held < 6  # not every rerun was sent: the deadline had passed
    finally:
        await untimed.aclose()
        await proxy.stop()


async def test_scripts_and_single_commands_run_alone_or_shared_and_survive_a_flush(
        redis: Redis) -> None:
    script = redis.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    shared = Coalesced(redis)
    await redis.script_flush()  # a Valkey that restarted empty: NOSCRIPT, then loaded
    assert await run_script(script, ["script-counter"], [2]) == 2
    await redis.script_flush()
    assert await run_script(script, ["script-counter"], [3], shared) == 5
    results = await asyncio.gather(*[run_script(script, ["script-counter"], [1], shared)
                                     for _ in range(10)])
    assert sorted(results) == list(range(6, 16))
    with pytest.raises(ResponseError):  # an error reply is raised for its caller
        await run_script(script, ["script-counter"], ["not a number"], shared)
    assert await call(redis, None, lambda pipe: pipe.get("script-counter")) == b"15"
    assert await call(redis, shared, lambda pipe: pipe.get("script-counter")) == b"15"
    with pytest.raises(ResponseError):
        await call(redis, shared, lambda pipe: pipe.lpush("script-counter", "x"))


async def test_one_callers_bad_argument_or_failing_queue_fails_only_that_caller(
        redis: Redis) -> None:
    await redis.delete("coalesced-good")
    shared = Coalesced(redis)

    def broken(pipe: Pipeline) -> None:
        pipe.set("coalesced-half", "queued before the failure")
        raise RuntimeError("a caller's own bug")

    outcomes = await asyncio.gather(
        shared.execute(lambda pipe: pipe.set("coalesced-good", "ok")),
        # a lone surrogate (a platform's JSON can carry one) cannot be encoded
        shared.execute(lambda pipe: pipe.set("coalesced-bad", "hi \ud800")),
        shared.execute(broken),
        shared.execute(lambda pipe: pipe.get("coalesced-good")),
        return_exceptions=True)
    assert outcomes[0] == [True] and outcomes[3] == [b"ok"]
    assert isinstance(outcomes[1], UnicodeEncodeError)
    assert isinstance(outcomes[2], RuntimeError)
    assert await redis.exists("coalesced-bad", "coalesced-half") == 0
    assert shared.batched.batches < 4  # they did share round trips


async def test_an_aborted_shared_transaction_is_run_again_caller_by_caller(
        redis: Redis) -> None:
    """A command refused when queued (here: wrong arity; in production, any write under
    `maxmemory`) aborts the whole MULTI/EXEC and nothing runs: each caller then runs alone,
    so the others' acknowledgements still happen."""
    await redis.delete("tx-a", "tx-b")
    finishing = Coalesced(redis, transaction=True)
    outcomes = await asyncio.gather(
        # a command redis-py does not send (no keys): first in an aborted EXEC, redis-py
        # raises a TypeError for it, which must not fail the others either
        finishing.execute(lambda pipe: pipe.mget([])),
        finishing.execute(lambda pipe: pipe.rpush("tx-a", "1")),
        finishing.execute(lambda pipe: pipe.execute_command("SET", "tx-refused")),
        finishing.execute(lambda pipe: pipe.rpush("tx-b", "1")),
        return_exceptions=True)
    assert outcomes[0] == [[]]  # run alone: redis-py's reply for an MGET of no keys
    assert outcomes[1] == [1] and outcomes[3] == [1]
    assert isinstance(outcomes[2], ResponseError)
    assert await redis.llen("tx-a") == 1 and await redis.llen("tx-b") == 1
