"""The built-in actions: help, reset, sources, feedback, search, and http_request (only when
`BOT_HTTP_ACTION_URL` is set). None of them is offered to the model as a tool but
`http_request`: the model already answers from the knowledge base, and help, memory and
ratings are the user's own business."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Literal

import aiohttp
from pydantic import BaseModel, Field, field_validator

from actions.arguments import usage
from actions.spec import ActionContext, ActionError, ActionSpec, action, spec_of
from bot.errors import TransientError


class HelpArgs(BaseModel):
    action: str | None = Field(default=None, description="an action to explain")


@action(description="List what you can ask me to do here", name="help", tool=False,
        read_only=True)
async def show_help(ctx: ActionContext, args: HelpArgs) -> str:
    specs = list(await ctx.available())
    if args.action:
        wanted = args.action.lstrip("!/").lower()
        for spec in specs:
            if spec.name == wanted:
                fields = [f"- `{n}`: {f.description or n.replace('_', ' ')}"
                          for n, f in spec.args_model.model_fields.items()]
                confirm = "\nAsks for confirmation before it runs." if spec.confirm else ""
                return "\n".join([f"`{usage(spec)}`: {spec.description}", *fields]) + confirm
        return f"There is no action `{wanted}` you may run here."
    lines = ["Ask me a question in plain words, or run one of these:"]
    lines += [f"- `{usage(s)}`: {s.description}" for s in specs]
    lines.append("Details: `!help <action>`.")
    return "\n".join(lines)


@action(description="Forget this conversation's memory", tool=False, idempotent=True)
async def reset(ctx: ActionContext) -> str:
    await ctx.memory.forget(ctx.conversation_key)
    return "Done: I forgot this conversation. The next question starts fresh."


@action(description="Show the sources of my last answer", tool=False, read_only=True)
async def sources(ctx: ActionContext) -> str:
    found = await ctx.transcript.last_answer_sources(ctx.conversation_key)
    if found is None:
        return "I have not answered anything in this conversation yet."
    if not found:
        return "My last answer did not cite any source."
    lines = ["Sources of my last answer:"]
    for n, src in enumerate(found, 1):
        where = f" ({src['section']})" if src.get("section") else ""
        page = f", page {src['page']}" if src.get("page") else ""
        lines.append(f"[{n}] {src['title']}{where}{page} <{src['uri']}>")
    return "\n".join(lines)


UP = {"up", "+1", "👍", "good", "yes", "y", "thumbsup", ":+1:"}
DOWN = {"down", "-1", "👎", "bad", "no", "n", "thumbsdown", ":-1:"}


class FeedbackArgs(BaseModel):
    vote: Literal["up", "down"] = Field(description="up (helpful) or down (not helpful)")
    comment: str = Field(default="", description="what was wrong or right", max_length=500)

    @field_validator("vote", mode="before")
    @classmethod
    def _alias(cls, value: object) -> object:
        word = str(value).strip().lower()
        return "up" if word in UP else "down" if word in DOWN else value


@action(description="Rate my last answer: up or down", tool=False, idempotent=True)
async def feedback(ctx: ActionContext, args: FeedbackArgs) -> str:
    rated = await ctx.transcript.rate_last_answer(ctx.conversation_key,
                                                  1 if args.vote == "up" else -1)
    if not rated:
        return "There is no answer of mine to rate in this conversation yet."
    return "Thanks, noted: 👍" if args.vote == "up" else "Thanks, noted: 👎. Sorry about that."


class SearchArgs(BaseModel):
    query: str = Field(min_length=1, max_length=500, description="what to look for")
    top_k: int = Field(default=5, ge=1, le=20, description="how many passages")


@action(description="Search the knowledge base (no language model)", tool=False,
        read_only=True)
async def search(ctx: ActionContext, args: SearchArgs) -> str:
    passages = await ctx.retriever.retrieve(args.query, args.top_k)
    if not passages:
        return f"Nothing in the knowledge base matches “{args.query}”."
    lines = [f"Top {len(passages)} for “{args.query}”:"]
    for n, p in enumerate(passages, 1):
        snippet = " ".join(p.text.split())
        snippet = snippet[:200].rsplit(" ", 1)[0] + " …" if len(snippet) > 200 else snippet
        where = f" ({p.section})" if p.section else ""
        lines.append(f"{n}. {p.title}{where} <{p.uri}>\n> {snippet}")
    return "\n".join(lines)


BUILTINS = (show_help, reset, sources, feedback, search)


def sign_body(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, the scheme of Switchboard's webhook
    callbacks with the timestamp bound in (as Stripe's and Slack's v0 signatures do)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class HttpRequestArgs(BaseModel):
    text: str = Field(min_length=1, max_length=4000, description="what to send")


def http_request_action(url: str, secret: str, timeout_s: float = 10.0) -> ActionSpec:
    """The `http_request` action for one configured URL: POSTs
    `{"text", "user", "platform", "channel", "conversation", "call_id"}` as JSON, signed
    with `X-Switchboard-Timestamp` and `X-Switchboard-Signature` (`sign_body`), with
    `Idempotency-Key: <call_id>`; the reply is the endpoint's status and the start of its body.
    A 5xx or a network error is retried (it is idempotent by that key); a 4xx is a failure."""

    @action(description="Send text to the team's integration endpoint", idempotent=True,
            retries=2, timeout_s=timeout_s)
    async def http_request(ctx: ActionContext, args: HttpRequestArgs) -> str:
        caller = ctx.caller
        body = json.dumps({"text": args.text, "user": caller.user,
                           "platform": caller.platform, "channel": caller.channel,
                           "conversation": ctx.conversation_key, "call_id": ctx.call_id},
                          ensure_ascii=False).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Switchboard-Timestamp": timestamp,
                   "X-Switchboard-Signature": sign_body(secret, timestamp, body),
                   "Idempotency-Key": ctx.call_id}
        async with ctx.http.post(url, data=body, headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            text = (await response.text())[:500]
            if response.status >= 500:
                raise TransientError(f"the endpoint answered {response.status}")
            if response.status >= 400:
                raise ActionError(f"the endpoint refused the request ({response.status})")
        return f"Sent. The endpoint answered {response.status}" + (f":\n> {text}" if text
                                                                  else ".")

    spec = spec_of(http_request)
    assert spec is not None
    return spec


#: built-ins that exist only when configured: a policy may name them all the same
CONFIGURED_BUILTINS = frozenset({"http_request"})


def builtin_specs(http_url: str | None = None, http_secret: str = "",
                  http_timeout_s: float = 10.0) -> list[ActionSpec]:
    """The built-ins for these settings (`http_request` only with `http_url`)."""
    specs = [s for f in BUILTINS if (s := spec_of(f)) is not None]
    if http_url:
        specs.append(http_request_action(http_url, http_secret, http_timeout_s))
    return specs
