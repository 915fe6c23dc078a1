"""Fixtures of the engine's tests: a client of the test Redis and a key prefix of their own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.conftest import Services


@pytest.fixture
async def redis(services: Services) -> AsyncIterator[Redis]:
    client = Redis.from_url(services.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    """A fresh key prefix; its keys are deleted afterwards."""
    p = f"t{uuid.uuid4().hex[:10]}"
    yield p
    keys = [k async for k in redis.scan_iter(f"{p}:*")]
    if keys:
        await redis.delete(*keys)
