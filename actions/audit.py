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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import asyncpg
from pydantic import BaseModel, SecretBytes, SecretStr

from actions.arguments import unwrap_optional
from bot.batching import Batched
from bot.guardrails.pii import PIIRedactor
from bot.messages import Message
from bot.transient import row_error

SECRET_NAME = re.compile(r"secret|token|passw|api_?key|authorization|credential|private_?key",
                         re.IGNORECASE)
RESULT_MAX_CHARS = 2000
_redactor = PIIRedactor(kinds=("secret", "card", "iban"))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with each of `secrets` (values of the current call's `SecretStr` arguments)
    replaced by "[REDACTED]", then secrets, card numbers and IBANs replaced by `[KIND]`."""
    for value in sorted({v for v in secrets if v}, key=len, reverse=True):
        text = text.replace(value, "[REDACTED]")
    return _redactor.redact(text)[0]


def _is_secret_type(annotation: Any) -> bool:
    inner, _ = unwrap_optional(annotation)
    return isinstance(inner, type) and issubclass(inner, (SecretStr, SecretBytes))


def secret_fields(model: type[BaseModel]) -> set[str]:
    """The keys under which `model` takes a `SecretStr`/`SecretBytes` (also inside
    Optional): each such field's name and its aliases."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        if _is_secret_type(info.annotation):
            keys.add(name)
            keys.update(a for a in (info.alias, info.validation_alias) if isinstance(a, str))
    return keys


def secret_values(args: BaseModel | dict[str, Any],
                  model: type[BaseModel] | None = None) -> list[str]:
    """The plain values of the top-level secret fields of `args`, a validated model or the
    raw arguments for `model` (to mask them in error texts)."""
    if isinstance(args, BaseModel):
        values = [getattr(args, name, None)
                  for name in secret_fields(type(args)) & set(type(args).model_fields)]
    else:
        values = [args.get(key) for key in secret_fields(model)] if model else []
    plain: list[str] = []
    for value in values:
        if isinstance(value, (SecretStr, SecretBytes)):
            value = value.get_secret_value()
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, str):
            plain.append(value)
    return plain


def redact_args(args: BaseModel | dict[str, Any], model: type[BaseModel] | None = None
                ) -> dict[str, Any]:
    """Arguments fit for the audit row: fields typed `SecretStr`/`SecretBytes` in the
    action's model (`model`, or the type of `args` when it is a model instance) or named like
    secrets become "[REDACTED]"; other strings lose secrets, card numbers and IBANs
    (`redact_text`). A raw dict (arguments that failed validation or were denied) is
    redacted by `model`'s field types, under the field names and their aliases."""
    if isinstance(args, BaseModel):
        model = type(args)
        raw: dict[str, Any] = args.model_dump(mode="json")
    else:
        raw = dict(args)
    hidden = secret_fields(model) if model is not None else set()
    return {key: "[REDACTED]" if key in hidden else _redact_value(key, value)
            for key, value in raw.items()}


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


#: What an invocation came to: an `Outcome`'s and an `action_runs` row's status ("running"
#: while a non-idempotent action runs).
Status = Literal["ok", "denied", "invalid_args", "needs_confirmation", "cancelled", "timeout",
                 "failed", "interrupted", "unknown", "expired", "running"]
STATUSES: frozenset[str] = frozenset(get_args(Status))


@dataclass(frozen=True, slots=True)
class PriorRun:
    """An audit row found for an invocation that is being retried."""

    status: Status
    reply: str
    trace_id: str


def _redacted(reply: str, result: str) -> tuple[str, str | None]:
    """(reply, result) redacted for a row; the result is most often the reply itself, and is
    redacted once then."""
    shown = redact_text(reply)
    kept = shown if result == reply else redact_text(result)
    return shown, kept[:RESULT_MAX_CHARS] or None


#: Rows as parallel arrays (one per column, in `begin`'s order), inserted in their order;
#: returns the call ids inserted.
_INSERT = """INSERT INTO action_runs (
    call_id, message_id, action, via, platform, workspace, channel, thread, user_id, args,
    status, reply, result, error, trace_id, attempts, duration_ms, finished_at)
SELECT r.call_id, r.message_id, r.action, r.via, r.platform, r.workspace, r.channel,
       r.thread, r.user_id, r.args::jsonb, r.status, r.reply, r.result, r.error, r.trace_id,
       r.attempts, r.duration_ms, CASE WHEN r.status = 'running' THEN NULL ELSE now() END
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
            $13::text[], $14::text[], $15::text[], $16::integer[], $17::integer[])
     WITH ORDINALITY AS r (call_id, message_id, action, via, platform, workspace, channel,
                           thread, user_id, args, status, reply, result, error, trace_id,
                           attempts, duration_ms, n)
ORDER BY r.n
ON CONFLICT (call_id) DO NOTHING RETURNING call_id
"""


class AuditLog:
    """Writes and reads `action_runs`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._batched: Batched[tuple[Any, ...], bool] = Batched(self._insert,
                                                                rerun_if=row_error)

    async def _insert(self, rows: list[tuple[Any, ...]]) -> list[bool]:
        """Insert a batch of rows in one statement; for each, whether it was inserted (False:
        its `call_id` had a row already, or came earlier in the batch)."""
        columns = list(zip(*rows, strict=True))
        inserted = {r["call_id"] for r in await self._pool.fetch(_INSERT, *columns)}
        out = []
        for row in rows:
            out.append(row[0] in inserted)
            inserted.discard(row[0])  # a repeat of a call id in the batch: a prior run
        return out

    async def begin(self, call_id: str, action: str, via: str, message: Message,
                    args: dict[str, Any], trace_id: str, status: str = "running",
                    reply: str = "", error: str = "", *, result: str = "", attempts: int = 0,
                    duration_ms: int | None = None) -> PriorRun | None:
        """Insert the row (`args` already redacted; `reply`, `result` and `error` are redacted
        here); when one with this `call_id` exists, return it instead and change nothing.
        A `status` other than "running" inserts a finished row.

        Two statements, so that the lookup sees a row another worker committed while our
        insert waited on it (a single statement's snapshot would not, and both would run).
        Rows inserted concurrently go in one statement and one commit (bot/batching.py).
        """
        conv = message.conversation
        inserted = await self._batched((
            call_id, message.id, action, via, conv.platform, conv.workspace, conv.channel,
            conv.thread, message.user, json.dumps(args), status, *_redacted(reply, result),
            redact_text(error)[:RESULT_MAX_CHARS] or None, trace_id, attempts, duration_ms))
        if inserted:
            return None
        prior = await self.find(call_id)
        if prior is None:  # deleted between the two statements: let the message be retried
            raise RuntimeError(f"action_runs row {call_id!r} vanished")
        return prior

    async def find(self, call_id: str) -> PriorRun | None:
        """The row of invocation `call_id`, if there is one."""
        row = await self._pool.fetchrow(
            "SELECT status, reply, trace_id FROM action_runs WHERE call_id = $1", call_id)
        if row is None:
            return None
        status = row["status"]
        if status not in STATUSES:  # a row written by a newer version: treat as a run that ended
            status = "failed"
        return PriorRun(status=cast(Status, status), reply=row["reply"] or "",
                        trace_id=row["trace_id"])

    async def record(self, call_id: str, action: str, via: str, message: Message,
                     args: dict[str, Any], trace_id: str, status: str, reply: str,
                     error: str = "") -> None:
        """A finished row in one step (denials, argument errors, confirmation requests);
        nothing changes when the invocation already has a row."""
        await self.begin(call_id, action, via, message, args, trace_id, status=status,
                         reply=reply, error=error)

    async def finish(self, call_id: str, status: str, *, reply: str, result: str = "",
                     error: str = "", attempts: int, duration_ms: int) -> None:
        await self._pool.execute(
            """UPDATE action_runs SET status = $2, reply = $3, result = $4, error = $5,
                                      attempts = $6, duration_ms = $7, finished_at = now()
               WHERE call_id = $1""",
            call_id, status, *_redacted(reply, result),
            redact_text(error)[:RESULT_MAX_CHARS] or None, attempts, duration_ms)
