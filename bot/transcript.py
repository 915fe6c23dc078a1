"""The transcript: every inbound message and every reply, in Postgres (`conversations`,
`messages`). Writes are idempotent per (message id, direction), so a redelivered message does
not add rows twice."""

from __future__ import annotations

import json
from dataclasses import asdict

import asyncpg

from bot.messages import Message, Reply
from bot.protocols import Generated


class Transcript:
    """Writes transcript rows."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, message: Message, reply: Reply, generated: Generated | None,
                     latency_ms: int, verdicts: list[dict[str, object]]) -> None:
        """Record the exchange in one transaction."""
        conv = message.conversation
        sources = json.dumps([asdict(s) for s in reply.sources])
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO conversations (id, platform, workspace, channel, thread)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (id) DO UPDATE SET last_message_at = now()""",
                conv.key, conv.platform, conv.workspace, conv.channel, conv.thread)
            await conn.execute(
                """INSERT INTO messages (conversation_id, direction, message_id, user_id, text)
                   VALUES ($1, 'in', $2, $3, $4) ON CONFLICT DO NOTHING""",
                conv.key, message.id, message.user, message.text)
            await conn.execute(
                """INSERT INTO messages (conversation_id, direction, message_id, text, sources,
                                         verdicts, model, latency_ms, tokens_in, tokens_out,
                                         error, trace_id)
                   VALUES ($1, 'out', $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8, $9, $10, $11)
                   ON CONFLICT DO NOTHING""",
                conv.key, message.id, reply.text, sources, json.dumps(verdicts),
                generated.model if generated else None, latency_ms,
                generated.tokens_in if generated else None,
                generated.tokens_out if generated else None,
                (generated.error or None) if generated else None,
                (generated.trace_id or None) if generated else None)
