"""The audit log on the real Postgres: one row per call id, even when two workers insert it
at the same moment; a second write never changes a row."""

from __future__ import annotations

import asyncio

from actions.audit import AuditLog, PriorRun
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


async def test_concurrent_begins_share_a_statement_and_each_learns_its_own_outcome(
        runtime: Runtime) -> None:
    """Rows begun at the same time go in one statement; a call id that has a row already,
    or that comes twice in the batch, gets the prior run; a row Postgres refuses fails only
    its own caller."""
    log = AuditLog(runtime.pool)
    await runtime.pool.execute(INSERT, "webhook:support:b-old")
    ids = [f"webhook:support:b-{n}" for n in range(8)] + ["webhook:support:b-old",
                                                          "webhook:support:b-3"]

    async def begin(call_id: str) -> PriorRun | None:
        # Postgres refuses a NUL character in text: this row fails in any batch
        user_text = "bad\x00" if call_id.endswith("b-5") else "fine"
        return await log.begin(call_id, "whoami", "command", message(call_id),
                               {"note": user_text}, "tr4ce0batch0", status="ok",
                               reply="You are webhook:bob")

    outcomes = await asyncio.gather(*[begin(i) for i in ids], return_exceptions=True)
    assert [o is None for o in outcomes[:8]] == [True] * 5 + [False] + [True] * 2
    assert isinstance(outcomes[5], Exception)
    for prior in outcomes[8:]:  # the old row, and the second b-3 (the first one's row)
        assert isinstance(prior, PriorRun) and prior.status == "ok"
    assert log._batched.batches < len(ids)
    rows = await runtime.pool.fetch(
        "SELECT call_id FROM action_runs WHERE call_id LIKE 'webhook:support:b-%' "
        "ORDER BY id")
    assert [r["call_id"] for r in rows] == ["webhook:support:b-old"] + [
        f"webhook:support:b-{n}" for n in range(8) if n != 5]
