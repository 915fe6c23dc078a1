"""Slack ingress: the Events API at `POST /slack/events` (events, slash commands,
interactivity) and Socket Mode when `SLACK_APP_TOKEN` is set.

Slash commands and presses of the bot's buttons (`block_actions`,
https://docs.slack.dev/reference/interaction-payloads/block_actions-payload) are stored
like events; Slack does not redeliver them, so when they cannot be stored the user is told
instead (the command's response, or an ephemeral message to the press's `response_url`).
Other interactions are acknowledged and ignored. Slack
has no API to register slash commands (they live in the app's manifest), so `deps.commands`
only decides which commands pass without text.

HTTP order of checks: `ssl_check` probes are answered 200 at once (they carry no event);
every other request must carry a valid v0 signature over the raw body within 5 minutes (401
`{"error": "invalid request"}`, Bolt's answer;
https://docs.slack.dev/authentication/verifying-requests-from-slack) before it is parsed. Then
the body is classified from its content alone: one that is not JSON, form data or a JSON
object is 400 with `X-Slack-No-Retry: 1` (Slack retries any other non-2xx,
https://docs.slack.dev/apis/events-api/#error-handling); `url_verification` is answered with
its challenge as text/plain; every other verified payload is acknowledged 200 within the
3-second budget, answered or not (Bolt's 404 for unmatched events would be retried). Only an
event the bot may answer needs its identity (`auth.test`) and the inbox, so only such an event
is answered 503 when either is unavailable, and Slack retries it; garbage never waits on
`auth.test`. Retries carry the same event and are deduplicated by the inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from redis.exceptions import RedisError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from adapters.base import AdapterDeps
from adapters.payload import Skip
from adapters.progress import SendProgress
from adapters.slack.normalize import (
    SlackIdentity,
    event_skip,
    is_from_a_bot,
    normalize_block_action,
    normalize_command,
    normalize_event,
)
from adapters.slack.send import SlackSender, SlackThreads, web_client
from adapters.verification import verify_slack_v0
from bot.errors import BacklogFull
from bot.log import get_logger
from bot.messages import Message

log = get_logger("adapters.slack")


class StoreUnavailable(Exception):
    """The message could not be stored or the bot's identity fetched: ask Slack to retry."""


def _refuse(error: str) -> web.Response:
    """400 for a signed body that is no Slack payload, with `X-Slack-No-Retry: 1`: Slack
    retries a non-2xx answer unless it carries that header
    (https://docs.slack.dev/apis/events-api/#error-handling)."""
    return web.json_response({"error": error}, status=400, headers={"X-Slack-No-Retry": "1"})


class SlackAdapter:
    """Slack's ingress and sender. Routes are mounted only when a signing secret is set."""

    name = "slack"

    def __init__(self, deps: AdapterDeps, *, bot_token: str, api_url: str,
                 signing_secret: str | None, app_token: str | None) -> None:
        self._deps = deps
        self._commands = frozenset(c.name for c in deps.commands)
        self._client = web_client(bot_token, api_url)
        self._api_url = api_url
        self._signing_secret = signing_secret
        self._app_token = app_token
        self._threads = SlackThreads(deps.redis, deps.prefix)
        self.sender = SlackSender(self._client, self._threads, deps.http,
                                  SendProgress(deps.redis, deps.prefix))
        self._connecting: asyncio.Task[None] | None = None
        self._identity: SlackIdentity | None = None
        self._socket: SocketModeClient | None = None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/slack/events", self.handle)] if self._signing_secret else []

    async def start(self) -> None:
        """Learn the bot's identity and, with an app token, connect Socket Mode in the
        background. Never blocks start-up: slack_sdk retries a failing connection forever, so
        a bad token or an outage is logged (once checked here) and retried, not waited on."""
        try:
            await self.identity()
        except StoreUnavailable as exc:
            log.error("slack auth.test failed; will retry on the first event", error=str(exc))
        if not self._app_token:
            return
        opener = web_client(self._app_token, self._api_url)
        try:
            await opener.apps_connections_open(app_token=self._app_token)
        except Exception as exc:
            log.error("slack socket mode cannot connect (check SLACK_APP_TOKEN); retrying",
                      error=type(exc).__name__)
        self._socket = SocketModeClient(app_token=self._app_token, web_client=opener)
        self._socket.socket_mode_request_listeners.append(self._on_socket_request)
        self._connecting = asyncio.create_task(self._socket.connect(),  # type: ignore[no-untyped-call]
                                               name="slack-socket-mode")

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close()  # type: ignore[no-untyped-call]
            self._socket = None
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connecting
            self._connecting = None

    async def identity(self) -> SlackIdentity:
        """The bot's user and bot ids from `auth.test` (cached)."""
        if self._identity is None:
            try:
                me = await self._client.auth_test()
            except Exception as exc:  # API errors, disconnects, payload errors alike
                raise StoreUnavailable(f"auth.test failed: {type(exc).__name__}") from exc
            self._identity = SlackIdentity(user_id=str(me["user_id"]),
                                           bot_id=me.get("bot_id"))
        return self._identity

    # HTTP -------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._signing_secret is not None
        body = await request.read()
        form_encoded = request.content_type == "application/x-www-form-urlencoded"
        if form_encoded and (body.startswith(b"ssl_check=") or b"&ssl_check=" in body):
            return web.Response(status=200)
        if not verify_slack_v0(self._signing_secret, body,
                               request.headers.get("X-Slack-Request-Timestamp"),
                               request.headers.get("X-Slack-Signature")):
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            if form_encoded:
                form = {k: v[0] for k, v in parse_qs(body.decode("utf-8"),
                                                      strict_parsing=True).items()}
                if "payload" in form:
                    payload = json.loads(form["payload"])
                    return await self._interaction(payload)
                if "command" in form:
                    return await self._command(form)
                return _refuse("unsupported form body")
            payload = json.loads(body)
        except (ValueError, RecursionError):  # includes UnicodeDecodeError
            return _refuse("body is not valid JSON or form data")
        if not isinstance(payload, dict):
            return _refuse("body must be a JSON object")
        kind = payload.get("type")
        if kind == "url_verification":
            return web.Response(text=str(payload.get("challenge", "")),
                                content_type="text/plain")
        if kind != "event_callback":
            return web.Response(status=200)
        try:
            await self._event(payload)
        except StoreUnavailable as exc:
            log.error("slack event not stored; asking Slack to retry", error=str(exc))
            return web.json_response({"error": "temporarily unavailable"}, status=503,
                                     headers={"Retry-After": "5"})
        return web.Response(status=200)

    async def _command(self, form: dict[str, str]) -> web.StreamResponse:
        message = normalize_command(form, self._commands)
        if isinstance(message, Skip):
            return web.json_response({"response_type": "ephemeral",
                                      "text": "Ask me something, e.g. `/ask how do I ...`"})
        try:
            await self._enqueue(message)
        except StoreUnavailable:
            return web.json_response({"response_type": "ephemeral",
                                      "text": "Sorry, I cannot take questions right now. "
                                              "Please try again in a minute."})
        return web.json_response({"response_type": "in_channel"})

    async def _interaction(self, payload: Any) -> web.StreamResponse:
        await self._press(payload)
        return web.Response(status=200)

    # shared by HTTP and Socket Mode -----------------------------------------------------------

    async def _event(self, envelope: dict[str, Any]) -> None:
        """Store the envelope's event if it is answered. What can be decided from the payload
        alone is decided first, so an event that is never answered needs neither `auth.test`
        nor Redis and is acknowledged even while they are down.

        Raises:
            StoreUnavailable: the identity or the thread lookup or the inbox failed.
        """
        skip = event_skip(envelope)
        if skip is not None:
            log.debug("slack event not answered", reason=skip.reason,
                      event_id=str(envelope.get("event_id")))
            return
        me = await self.identity()
        event: dict[str, Any] = envelope["event"]
        in_thread = False
        if is_from_a_bot(event, me):
            log.debug("slack event not answered", reason="from a bot")
            return
        if event.get("thread_ts"):
            try:
                in_thread = await self._threads.contains(str(event["channel"]),
                                                         str(event["thread_ts"]))
            except (RedisError, OSError, BacklogFull) as exc:
                raise StoreUnavailable(type(exc).__name__) from exc
        message = normalize_event(envelope, me, in_bot_thread=in_thread,
                                  commands=self._commands)
        if isinstance(message, Skip):
            log.debug("slack event not answered", reason=message.reason,
                      event_id=envelope.get("event_id"))
            return
        await self._enqueue(message)

    async def _press(self, payload: Any) -> None:
        """Store a press of one of the bot's buttons; other interactions are only logged.
        Slack does not deliver an interaction again, whatever the answer
        (https://docs.slack.dev/apis/events-api/#error-handling names retries for events
        only), so a press that cannot be stored is acknowledged all the same and the user is
        asked, privately, to press again."""
        message = normalize_block_action(payload)
        if isinstance(message, Skip):
            log.debug("slack interaction acknowledged", reason=message.reason)
            return
        try:
            await self._enqueue(message)
        except StoreUnavailable as exc:
            log.error("slack button press not stored", error=str(exc))
            if message.meta.get("response_url"):
                await self.sender.tell(message.meta["response_url"],
                                       "Sorry, I could not take that. Please press again.")

    async def _enqueue(self, message: Message) -> None:
        try:
            await self._deps.inbox.enqueue(message)
        except (RedisError, OSError, BacklogFull) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def _on_socket_request(self, client: AsyncBaseSocketModeClient,
                                 request: SocketModeRequest) -> None:
        """Store first, then acknowledge: an envelope we could not store is not acknowledged,
        so Slack delivers it again."""
        try:
            if request.type == "events_api" and request.payload.get("type") == "event_callback":
                await self._event(request.payload)
            elif request.type == "slash_commands":
                message = normalize_command({k: str(v) for k, v in request.payload.items()},
                                            self._commands)
                if not isinstance(message, Skip):
                    await self._enqueue(message)
            elif request.type == "interactive":
                await self._press(request.payload)
        except StoreUnavailable as exc:
            log.error("slack envelope not stored; not acknowledged", error=str(exc))
            return
        await client.send_socket_mode_response(
            SocketModeResponse(envelope_id=request.envelope_id))

