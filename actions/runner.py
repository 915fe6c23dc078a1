"""Running actions: permission check, argument validation, confirmation, timeout, retries,
the audit row, and the reply. The same `ActionRunner.invoke` serves commands, buttons and LLM
tool calls; the caller always comes from the platform message (`Caller.of`), never from
arguments, so neither a user nor a model can act as somebody else.

Confirmation (`confirm=True`): the first invocation validates the call and stores it in Redis
(`<p>:action:call:<id>`, 15 minutes) and answers with Confirm/Cancel buttons; the action runs
when the same user presses Confirm, once (the first press claims the call). A tool call gets
the same buttons, so a model cannot skip them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from pydantic import BaseModel
from redis.asyncio import Redis

from actions.arguments import ArgumentError, parse_json_object, parse_text, usage, validate
from actions.audit import AuditLog, Status, redact_args, redact_text, secret_values
from actions.policy import Permissions
from actions.registry import Registry
from actions.spec import (
    ActionContext,
    ActionError,
    ActionResult,
    ActionSpec,
    Caller,
    LastAnswer,
    Via,
)
from bot import tracing
from bot.keys import Keys
from bot.log import get_logger
from bot.messages import Button, Message
from bot.protocols import Memory, Retriever
from bot.retrying import retried

log = get_logger("actions")
CONFIRM_TTL_S = 15 * 60
BUTTON_TTL_S = 24 * 3600
#: Statuses of a run that happened (or was cut short): a retry of its invocation gets the
#: stored reply back, whatever the permissions or arguments say now.
RAN = frozenset({"ok", "failed", "timeout", "interrupted"})


class _AttemptTimedOut(Exception):
    """The runner's own timeout stopped an attempt (not a TimeoutError the action raised)."""


def _retryable(exc: BaseException) -> bool:
    """An idempotent action's attempt is retried after an ordinary exception; never after
    `ActionError`, nor after cancellation (`CancelledError` is a `BaseException`), which must
    reach whoever cancelled."""
    return isinstance(exc, Exception) and not isinstance(exc, ActionError)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an invocation came to.

    Attributes:
        action: the action's name ("" when unknown).
        status: ok, denied, invalid_args, needs_confirmation, cancelled, timeout, failed,
            interrupted, unknown or expired.
        text: the reply for the user (Markdown).
        buttons: buttons under the reply.
        trace_id: names the run in logs and the audit row.
        ephemeral: only the caller needs to see it (denials, usage errors).
    """

    action: str
    status: Status
    text: str
    buttons: tuple[Button, ...] = ()
    trace_id: str = ""
    ephemeral: bool = False

    def for_model(self) -> str:
        """The tool result the model reads."""
        if self.status == "needs_confirmation":
            return ("NOT RUN YET: the user was shown Confirm/Cancel buttons and must press "
                    "Confirm; tell them so. " + self.text)
        return f"[{self.status}] {self.text}"


@dataclass(frozen=True)
class ActionServices:
    """What actions may use (see `ActionContext`)."""

    memory: Memory
    retriever: Retriever
    transcript: LastAnswer
    http: aiohttp.ClientSession


def _render(result: Any) -> tuple[str, tuple[Any, ...]]:
    if isinstance(result, ActionResult):
        return result.text, result.buttons
    if result is None:
        return "Done.", ()
    if isinstance(result, BaseModel):
        return f"```json\n{result.model_dump_json(indent=2)}\n```", ()
    if isinstance(result, (dict, list)):
        return f"```json\n{json.dumps(result, indent=2, default=str)}\n```", ()
    return str(result), ()


def _summary(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items()) or \
        "no arguments"


class ActionRunner:
    """Invokes registered actions for messages."""

    def __init__(self, registry: Registry, permissions: Permissions, audit: AuditLog,
                 redis: Redis, prefix: str, services: ActionServices) -> None:
        self.registry = registry
        self.permissions = permissions
        self._audit = audit
        self._redis = redis
        self._prefix = prefix
        self._keys = Keys(prefix)
        self._services = services

    async def available(self, message: Message, *, tools_only: bool = False
                        ) -> list[ActionSpec]:
        """The actions `message`'s author may run where it was sent, with the deployment's
        `confirm` applied (what `help` shows)."""
        found = []
        for spec in self.registry:
            if tools_only and not spec.tool:
                continue
            if await self.permissions.check(spec, message) is None:
                confirm = self.permissions.confirm(spec)
                found.append(spec if confirm == spec.confirm else replace(spec, confirm=confirm))
        return found

    def _key(self, call: str) -> str:
        return self._keys.action_call(call)

    async def _store(self, kind: str, data: dict[str, Any], ttl_s: int) -> str:
        call = secrets.token_urlsafe(12)
        await self._redis.set(self._key(call), json.dumps({"kind": kind, **data}), ex=ttl_s)
        return call

    @staticmethod
    def _button_payloads(buttons: Sequence[Any]) -> list[tuple[Any, str]]:
        """(button, its stored JSON) for an action's `ActionButton`s.

        Raises:
            TypeError: a button's `args` is not JSON (the action's fault: it failed).
        """
        return [(b, json.dumps({"kind": "run", "action": b.action, "args": b.args}))
                for b in buttons]

    async def _buttons(self, payloads: list[tuple[Any, str]]) -> tuple[Button, ...]:
        out = []
        for b, payload in payloads:
            call = secrets.token_urlsafe(12)
            await self._redis.set(self._key(call), payload, ex=BUTTON_TTL_S)
            out.append(Button(label=b.label[:75], token=f"r{call}", style=b.style))
        return tuple(out)

    # invocation -----------------------------------------------------------------------------

    async def invoke(self, message: Message, name: str, via: Via, *,
                     text: str | None = None, args: dict[str, Any] | str | None = None,
                     call_id: str, confirmed: bool = False) -> Outcome:
        """Run action `name` for `message`'s author with arguments from `text` (command text)
        or `args` (a dict, or a JSON object string from a tool call). `call_id` is unique per
        invocation and stable across retries: a retry of one that already ran gets its
        stored reply. Never raises for the action's own failures; raises when Postgres or
        Redis fail (the message is then retried) and when the caller is cancelled."""
        trace_id = uuid.uuid4().hex[:12]
        spec = self.registry.get(name)
        if spec is None:
            return Outcome("", "unknown", f"There is no action `{name}`. Try `!help`.",
                           ephemeral=True)
        denial = await self.permissions.check(spec, message)
        raw: dict[str, Any] = {}
        try:
            if isinstance(args, str):
                raw = parse_json_object(args)
            elif args is not None:
                raw = dict(args)
            else:
                raw = parse_text(spec.args_model, text or "")
        except ArgumentError as exc:
            problem = str(exc)
        else:
            problem = ""
        model: BaseModel | None = None
        if denial is None and not problem:
            try:
                model = validate(spec, raw)
            except ArgumentError as exc:
                problem = str(exc)
        if model is None:
            # a retry of a run that happened (the role was taken away since, say) is
            # answered as the run was, not refused
            prior = await self._audit.find(call_id)
            if prior is not None and prior.status in RAN:
                return Outcome(spec.name, prior.status, prior.reply, trace_id=prior.trace_id)
            if prior is not None and prior.status == "running":  # it cannot run again now
                return await self._interrupted(spec.name, call_id, prior.trace_id)
        if denial is not None:
            return await self._deny(message, spec.name, via, raw, call_id, denial.reason,
                                    spec, trace_id)
        if model is None:
            problem = redact_text(problem, secret_values(raw, spec.args_model))
            reply = f"`{spec.name}`: {problem}.\nUsage: `{usage(spec)}`"
            await self._audit.record(call_id, spec.name, via, message,
                                     redact_args(raw, spec.args_model), trace_id,
                                     "invalid_args", reply, error=problem)
            return Outcome(spec.name, "invalid_args", reply, trace_id=trace_id, ephemeral=True)
        if self.permissions.confirm(spec) and not confirmed:
            return await self._ask_confirmation(spec, message, via, model, raw, call_id,
                                                trace_id)
        with tracing.span(f"execute_tool {spec.name}", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": spec.name,
                "gen_ai.tool.call.id": call_id, "switchboard.action.via": via}) as span:
            outcome = await self._run(spec, message, via, model, call_id, trace_id)
            tracing.set_attributes(span, {"switchboard.action.status": outcome.status})
            return outcome

    async def refuse(self, message: Message, name: str, via: Via, *, args: str,
                     call_id: str, reason: str) -> Outcome:
        """Deny a call without looking further (a tool the model was not offered): a
        `denied` audit row (arguments redacted by the action's model when `name` is one)
        and "Sorry, <reason>." for the caller; a retry of an invocation that ran gets its
        stored reply."""
        prior = await self._audit.find(call_id)
        if prior is not None and prior.status in RAN:
            return Outcome(name, prior.status, prior.reply, trace_id=prior.trace_id)
        spec = self.registry.get(name)
        try:
            raw = parse_json_object(args)
        except ArgumentError:
            raw = {}
        return await self._deny(message, name[:64], via, raw, call_id, reason, spec,
                                uuid.uuid4().hex[:12])

    async def _deny(self, message: Message, name: str, via: Via, raw: dict[str, Any],
                    call_id: str, reason: str, spec: ActionSpec | None, trace_id: str
                    ) -> Outcome:
        reply = f"Sorry, {reason}."
        await self._audit.record(call_id, name, via, message,
                                 redact_args(raw, spec.args_model if spec else None),
                                 trace_id, "denied", reply, error=reason)
        log.info("action denied", action=name, via=via, trace_id=trace_id)
        return Outcome(name, "denied", reply, trace_id=trace_id, ephemeral=True)

    async def _ask_confirmation(self, spec: ActionSpec, message: Message, via: Via,
                                model: BaseModel, raw: dict[str, Any], call_id: str,
                                trace_id: str) -> Outcome:
        """Store the call's raw arguments (as given, so secrets and aliases survive; they
        are validated again when Confirm is pressed) and ask."""
        shown = redact_args(model)
        call = await self._store("confirm", {
            "action": spec.name, "args": raw, "user": message.user,
            "platform": message.conversation.platform}, CONFIRM_TTL_S)
        reply = (f"Run `{spec.name}` with {_summary(shown)}? Only the person who asked can "
                 f"confirm; this expires in {CONFIRM_TTL_S // 60} minutes.")
        await self._audit.record(call_id, spec.name, via, message, shown, trace_id,
                                 "needs_confirmation", reply)
        return Outcome(spec.name, "needs_confirmation", reply, trace_id=trace_id, buttons=(
            Button("Confirm", f"c{call}", "primary"), Button("Cancel", f"x{call}", "danger")))

    async def _interrupted(self, name: str, call_id: str, trace_id: str) -> Outcome:
        """Finish a run a crash left `running` as `interrupted`: it may or may not have
        completed, so it is not run again."""
        reply = (f"`{name}` was interrupted and may or may not have completed "
                 f"(trace id {trace_id}). Please check before running it again.")
        await self._audit.finish(call_id, "interrupted", reply=reply, attempts=1,
                                 duration_ms=0)
        return Outcome(name, "interrupted", reply, trace_id=trace_id)

    async def _run(self, spec: ActionSpec, message: Message, via: Via, model: BaseModel,
                   call_id: str, trace_id: str) -> Outcome:
        args = redact_args(model)
        # a read-only action's row is written once it ended (below): nothing to protect
        prior = None if spec.read_only else await self._audit.begin(
            call_id, spec.name, via, message, args, trace_id)
        if prior is not None:
            if prior.status != "running":  # a retry of a finished run: the same reply
                return Outcome(spec.name, prior.status, prior.reply, trace_id=prior.trace_id)
            if not spec.idempotent:
                return await self._interrupted(spec.name, call_id, prior.trace_id)
            trace_id = prior.trace_id
        ctx = ActionContext(
            caller=Caller.of(message), message=message, via=via, call_id=call_id,
            trace_id=trace_id, memory=self._services.memory,
            retriever=self._services.retriever, transcript=self._services.transcript,
            http=self._services.http, available=lambda: self.available(message))
        timeout_s = self.permissions.timeout_s(spec)
        hidden = secret_values(model)  # masked in error texts and logs
        attempts = 0
        started = time.perf_counter()

        async def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            try:
                async with asyncio.timeout(timeout_s) as deadline:
                    return await spec.call(ctx, model)
            except TimeoutError:
                if deadline.expired():
                    raise _AttemptTimedOut from None
                raise  # the action's own TimeoutError: an ordinary failure

        status: Status = "ok"
        error = ""
        payloads: list[tuple[Any, str]] = []
        try:
            if spec.idempotent and spec.retries > 0:
                result = await retried(attempt, retry_if=_retryable,
                                       attempts=spec.retries + 1, initial_s=0.2, max_s=2.0)
            else:
                result = await attempt()
            reply, buttons = _render(result)
            payloads = self._button_payloads(buttons)
        except ActionError as exc:
            status, error = "failed", redact_text(f"ActionError: {exc}", hidden)
            reply = redact_text(f"Sorry, `{spec.name}` failed: {exc} (trace id {trace_id}).",
                                hidden)
        except _AttemptTimedOut:
            status, error = "timeout", f"timed out after {timeout_s:g} s"
            reply = (f"`{spec.name}` did not finish within {timeout_s:g} s and was stopped "
                     f"(trace id {trace_id}).")
        except Exception as exc:
            status, error = "failed", redact_text(f"{type(exc).__name__}: {exc}", hidden)
            reply = f"Sorry, `{spec.name}` failed (trace id {trace_id})."
            # the traceback, for whoever debugs the plugin; secrets in it are redacted
            log.error("action raised", action=spec.name, trace_id=trace_id, traceback=redact_text(
                "".join(traceback.format_exception(exc)), hidden))
        # the buttons are stored before the row is finished: a failure here leaves the row
        # `running`, so a retry finds it instead of a finished row without its buttons
        out_buttons = await self._buttons(payloads)
        duration_ms = int((time.perf_counter() - started) * 1000)
        result_text = reply if status == "ok" else ""
        if spec.read_only:
            await self._audit.begin(call_id, spec.name, via, message, args, trace_id,
                                    status=status, reply=reply, error=error, result=result_text,
                                    attempts=attempts, duration_ms=duration_ms)
        else:
            await self._audit.finish(call_id, status, reply=reply, result=result_text,
                                     error=error, attempts=attempts, duration_ms=duration_ms)
        log.info("action run", action=spec.name, via=via, status=status, attempts=attempts,
                 duration_ms=duration_ms, trace_id=trace_id,
                 error=error.split(":")[0] if error else None)
        return Outcome(spec.name, status, reply, trace_id=trace_id, buttons=out_buttons)

    # buttons --------------------------------------------------------------------------------

    async def press(self, message: Message, token: str) -> Outcome:
        """A pressed button (`message.meta["button"] == token`): confirm or cancel a stored
        call (only its requester, once), or run a button's action for whoever pressed it."""
        kind, call = token[:1], token[1:]
        raw = await self._redis.get(self._key(call)) if call else None
        if raw is None:
            return Outcome("", "expired", "This button has expired. Please run the command "
                           "again.", ephemeral=True)
        data = json.loads(raw)
        name = str(data.get("action", ""))
        if kind == "r" and data.get("kind") == "run":
            return await self.invoke(message, name, "button", args=data.get("args") or {},
                                     call_id=message.id)
        if kind not in ("c", "x") or data.get("kind") != "confirm":
            return Outcome(name, "expired", "This button is not valid.", ephemeral=True)
        if message.user != data.get("user") or \
                message.conversation.platform != data.get("platform"):
            reply = "Only the person who asked can confirm or cancel this."
            await self._audit.record(message.id, name, "button", message, {}, uuid.uuid4().hex[
                :12], "denied", reply, error="not the requester")
            return Outcome(name, "denied", reply, ephemeral=True)
        claim = self._keys.action_claim(call)
        if not await self._redis.set(claim, message.id, nx=True, ex=CONFIRM_TTL_S):
            holder = await self._redis.get(claim)
            holder = holder.decode() if isinstance(holder, bytes) else holder
            if holder != message.id:  # another press got it first; a retry of ours goes on
                return Outcome(name, "expired", "This was already answered.", ephemeral=True)
        if kind == "x":
            reply = f"Cancelled: `{name}` did not run."
            spec = self.registry.get(name)
            await self._audit.record(message.id, name, "button", message,
                                     redact_args(data.get("args") or {},
                                                 spec.args_model if spec else None),
                                     uuid.uuid4().hex[:12], "cancelled", reply)
            return Outcome(name, "cancelled", reply)
        return await self.invoke(message, name, "button", args=data.get("args") or {},
                                 call_id=message.id, confirmed=True)
