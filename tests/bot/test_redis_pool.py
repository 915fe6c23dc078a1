"""WaitingConnectionPool against the real Valkey: with every connection in use, a command
waits for the next release (instead of failing as redis-py's plain pool does), gives up after
its timeout, and a waiter cancelled after being woken passes its turn on."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from bot.redis_pool import WaitingConnectionPool
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
