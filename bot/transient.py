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


#: Postgres errors one row can cause: its data (SQLSTATE class 22; asyncpg raises these for an
#: argument it cannot encode too), a constraint (23), a serialization failure or deadlock (40).
ROW_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.exceptions.DataError, asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.TransactionRollbackError, ValueError, TypeError)


def row_error(exc: Exception) -> bool:
    """True for a failure one row of a batch can cause (`ROW_ERRORS`): the batch is then
    written again row by row. False for anything else (the connection, a read-only server
    after a failover, a missing table, a lack of privilege or resources), which every row
    would meet again."""
    return isinstance(exc, ROW_ERRORS)
