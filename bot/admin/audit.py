"""The console's audit trail: one `admin_audit` row per admin action (migrations/0005_admin.sql):
who (the principal's name and role), what, on what, from where. This module is the only
writer of the table.

Details are redacted as action arguments are (actions/audit.py): values under keys named
like secrets become "[REDACTED]", strings lose secrets, card numbers and IBANs. The engine may
not import `actions`, so the same rules are applied here with the same redactor.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from bot.admin.auth import Principal
from bot.guardrails.pii import PIIRedactor

#: Keys whose values are never stored (as in actions/audit.py).
SECRET_NAME = re.compile(r"secret|token|passw|api_?key|authorization|credential|private_?key|"
                         r"cookie|csrf", re.IGNORECASE)
#: The longest string kept in a row's detail or target; longer ones are cut.
MAX_TEXT_CHARS = 2000
_redactor = PIIRedactor(kinds=("secret", "card", "iban"))


@dataclass(frozen=True)
class AuditRow:
    at: datetime
    actor: str
    role: str
    action: str
    target: str | None
    detail: dict[str, Any]
    remote_addr: str | None


def redact_text(text: str) -> str:
    """`text` cut to MAX_TEXT_CHARS, with secrets, card numbers and IBANs replaced by
    `[KIND]`."""
    return _redactor.redact(text[:MAX_TEXT_CHARS])[0]


def redact_detail(value: Any, key: str = "") -> Any:
    """`value` fit for a row: JSON types only (others as their `str`), redacted."""
    if key and SECRET_NAME.search(key):
        return "[REDACTED]"
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {str(k): redact_detail(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_detail(v, key) for v in value]
    return redact_text(str(value))


async def record(pool: asyncpg.Pool, principal: Principal, action: str,
                 target: str | None = None, detail: Mapping[str, Any] | None = None,
                 remote_addr: str | None = None) -> None:
    """Write the row of `principal`'s `action` (e.g. "document.upload") on `target`."""
    await pool.execute(
        """INSERT INTO admin_audit (actor, role, action, target, detail, remote_addr)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6)""",
        principal.name, str(principal.role), action,
        redact_text(target) if target is not None else None,
        json.dumps(redact_detail(dict(detail or {}))), remote_addr)


async def recent(pool: asyncpg.Pool, limit: int = 100) -> list[AuditRow]:
    """The newest `limit` rows, newest first."""
    rows = await pool.fetch(
        """SELECT at, actor, role, action, target, detail::text AS detail, remote_addr
           FROM admin_audit ORDER BY at DESC, id DESC LIMIT $1""", limit)
    return [AuditRow(at=r["at"], actor=r["actor"], role=r["role"], action=r["action"],
                     target=r["target"], detail=json.loads(r["detail"]),
                     remote_addr=r["remote_addr"]) for r in rows]
