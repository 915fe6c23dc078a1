"""The audit trail: one `action_runs` row per invocation (migrations/0003_actions.sql): who,
what arguments (secrets redacted), the outcome, duration, trace id.

The row is also what makes a run happen once: it is inserted as `running` (keyed by the
invocation's `call_id`) before the action runs, and a retry of the same invocation (a worker
crash, a redelivery) finds it: a finished row gives back its reply without running again; a
row still `running` means the earlier attempt died mid-run, and only an idempotent action is
run again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import BaseModel, SecretBytes, SecretStr

from bot.guardrails.pii import PIIRedactor
from bot.messages import Message

SECRET_NAME = re.compile(r"secret|token|passw|api_?key|authorization|credential|private_?key",
                         re.IGNORECASE)
RESULT_MAX_CHARS = 2000
_redactor = PIIRedactor(kinds=("secret", "card", "iban"))


def redact_text(text: str) -> str:
    """Secrets, card numbers and IBANs in free text replaced by `[KIND]`."""
    return _redactor.redact(text)[0]


def redact_args(args: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """Arguments fit for the audit row: fields named like secrets or typed SecretStr become
    "[REDACTED]"; other strings lose secrets, card numbers and IBANs (`redact_text`)."""
    if isinstance(args, BaseModel):
        secret_fields = {name for name, info in type(args).model_fields.items()
                         if info.annotation in (SecretStr, SecretBytes)}
        raw: dict[str, Any] = args.model_dump(mode="json")
        for name in secret_fields:
            raw[name] = "[REDACTED]"
    else:
        raw = dict(args)
    return {key: _redact_value(key, value) for key, value in raw.items()}


def _redact_value(key: str, value: Any) -> Any:
    if value == "[REDACTED]":
        return value
    if SECRET_NAME.search(str(key)):
        return "[REDACTED]"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(key, v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class PriorRun:
    """An audit row found for an invocation that is being retried."""

    status: str
    reply: str
    trace_id: str


class AuditLog:
    """Writes and reads `action_runs`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def begin(self, call_id: str, action: str, via: str, message: Message,
                    args: dict[str, Any], trace_id: str, status: str = "running",
                    reply: str = "") -> PriorRun | None:
        """Insert the row; when one with this `call_id` exists, return it instead."""
        conv = message.conversation
        row = await self._pool.fetchrow(
            """WITH ins AS (
                 INSERT INTO action_runs (call_id, message_id, action, via, platform, workspace,
                                          channel, thread, user_id, args, status, reply,
                                          trace_id, finished_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13,
                         CASE WHEN $11 = 'running' THEN NULL ELSE now() END)
                 ON CONFLICT (call_id) DO NOTHING RETURNING id)
               SELECT (SELECT id FROM ins) AS inserted, status, reply, trace_id
               FROM action_runs WHERE call_id = $1""",
            call_id, message.id, action, via, conv.platform, conv.workspace, conv.channel,
            conv.thread, message.user, json.dumps(args), status, redact_text(reply), trace_id)
        if row is None or row["inserted"] is not None:
            return None
        return PriorRun(status=row["status"], reply=row["reply"] or "",
                        trace_id=row["trace_id"])

    async def record(self, call_id: str, action: str, via: str, message: Message,
                     args: dict[str, Any], trace_id: str, status: str, reply: str,
                     error: str = "") -> None:
        """A finished row in one step (denials, argument errors, confirmation requests)."""
        await self.begin(call_id, action, via, message, args, trace_id, status=status,
                         reply=reply)
        if error:
            await self._pool.execute("UPDATE action_runs SET error = $2 WHERE call_id = $1",
                                     call_id, redact_text(error)[:RESULT_MAX_CHARS])

    async def finish(self, call_id: str, status: str, *, reply: str, result: str = "",
                     error: str = "", attempts: int, duration_ms: int) -> None:
        await self._pool.execute(
            """UPDATE action_runs SET status = $2, reply = $3, result = $4, error = $5,
                                      attempts = $6, duration_ms = $7, finished_at = now()
               WHERE call_id = $1""",
            call_id, status, redact_text(reply), redact_text(result)[:RESULT_MAX_CHARS] or None,
            redact_text(error)[:RESULT_MAX_CHARS] or None, attempts, duration_ms)
