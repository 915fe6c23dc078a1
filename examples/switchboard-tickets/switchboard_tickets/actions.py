"""The plugin's actions, registered through the `switchboard.actions` entry point.

- `create_ticket`: only for callers holding the `support` role, and only after they press
  Confirm. Who opened the ticket comes from `ctx.caller` (the platform's message), never from
  the arguments; `ctx.call_id` is the idempotency key, which makes the action safe to run
  again (`idempotent=True`): a retry or a run interrupted by a crash returns the same ticket.
- `list_tickets`: anyone, read-only.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from actions import ActionContext, ActionError, action
from switchboard_tickets.store import TicketStore, tickets_file


class CreateTicket(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    title: str = Field(min_length=3, max_length=120, description="what is wrong, in a few words")
    priority: Literal["low", "normal", "high"] = Field(default="normal",
                                                       description="how urgent it is")


@action(description="Open a support ticket", confirm=True, roles={"support"},
        idempotent=True, timeout_s=15.0)
async def create_ticket(ctx: ActionContext, args: CreateTicket) -> str:
    store = TicketStore(tickets_file())
    try:
        ticket, _ = await asyncio.to_thread(
            store.open, title=args.title, priority=args.priority,
            platform=ctx.caller.platform, user=ctx.caller.user, call_id=ctx.call_id)
    except OSError as exc:  # shown to the user; ActionError is never retried
        raise ActionError(f"the ticket file cannot be written ({exc.strerror or exc})") from exc
    return f"Opened ticket #{ticket.number}: {ticket.title} (priority {ticket.priority})"


class ListTickets(BaseModel):
    count: int = Field(default=5, ge=1, le=20, description="how many of the latest tickets")


@action(description="Show the latest support tickets", idempotent=True)
async def list_tickets(ctx: ActionContext, args: ListTickets) -> str:
    try:
        tickets = await asyncio.to_thread(TicketStore(tickets_file()).latest, args.count)
    except OSError as exc:
        raise ActionError(f"the ticket file cannot be read ({exc.strerror or exc})") from exc
    if not tickets:
        return "No tickets yet."
    lines = [f"The latest {len(tickets)} tickets, newest first:" if len(tickets) > 1
             else "The latest ticket:"]
    lines += [f"- #{t.number} [{t.priority}] {t.title} (opened by {t.platform}:{t.user})"
              for t in tickets]
    return "\n".join(lines)
