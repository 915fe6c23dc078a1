"""The transcript: every inbound message and every reply, in Postgres (`conversations`,
`messages`). Writes are idempotent per (message id, direction), so a redelivered message does
not add rows twice."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from bot.batching import Batched
from bot.messages import Filtered, Message, Reply, jsonable
from bot.protocols import Generated
from bot.transient import row_error

#: One exchange: the conversation row is upserted in a CTE that the two message rows join.
_RECORD = """
WITH conv AS (
        INSERT INTO conversations (id, platform, workspace, channel, thread)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (id) DO UPDATE SET last_message_at = now()
        RETURNING id)
    INSERT INTO messages (conversation_id, direction, message_id, user_id, text,
                          sources, verdicts, model, latency_ms, tokens_in,
                          tokens_out, error, trace_id, action, filtered,
                          stage_ms)
    SELECT conv.id, r.direction, $6, r.user_id, r.text, r.sources, r.verdicts,
           r.model, r.latency_ms, r.tokens_in, r.tokens_out, r.error, r.trace_id,
           r.action, r.filtered, r.stage_ms
    FROM conv CROSS JOIN (VALUES
        ('in', $7::text, $8::text, '[]'::jsonb, '[]'::jsonb, NULL::text,
         NULL::integer, NULL::integer, NULL::integer, NULL::text, NULL::text,
         NULL::text, '[]'::jsonb, '[]'::jsonb),
        ('out', NULL, $9, $10::jsonb, $11::jsonb, $12, $13, $14, $15, $16, $17,
         $18, $19::jsonb, $20::jsonb)
    ) AS r (direction, user_id, text, sources, verdicts, model, latency_ms,
            tokens_in, tokens_out, error, trace_id, action, filtered, stage_ms)
    ON CONFLICT DO NOTHING
"""


class Transcript:
    """Writes transcript rows."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._batched: Batched[tuple[Any, ...], None] = Batched(self._write,
                                                                 rerun_if=row_error)

    async def record(self, message: Message, reply: Reply, generated: Generated | None,
                     latency_ms: int, verdicts: list[dict[str, object]],
                     action: str | None = None,
                     filtered: tuple[Filtered, ...] | list[Filtered] = (),
                     stage_ms: dict[str, int] | None = None) -> None:
        """Record the exchange (one statement, atomic: the conversation row is upserted in a
        CTE that the two message rows join; exchanges recorded concurrently go in one
        transaction, bot/batching.py); `action` names the action that
        wrote the reply (None: the model or a rail did); `filtered` (column `filtered`, a JSON
        list of {"uri", "reason", "score", "removed_chars"}) is what the passage rails
        removed; `stage_ms` (column `stage_ms`, a JSON list of [stage name, milliseconds] in
        pipeline order) how long each stage took before the reply was recorded."""
        conv = message.conversation
        await self._batched((
            conv.key, conv.platform, conv.workspace, conv.channel, conv.thread, message.id,
            message.user, message.text, reply.text, json.dumps(jsonable(reply.sources)),
            json.dumps(verdicts), generated.model if generated else None, latency_ms,
            generated.tokens_in if generated else None,
            generated.tokens_out if generated else None,
            (generated.error or None) if generated else None,
            (generated.trace_id or None) if generated else None, action,
            json.dumps(jsonable(filtered)), json.dumps(list((stage_ms or {}).items()))))

    async def _write(self, rows: list[tuple[Any, ...]]) -> list[None]:
        """Write a batch of exchanges in one transaction (asyncpg's `executemany` is atomic
        and takes one round trip): the concurrent messages' rows share one commit. Rows go in
        conversation order (stable: a conversation's own rows keep theirs), so that two
        processes' batches lock conversation rows in the same order and cannot deadlock."""
        await self._pool.executemany(_RECORD, sorted(rows, key=lambda row: row[0]))
        return [None] * len(rows)

    async def last_answer_sources(self, conversation_key: str) -> list[dict[str, Any]] | None:
        """The sources of the conversation's last answer not written by an action (a list of
        `Source` fields as dicts), or None when there is no such answer."""
        raw = await self._pool.fetchval(
            """SELECT sources FROM messages
               WHERE conversation_id = $1 AND direction = 'out' AND action IS NULL
               ORDER BY created_at DESC, id DESC LIMIT 1""", conversation_key)
        if raw is None:
            return None
        value = json.loads(raw) if isinstance(raw, str) else raw
        return list(value)

    async def rate_last_answer(self, conversation_key: str, vote: int) -> bool:
        """Store `vote` (+1 thumbs up, -1 thumbs down) in `feedback` of the conversation's
        last answer not written by an action; False when there is none."""
        done = await self._pool.fetchval(
            """UPDATE messages SET feedback = $2 WHERE id = (
                 SELECT id FROM messages
                 WHERE conversation_id = $1 AND direction = 'out' AND action IS NULL
                 ORDER BY created_at DESC, id DESC LIMIT 1)
               RETURNING id""", conversation_key, vote)
        return done is not None
