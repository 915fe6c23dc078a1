"""One conversation for the console: its transcript in order, each answer's sources,
verdicts, removals, stage times and the action runs of each inbound message, with its review
state (`get_conversation`; one SQL statement)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

CONVERSATION_SQL = """
SELECT c.id, c.platform, c.workspace, c.channel, c.thread, c.created_at, c.last_message_at,
       coalesce(r.tags, '{}') AS tags, r.reviewed_at, r.reviewed_by,
       e.direction, e.message_id, e.user_id, e.text, e.created_at AS entry_at, e.sources,
       e.verdicts, e.filtered, e.model, e.latency_ms, e.tokens_in, e.tokens_out, e.feedback,
       e.error, e.trace_id, e.action, e.stage_ms, runs.runs
FROM conversations c
LEFT JOIN conversation_reviews r ON r.conversation_id = c.id
LEFT JOIN LATERAL (
    SELECT m.* FROM messages m WHERE m.conversation_id = c.id
    ORDER BY m.created_at DESC, m.message_id DESC, m.direction DESC, m.id DESC
    LIMIT $2) AS e ON true
LEFT JOIN LATERAL (
    SELECT jsonb_agg(jsonb_build_object(
               'action', a.action, 'via', a.via, 'status', a.status, 'args', a.args,
               'error', a.error, 'duration_ms', a.duration_ms, 'started_at', a.started_at,
               'trace_id', a.trace_id) ORDER BY a.started_at, a.id) AS runs
    FROM action_runs a WHERE e.direction = 'in' AND a.message_id = e.message_id) AS runs ON true
WHERE c.id = $1
ORDER BY e.created_at, e.message_id, e.direction, e.id"""

@dataclass(frozen=True)
class ActionRunRow:
    """One audit row of an action run (arguments as stored: secrets already redacted)."""

    action: str
    via: str
    status: str
    args: dict[str, Any]
    error: str | None
    duration_ms: int | None
    started_at: datetime
    trace_id: str


@dataclass(frozen=True)
class TranscriptEntry:
    """One transcript row: an inbound message ('in') or a reply ('out'), with what was recorded
    about it; `action_runs` are the audit rows of an inbound message's actions."""

    direction: str
    message_id: str
    user_id: str | None
    text: str
    created_at: datetime
    sources: list[dict[str, Any]]
    verdicts: list[dict[str, Any]]
    filtered: list[dict[str, Any]]
    model: str | None
    latency_ms: int | None
    tokens_in: int | None
    tokens_out: int | None
    feedback: int | None
    error: str | None
    trace_id: str | None
    action: str | None
    stage_ms: dict[str, int]
    action_runs: list[ActionRunRow]


@dataclass(frozen=True)
class ConversationDetail:
    """One conversation, its review and its transcript (the last `max_entries` rows, in
    order)."""

    id: str
    platform: str
    workspace: str | None
    channel: str
    thread: str | None
    created_at: datetime
    last_message_at: datetime
    tags: list[str]
    reviewed_at: datetime | None
    reviewed_by: str | None
    entries: list[TranscriptEntry]


def _json(raw: Any) -> Any:
    """A json/jsonb value as asyncpg returns it (text, unless a codec decodes it)."""
    return json.loads(raw) if isinstance(raw, str | bytes) else raw


def _stages(raw: Any) -> dict[str, int]:
    """Milliseconds by stage, in pipeline order, from the column's [[name, ms], ...] (or an
    object {name: ms})."""
    pairs = raw.items() if isinstance(raw, dict) else raw or ()
    return {str(name): int(ms) for name, ms in pairs}


def _run(data: dict[str, Any]) -> ActionRunRow:
    return ActionRunRow(
        action=data["action"], via=data["via"], status=data["status"],
        args=dict(data.get("args") or {}), error=data.get("error"),
        duration_ms=data.get("duration_ms"),
        started_at=datetime.fromisoformat(data["started_at"]), trace_id=data["trace_id"])


async def get_conversation(pool: asyncpg.Pool, conversation_id: str, *,
                           max_entries: int = 1000) -> ConversationDetail | None:
    """The conversation with its last `max_entries` transcript rows in order (by time; the
    inbound row of an exchange before its reply), or None when there is none by that id."""
    if "\x00" in conversation_id:  # no id holds one (PostgreSQL text cannot)
        return None
    records = await pool.fetch(CONVERSATION_SQL, conversation_id, max(0, max_entries))
    if not records:
        return None
    head = records[0]
    entries = [TranscriptEntry(
        direction=r["direction"], message_id=r["message_id"], user_id=r["user_id"],
        text=r["text"], created_at=r["entry_at"], sources=list(_json(r["sources"])),
        verdicts=list(_json(r["verdicts"])), filtered=list(_json(r["filtered"])),
        model=r["model"], latency_ms=r["latency_ms"], tokens_in=r["tokens_in"],
        tokens_out=r["tokens_out"], feedback=r["feedback"], error=r["error"],
        trace_id=r["trace_id"], action=r["action"],
        stage_ms=_stages(_json(r["stage_ms"])),
        action_runs=[_run(a) for a in _json(r["runs"]) or []])
        for r in records if r["direction"] is not None]
    return ConversationDetail(
        id=head["id"], platform=head["platform"], workspace=head["workspace"],
        channel=head["channel"], thread=head["thread"], created_at=head["created_at"],
        last_message_at=head["last_message_at"], tags=list(head["tags"]),
        reviewed_at=head["reviewed_at"], reviewed_by=head["reviewed_by"], entries=entries)
