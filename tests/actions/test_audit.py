"""The audit log on the real Postgres: one row per call id, even when two workers insert it
at the same moment; a second write never changes a row."""

from __future__ import annotations

import asyncio

from actions.audit import AuditLog
from bot.messages import Conversation, Message
from bot.runtime import Runtime

INSERT = ("INSERT INTO action_runs (call_id, message_id, action, via, platform, channel, "
          "user_id, status, reply, trace_id) VALUES ($1, $1, 'whoami', 'command', 'webhook', "
          "'c1', 'bob', 'ok', 'You are webhook:bob', 'tr4ce0other0')")


def message(message_id: str) -> Message:
    return Message(id=message_id, user="bob", text="!whoami",
                   conversation=Conversation("webhook", "c1", "support"))


async def test_begin_finds_a_row_another_worker_committed_while_it_waited(
        runtime: Runtime) -> None:
    """Our insert waits on the other worker's uncommitted insert of the same call id; once
    that commits, `begin` must return the other run, not report that it inserted."""
    log = AuditLog(runtime.pool)
    call_id = "webhook:support:race"
    async with runtime.pool.acquire() as other:
        tx = other.transaction()
        await tx.start()
        await other.execute(INSERT, call_id)
        ours = asyncio.create_task(log.begin(call_id, "whoami", "command", message(call_id),
                                             {}, "tr4ce0ours00"))
        while not await runtime.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'INSERT INTO action_runs%'"):
            await asyncio.sleep(0.02)
        await tx.commit()
    prior = await asyncio.wait_for(ours, 10)
    assert prior is not None
    assert (prior.status, prior.reply, prior.trace_id) == ("ok", "You are webhook:bob",
                                                           "tr4ce0other0")


async def test_record_leaves_an_existing_row_alone(runtime: Runtime) -> None:
    log = AuditLog(runtime.pool)
    call_id = "webhook:support:recorded"
    await runtime.pool.execute(INSERT, call_id)
    await log.record(call_id, "whoami", "command", message(call_id), {"user": "x"},
                     "tr4ce0later0", "denied", "Sorry.", error="you may not run `whoami`")
    row = await runtime.pool.fetchrow(
        "SELECT status, reply, error, trace_id FROM action_runs WHERE call_id = $1", call_id)
    assert dict(row) == {"status": "ok", "reply": "You are webhook:bob", "error": None,
                         "trace_id": "tr4ce0other0"}
    fresh = "webhook:support:fresh"
    await log.record(fresh, "whoami", "command", message(fresh), {}, "tr4ce0fresh0",
                     "denied", "Sorry.", error="you may not run `whoami`")
    assert await runtime.pool.fetchval(
        "SELECT error FROM action_runs WHERE call_id = $1", fresh) == "you may not run `whoami`"
