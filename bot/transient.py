"""Which failures are an outside service's (retried later, not counted against the message)
and which a batch's single item can cause (bot/batching.py runs the batch again item by item).
"""

from __future__ import annotations

import aiohttp
import asyncpg
import openai
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.errors import TransientError

#: Failures of a service, not of the message: they do not count against max_deliveries.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError, OSError, TimeoutError, RedisConnectionError, RedisTimeoutError,
    asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
    openai.APIConnectionError, openai.RateLimitError, openai.InternalServerError,
    aiohttp.ClientError,
)


def is_transient(exc: BaseException) -> bool:
    """True for failures of an outside service (connection, timeout, 429, 5xx)."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return True
    status = getattr(exc, "status", None) or getattr(exc, "status_code", None)
    return isinstance(status, int) and (status == 429 or status >= 500)


def row_error(exc: Exception) -> bool:
    """True for a failure one row of a batch can cause (Postgres refused its data, a
    constraint, a deadlock; asyncpg could not encode an argument): the batch is then written
    again row by row. False for the connection, the server's state or its resources, which
    every row would meet again."""
    return isinstance(exc, (asyncpg.PostgresError, ValueError, TypeError)) and not isinstance(
        exc, (asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
              asyncpg.exceptions.InsufficientResourcesError))
