"""Running actions through the real engine (webhook platform, real Postgres and Redis):
replies and audit rows for every outcome, confirmation buttons, retries, exactly-once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.messages import Conversation, Message
from tests.actions import sample_actions
from tests.fakes.bot_server import Server

POLICY = """
[roles]
support = ["webhook:user:alice"]
ops = ["webhook:user:olga"]
admins = ["webhook:user:root"]
"""
SECRET = "ghp_0123456789abcdefABCDEF0123456789abcd"


@pytest.fixture
async def srv(server_factory: Callable[..., Any], tmp_path: Path) -> Server:
    sample_actions.CALLS.clear()
    policy = tmp_path / "actions.toml"
    policy.write_text(POLICY)
    server: Server = await server_factory(bot_action_modules="tests.actions.sample_actions",
                                          bot_actions_policy=policy)
    return server


_ids = iter(range(10**6))


async def say(srv: Server, user: str, text: str | None = None, *, button: str | None = None,
              conversation: str = "c1", msg_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"id": msg_id or f"m{next(_ids)}", "user": user,
                            "conversation": conversation}
    if text is not None:
        body["text"] = text
    if button is not None:
        body["button"] = button
    status, reply = await srv.post(json.dumps(body).encode(),
                                   path="/webhooks/support?wait=true")
    assert status == 200, reply
    assert isinstance(reply, dict)
    return reply


async def audit(srv: Server) -> list[dict[str, Any]]:
    rows = await srv.rt.pool.fetch(
        "SELECT action, via, status, user_id, args, reply, error, trace_id, attempts, "
        "duration_ms FROM action_runs ORDER BY id")
    return [{**dict(r), "args": json.loads(r["args"])} for r in rows]


async def test_each_outcome_has_its_reply_and_audit_row(srv: Server) -> None:
    ok = await say(srv, "bob", "!whoami")
    assert ok["answer"] == "You are webhook:bob"
    failed = await say(srv, "bob", "!boom")
    refused = await say(srv, "bob", "!refuse")
    slow = await say(srv, "bob", "!slow")
    denied = await say(srv, "bob", "!create_ticket Printer on fire")
    invalid = await say(srv, "alice", "!create_ticket ab priority=urgent")
    unknown = await say(srv, "bob", "!no_such_thing")
    rows = await audit(srv)
    by_action = {(r["action"], r["status"]): r for r in rows}
    assert [(r["action"], r["status"]) for r in rows] == [
        ("whoami", "ok"), ("boom", "failed"), ("refuse", "failed"), ("slow", "timeout"),
        ("create_ticket", "denied"), ("create_ticket", "invalid_args")]
    boom = by_action[("boom", "failed")]
    assert failed["answer"] == f"Sorry, `boom` failed (trace id {boom['trace_id']})."
    assert boom["error"].startswith("RuntimeError: kaboom") and SECRET not in boom["error"]
    assert refused["answer"].startswith("Sorry, `refuse` failed: the tracker is read-only")
    timeout = by_action[("slow", "timeout")]
    assert f"within 0.3 s and was stopped (trace id {timeout['trace_id']})" in slow["answer"]
    assert timeout["duration_ms"] >= 300 and timeout["attempts"] == 1
    assert denied["answer"] == "Sorry, you may not run `create_ticket` (it needs the role: " \
                               "support)."
    assert by_action[("create_ticket", "denied")]["user_id"] == "bob"
    assert "title:" in invalid["answer"] and "priority:" in invalid["answer"]
    assert "Usage: `!create_ticket <title> [priority=low|normal|high]`" in invalid["answer"]
    assert by_action[("create_ticket", "invalid_args")]["args"] == {
        "title": "ab", "priority": "urgent"}
    assert unknown["answer"] == "There is no action `no_such_thing`. Try `!help`."
    assert sample_actions.CALLS == [("whoami", "bob", ""), ("boom", "bob")]
    # action replies are in the transcript, named, and never in memory
    named = await srv.rt.pool.fetch("SELECT DISTINCT action FROM messages WHERE direction = "
                                    "'out' ORDER BY 1")
    assert [r["action"] for r in named] == ["boom", "create_ticket", "refuse", "slow",
                                            "unknown", "whoami"]
    assert await srv.rt.memory.load("webhook:support:c1:-") == []


async def test_confirmation_runs_once_and_only_for_the_requester(srv: Server) -> None:
    asked = await say(srv, "alice", "!create_ticket Printer on fire priority=high")
    assert asked["answer"].startswith('Run `create_ticket` with title="Printer on fire", '
                                      'priority="high"?')
    confirm, cancel = asked["buttons"]
    assert (confirm["label"], cancel["label"]) == ("Confirm", "Cancel")
    assert sample_actions.CALLS == []
    stranger = await say(srv, "mallory", button=confirm["token"])
    assert stranger["answer"] == "Only the person who asked can confirm or cancel this."
    done = await say(srv, "alice", button=confirm["token"], msg_id="press-1")
    assert done["answer"] == "Opened ticket #1: Printer on fire (high)"
    again = await say(srv, "alice", button=confirm["token"])
    assert again["answer"] == "This was already answered."
    # the platform delivering the same press twice: one run
    status, _ = await srv.post(json.dumps({"id": "press-1", "user": "alice", "conversation":
                                           "c1", "button": confirm["token"]}).encode())
    assert status == 200
    assert sample_actions.CALLS == [("create_ticket", "alice", "Printer on fire", "high")]
    late_cancel = await say(srv, "alice", button=cancel["token"])
    assert late_cancel["answer"] == "This was already answered."
    second = await say(srv, "alice", "!create_ticket Toner low")
    cancelled = await say(srv, "alice", button=second["buttons"][1]["token"])
    assert cancelled["answer"] == "Cancelled: `create_ticket` did not run."
    expired = await say(srv, "alice", button="cNOSUCHTOKEN")
    assert expired["answer"].startswith("This button has expired")
    rows = [(r["action"], r["via"], r["status"], r["user_id"]) for r in await audit(srv)]
    assert rows == [("create_ticket", "command", "needs_confirmation", "alice"),
                    ("create_ticket", "button", "denied", "mallory"),
                    ("create_ticket", "button", "ok", "alice"),
                    ("create_ticket", "command", "needs_confirmation", "alice"),
                    ("create_ticket", "button", "cancelled", "alice")]


async def test_a_role_lost_before_confirming_denies(srv: Server) -> None:
    asked = await say(srv, "alice", "!create_ticket Printer on fire")
    # the deployer takes the role away (the live policy) before alice presses Confirm
    srv.rt.action_runner.permissions.policy = srv.rt.action_runner.permissions.policy.model_copy(
        update={"roles": {"support": frozenset()}})
    pressed = await say(srv, "alice", button=asked["buttons"][0]["token"])
    assert pressed["answer"].startswith("Sorry, you may not run `create_ticket`")
    assert sample_actions.CALLS == []


async def test_buttons_from_results_run_as_whoever_presses(srv: Server) -> None:
    menu = await say(srv, "bob", "!menu")
    who, ticket = menu["buttons"]
    assert who["label"] == "Who am I?" and who["token"].startswith("r")
    assert (await say(srv, "carol", button=who["token"]))["answer"] == "You are webhook:carol"
    assert (await say(srv, "bob", button=ticket["token"]))["answer"].startswith(
        "Sorry, you may not run")
    asked = await say(srv, "alice", button=ticket["token"])
    assert asked["answer"].startswith('Run `create_ticket` with title="Printer jam"')


async def test_only_idempotent_actions_are_retried(srv: Server) -> None:
    sample_actions.FLAKY_FAILURES["left"] = 2
    assert (await say(srv, "bob", "!flaky"))["answer"] == "worked"
    assert (await say(srv, "bob", "!boom"))["answer"].startswith("Sorry, `boom` failed")
    rows = {r["action"]: r for r in await audit(srv)}
    assert rows["flaky"]["attempts"] == 3 and rows["flaky"]["status"] == "ok"
    assert rows["boom"]["attempts"] == 1
    assert [c[0] for c in sample_actions.CALLS] == ["flaky"] * 3 + ["boom"]


async def crashed_run(srv: Server, message_id: str, action: str, user: str,
                      trace_id: str) -> Message:
    """A message whose action run was begun by a worker that then died: its audit row is
    still `running`."""
    await srv.rt.pool.execute(
        "INSERT INTO action_runs (call_id, message_id, action, via, platform, channel, user_id,"
        " status, trace_id) VALUES ($1, $1, $2, 'command', 'webhook', 'c1', $3, 'running', $4)",
        message_id, action, user, trace_id)
    return Message(id=message_id, user=user, text=f"!{action}",
                   conversation=Conversation("webhook", "c1", "support"))


async def test_a_run_interrupted_by_a_crash_is_not_repeated(srv: Server) -> None:
    runner = srv.rt.action_runner
    message = await crashed_run(srv, "webhook:support:crashed", "deploy", "olga",
                                "tr4ce1d00000")
    outcome = await runner.invoke(message, "deploy", "command", call_id=message.id,
                                  text=f"web api_token={SECRET}")
    assert outcome.status == "interrupted" and "tr4ce1d00000" in outcome.text
    assert sample_actions.CALLS == []
    # an idempotent one is run again; a finished one gives back its reply
    message2 = await crashed_run(srv, "webhook:support:crashed2", "flaky", "bob",
                                 "tr4ce2d00000")
    sample_actions.FLAKY_FAILURES["left"] = 0
    rerun = await runner.invoke(message2, "flaky", "command", call_id=message2.id)
    assert rerun.status == "ok" and rerun.trace_id == "tr4ce2d00000"
    again = await runner.invoke(message2, "flaky", "command", call_id=message2.id)
    assert (again.status, again.text) == ("ok", "worked")
    assert sample_actions.CALLS == [("flaky", "bob")]
    # the role was taken away before the retry: still "interrupted", and the row finished
    message3 = await crashed_run(srv, "webhook:support:crashed3", "deploy", "bob",
                                 "tr4ce3d00000")
    late = await runner.invoke(message3, "deploy", "command", call_id=message3.id, text="web")
    assert late.status == "interrupted" and "tr4ce3d00000" in late.text
    status = await srv.rt.pool.fetchval(
        "SELECT status FROM action_runs WHERE call_id = 'webhook:support:crashed3'")
    assert status == "interrupted"


async def test_secrets_in_arguments_never_reach_the_audit_row(srv: Server) -> None:
    reply = await say(srv, "olga", f'!deploy web api_token=hunter2hunter2 note="key {SECRET}"')
    assert reply["answer"] == "Deployed web."
    [row] = await audit(srv)
    assert row["args"] == {"service": "web", "api_token": "[REDACTED]",
                           "note": "key [SECRET]"}
    raw = await srv.rt.pool.fetchval("SELECT action_runs::text FROM action_runs")
    assert "hunter2" not in raw and SECRET not in raw


def webhook_message(message_id: str, user: str, text: str) -> Message:
    return Message(id=message_id, user=user, text=text,
                   conversation=Conversation("webhook", "c1", "support"))


async def test_cancelling_an_idempotent_run_stops_it(srv: Server) -> None:
    """A cancelled attempt is not retried: the cancellation reaches whoever cancelled (the
    message's timeout), and the row stays `running` for the message's retry."""
    message = webhook_message("webhook:support:cancel", "bob", "!patient")
    run = asyncio.create_task(srv.rt.action_runner.invoke(message, "patient", "command",
                                                          call_id=message.id))
    while not sample_actions.CALLS:
        await asyncio.sleep(0.01)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, 10)
    await asyncio.sleep(0.5)  # (a swallowed cancellation would start a second attempt)
    assert sample_actions.CALLS == [("patient", "bob")]
    [row] = await audit(srv)
    assert (row["action"], row["status"]) == ("patient", "running")


async def test_secret_typed_arguments_are_redacted_in_every_row(srv: Server) -> None:
    """`code` is a SecretStr whose name and value look like nothing secret: denied and
    invalid calls (raw arguments) and the error text of a failed run still hide it."""
    denied = await say(srv, "bob", "!unlock 3 code=opensesame42")
    assert denied["answer"].startswith("Sorry, you may not run `unlock`")
    await say(srv, "olga", "!unlock third code=opensesame42")
    failed = await say(srv, "olga", "!unlock 3 code=opensesame42")
    assert failed["answer"].startswith("Sorry, `unlock` failed (trace id")
    short = await say(srv, "olga", "!unlock 3 code=short42")  # its validator repeats it
    assert "code [REDACTED] is shorter than 8" in short["answer"]
    rows = await audit(srv)
    assert [(r["status"], r["args"]) for r in rows] == [
        ("denied", {"door": "3", "code": "[REDACTED]"}),
        ("invalid_args", {"door": "third", "code": "[REDACTED]"}),
        ("failed", {"door": 3, "code": "[REDACTED]"}),
        ("invalid_args", {"door": "3", "code": "[REDACTED]"})]
    assert rows[2]["error"] == "RuntimeError: door 3 rejected code [REDACTED]"
    raw = await srv.rt.pool.fetchval("SELECT string_agg(action_runs::text, ' ') "
                                     "FROM action_runs")
    assert "opensesame42" not in raw and "short42" not in raw


async def test_an_actions_own_timeout_error_is_a_failure_not_a_timeout(srv: Server) -> None:
    reply = await say(srv, "bob", "!upstream")
    assert reply["answer"].startswith("Sorry, `upstream` failed (trace id")
    [row] = await audit(srv)
    assert (row["status"], row["error"]) == ("failed", "TimeoutError: the tracker took too long")


async def test_a_retry_of_a_run_is_answered_as_it_ran_even_when_now_denied(srv: Server) -> None:
    runner = srv.rt.action_runner
    message = webhook_message("webhook:support:deploy-1", "olga", "!deploy web")
    first = await runner.invoke(message, "deploy", "command", call_id=message.id,
                                text="web api_token=abc")
    assert (first.status, first.text) == ("ok", "Deployed web.")
    runner.permissions.policy = runner.permissions.policy.model_copy(
        update={"roles": {"ops": frozenset()}})
    again = await runner.invoke(message, "deploy", "command", call_id=message.id,
                                text="web api_token=abc")
    assert (again.status, again.text, again.trace_id) == ("ok", "Deployed web.",
                                                          first.trace_id)
    assert sample_actions.CALLS == [("deploy", "olga", "web")]
    assert [r["status"] for r in await audit(srv)] == ["ok"]


async def test_buttons_that_cannot_be_stored_fail_the_run_before_it_is_finished(
        srv: Server) -> None:
    runner = srv.rt.action_runner
    message = webhook_message("webhook:support:bad-menu", "bob", "!bad_menu")
    outcome = await runner.invoke(message, "bad_menu", "command", call_id=message.id)
    assert outcome.status == "failed" and outcome.buttons == ()
    [row] = await audit(srv)
    assert row["status"] == "failed" and row["error"].startswith("TypeError:")


async def test_help_shows_the_deployments_confirm(srv: Server) -> None:
    from actions.policy import ActionOverride

    permissions = srv.rt.action_runner.permissions
    permissions.policy = permissions.policy.model_copy(
        update={"actions": {"whoami": ActionOverride(confirm=True)}})
    shown = await say(srv, "bob", "!help whoami")
    assert "Asks for confirmation before it runs." in shown["answer"]
    asked = await say(srv, "bob", "!whoami")
    assert [b["label"] for b in asked["buttons"]] == ["Confirm", "Cancel"]


async def test_a_read_only_action_writes_its_audit_row_once_when_it_ended(
        srv: Server) -> None:
    """No `running` row first (one SQL statement instead of two): the row appears finished,
    with its attempts and duration; a redelivery runs it again and keeps the first row."""
    gate = asyncio.Event()
    sample_actions.PEEK_GATE[:] = [gate]
    try:
        message = webhook_message("webhook:support:peek-1", "bob", "!peek")
        run = asyncio.create_task(srv.rt.action_runner.invoke(message, "peek", "command",
                                                              call_id=message.id))
        while not sample_actions.CALLS:
            await asyncio.sleep(0.01)
        assert await audit(srv) == []  # running, and no row yet
        gate.set()
        outcome = await asyncio.wait_for(run, 10)
        assert (outcome.status, outcome.text) == ("ok", "peeked")
        [row] = await audit(srv)
        assert (row["action"], row["status"], row["attempts"], row["reply"]) == (
            "peek", "ok", 1, "peeked")
        assert row["duration_ms"] is not None and await srv.rt.pool.fetchval(
            "SELECT finished_at IS NOT NULL FROM action_runs")
        again = await srv.rt.action_runner.invoke(message, "peek", "command",
                                                  call_id=message.id)
        assert again.status == "ok" and len(sample_actions.CALLS) == 2
        assert len(await audit(srv)) == 1
    finally:
        sample_actions.PEEK_GATE.clear()
