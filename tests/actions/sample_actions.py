"""Actions for the tests (loaded with BOT_ACTION_MODULES=tests.actions.sample_actions)."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from actions import ActionButton, ActionContext, ActionError, ActionResult, action

#: What the actions did, in order: (action, caller user, arguments...).
CALLS: list[tuple[str, ...]] = []
FLAKY_FAILURES = {"left": 0}


class CreateTicket(BaseModel):
    title: str = Field(min_length=3, description="what is wrong")
    priority: Literal["low", "normal", "high"] = "normal"


@action(description="Open a ticket in the team's tracker", confirm=True, roles={"support"})
async def create_ticket(ctx: ActionContext, args: CreateTicket) -> str:
    CALLS.append(("create_ticket", ctx.caller.user, args.title, args.priority))
    return f"Opened ticket #{len(CALLS)}: {args.title} ({args.priority})"


class Deploy(BaseModel):
    service: str
    api_token: SecretStr = Field(description="a deploy token")
    note: str = ""


@action(description="Deploy a service", roles={"ops"})
async def deploy(ctx: ActionContext, args: Deploy) -> str:
    CALLS.append(("deploy", ctx.caller.user, args.service))
    return f"Deployed {args.service}."


@action(description="Takes too long", timeout_s=0.3)
async def slow(ctx: ActionContext) -> str:
    await asyncio.sleep(30)
    return "never"


@action(description="Always fails")
async def boom(ctx: ActionContext) -> str:
    CALLS.append(("boom", ctx.caller.user))
    raise RuntimeError("kaboom with ghp_0123456789abcdefABCDEF0123456789abcd")


@action(description="Refuses politely")
async def refuse(ctx: ActionContext) -> str:
    raise ActionError("the tracker is read-only today")


@action(description="Fails twice, then works", idempotent=True, retries=2)
async def flaky(ctx: ActionContext) -> str:
    CALLS.append(("flaky", ctx.caller.user))
    if FLAKY_FAILURES["left"] > 0:
        FLAKY_FAILURES["left"] -= 1
        raise ConnectionError("tracker unreachable")
    return "worked"


class Whoami(BaseModel):
    user: str = Field(default="", description="ignored: the caller is who wrote the message")


@action(description="Say who is asking")
async def whoami(ctx: ActionContext, args: Whoami) -> str:
    CALLS.append(("whoami", ctx.caller.user, args.user))
    return f"You are {ctx.caller.platform}:{ctx.caller.user}"


class Grant(BaseModel):
    user: str = Field(description="who gets admin rights")


@action(description="Make a user an admin", roles={"admins"})
async def grant_admin(ctx: ActionContext, args: Grant) -> str:
    CALLS.append(("grant_admin", ctx.caller.user, args.user))
    return f"{args.user} is now an admin."


@action(description="Offer a follow-up button", tool=False)
async def menu(ctx: ActionContext) -> ActionResult:
    return ActionResult("Pick one:", buttons=(
        ActionButton("Who am I?", "whoami"),
        ActionButton("Ticket: printer", "create_ticket", {"title": "Printer jam"}, "primary")))


class Unlock(BaseModel):
    door: int
    code: SecretStr = Field(description="the door's code (named like nothing secret)")

    @field_validator("code")
    @classmethod
    def long_enough(cls, code: SecretStr) -> SecretStr:
        if len(code.get_secret_value()) < 8:  # an error text that repeats the secret
            raise ValueError(f"code {code.get_secret_value()} is shorter than 8 characters")
        return code


@action(description="Unlock a door", roles={"ops"}, tool=False)
async def unlock(ctx: ActionContext, args: Unlock) -> str:
    CALLS.append(("unlock", ctx.caller.user, str(args.door)))
    raise RuntimeError(f"door {args.door} rejected code {args.code.get_secret_value()}")


@action(description="Idempotent and slow", idempotent=True, retries=2, timeout_s=1.0,
        tool=False)
async def patient(ctx: ActionContext) -> str:
    CALLS.append(("patient", ctx.caller.user))
    await asyncio.sleep(30)
    return "never"


@action(description="Its upstream times out", timeout_s=5.0, tool=False)
async def upstream(ctx: ActionContext) -> str:
    raise TimeoutError("the tracker took too long")


class RotateKey(BaseModel):
    key_name: str = Field(alias="key", description="which key")
    passphrase: SecretStr = Field(description="the new passphrase")


@action(description="Rotate a key", confirm=True, roles={"ops"})
async def rotate_key(ctx: ActionContext, args: RotateKey) -> str:
    CALLS.append(("rotate_key", ctx.caller.user, args.key_name,
                  args.passphrase.get_secret_value()))
    return f"Rotated {args.key_name}."


@action(description="Offers a button it cannot store", tool=False)
async def bad_menu(ctx: ActionContext) -> ActionResult:
    CALLS.append(("bad_menu", ctx.caller.user))
    return ActionResult("Pick:", buttons=(ActionButton("Go", "whoami", {"ids": {1, 2}}),))


#: `peek` waits here (when set by a test) before it answers.
PEEK_GATE: list[asyncio.Event] = []


@action(description="Reads, changes nothing", read_only=True, tool=False)
async def peek(ctx: ActionContext) -> str:
    CALLS.append(("peek", ctx.caller.user))
    if PEEK_GATE:
        await PEEK_GATE[0].wait()
    return "peeked"
