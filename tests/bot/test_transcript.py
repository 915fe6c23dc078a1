"""The transcript: an exchange is recorded in one statement (one round trip), atomically;
exchanges recorded concurrently share one transaction, and one bad row fails only its own."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from bot.messages import Conversation, Message, Reply
from bot.protocols import Generated
from bot.runtime import Runtime
from bot.transcript import Transcript


class OneStatementPool:
    """Lets `executemany` through to the real pool and counts its calls (transactions) and
    rows (statements); anything else fails."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.statements = 0
        self.transactions = 0

    async def executemany(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        self.transactions += 1
        self.statements += len(rows)
        await self.pool.executemany(query, rows)

    def acquire(self) -> Any:
        raise AssertionError("a transcript row needs no connection of its own")


async def test_an_exchange_is_one_statement(runtime: Runtime) -> None:
    counting = OneStatementPool(runtime.pool)
    transcript = Transcript(counting)
    conv = Conversation("webhook", "room", "team", thread="t1")
    message = Message(id="webhook:team:q1", conversation=conv, user="ann", text="question?")
    reply = Reply(message_id=message.id, conversation=conv, text="answer.")
    await transcript.record(message, reply, Generated(text="answer.", model="m"), 12, [])
    await transcript.record(message, reply, Generated(text="answer.", model="m"), 12, [])
    assert counting.statements == 2
    rows = await runtime.pool.fetch(
        "SELECT direction, user_id, text, model, latency_ms FROM messages "
        "WHERE conversation_id = $1 ORDER BY id", conv.key)
    assert [tuple(r) for r in rows] == [("in", "ann", "question?", None, None),
                                        ("out", None, "answer.", "m", 12)]
    thread = await runtime.pool.fetchval("SELECT thread FROM conversations WHERE id = $1",
                                         conv.key)
    assert thread == "t1"


async def test_concurrent_exchanges_share_transactions_and_a_bad_row_fails_alone(
        runtime: Runtime) -> None:
    counting = OneStatementPool(runtime.pool)
    transcript = Transcript(counting)
    conv = Conversation("webhook", "busy", "team")

    def exchange(n: int) -> tuple[Message, Reply]:
        # Postgres refuses a NUL character in text: this row fails in any batch
        text = "bad\x00text" if n == 7 else f"question {n}?"
        message = Message(id=f"webhook:team:c{n}", conversation=conv, user="ann", text=text)
        return message, Reply(message_id=message.id, conversation=conv, text=f"answer {n}.")

    outcomes = await asyncio.gather(
        *[transcript.record(*exchange(n), None, 1, []) for n in range(20)],
        return_exceptions=True)
    failed = [n for n, outcome in enumerate(outcomes) if outcome is not None]
    assert failed == [7]
    assert isinstance(outcomes[7], asyncpg.PostgresError)
    # the first call went alone, the rest waited for it and went together; the failed
    # batch was then written row by row
    assert counting.transactions < counting.statements
    rows = await runtime.pool.fetch(
        "SELECT message_id FROM messages WHERE conversation_id = $1 AND direction = 'in' "
        "ORDER BY id", conv.key)
    assert [r["message_id"] for r in rows] == [f"webhook:team:c{n}" for n in range(20)
                                               if n != 7]
