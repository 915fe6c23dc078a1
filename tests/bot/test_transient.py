"""Failure kinds: an outside service's (retried, not counted against the message) and a
batch item's own (the batch is written again row by row)."""

from __future__ import annotations

import aiohttp
import asyncpg
import openai
import pytest

from bot.errors import TransientError
from bot.transient import is_transient, row_error


class Status(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"status {status}")
        self.status = status


@pytest.mark.parametrize(("exc", "transient"), [
    (TransientError("platform down"), True),
    (ConnectionResetError(), True),
    (TimeoutError(), True),
    (aiohttp.ClientConnectionError(), True),
    (asyncpg.exceptions.ConnectionDoesNotExistError(), True),
    (openai.APIConnectionError(request=None), True),  # type: ignore[arg-type]
    (Status(503), True),
    (Status(429), True),
    (Status(400), False),
    (ValueError("bad data"), False),
    (KeyError("x"), False),
])
def test_outside_services_are_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


@pytest.mark.parametrize(("exc", "one_row"), [
    (asyncpg.exceptions.UntranslatableCharacterError("NUL in text"), True),
    (asyncpg.exceptions.UniqueViolationError("duplicate"), True),
    (asyncpg.exceptions.DeadlockDetectedError("deadlock"), True),
    (asyncpg.exceptions.DataError("invalid input for query argument $3"), True),
    (TypeError("expected str"), True),
    (asyncpg.exceptions.AdminShutdownError("shutting down"), False),
    (asyncpg.exceptions.ReadOnlySQLTransactionError("read-only after a failover"), False),
    (asyncpg.exceptions.UndefinedTableError("no such table"), False),
    (asyncpg.exceptions.InsufficientPrivilegeError("permission denied"), False),
    (asyncpg.exceptions.InternalServerError("XX000"), False),
    (asyncpg.exceptions.TooManyConnectionsError("too many"), False),
    (asyncpg.exceptions.ConnectionFailureError("lost"), False),
    (asyncpg.exceptions.ConnectionDoesNotExistError("closed"), False),
    (ConnectionResetError(), False),
    (TimeoutError(), False),
])
def test_row_errors_are_the_ones_a_single_row_can_cause(exc: Exception, one_row: bool) -> None:
    assert row_error(exc) is one_row
