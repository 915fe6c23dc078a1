"""The transcript: an exchange is recorded in one statement (one round trip), atomically."""

from __future__ import annotations

from typing import Any

from bot.messages import Conversation, Message, Reply
from bot.protocols import Generated
from bot.runtime import Runtime
from bot.transcript import Transcript


class OneStatementPool:
    """Lets `execute` through to the real pool and counts it; anything else fails."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.statements = 0

    async def execute(self, query: str, *args: Any) -> str:
        self.statements += 1
        result: str = await self.pool.execute(query, *args)
        return result

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
