"""Discord ingress: HTTP interactions at `POST /discord/interactions` (with
`DISCORD_PUBLIC_KEY`) and the gateway through discord.py (with `DISCORD_BOT_TOKEN`).

Interactions (https://discord.com/developers/docs/interactions/overview): Ed25519 over
`timestamp + raw body` with the application's public key (PyNaCl), and a timestamp of unix
seconds within 5 minutes of now either way (`verify_ed25519`); 401 on any failure (missing,
non-hex, stale or non-numeric headers included), then parsing (400).
PING is answered with PONG; a slash command is stored and answered at once with a deferred
response (type 5: the user sees "thinking..."), well within the 3-second limit, and completed
through the interaction webhook by the sender. A press of one of the bot's buttons is stored
and acknowledged with DEFERRED_UPDATE_MESSAGE (type 6: the answer then edits the message that
holds the button), or, when it cannot be stored, answered with an ephemeral apology (type 4);
other components are acknowledged (type 6). Without an Interactions Endpoint URL, Discord
sends interactions over the gateway instead (INTERACTION_CREATE): they get the same response,
sent to `POST /interactions/{id}/{token}/callback`.

Commands: with a bot token and `deps.commands`, the bot's commands are registered as global
CHAT_INPUT application commands (bulk overwrite, `PUT /applications/{id}/commands`) in the
background at start (see `commands.py`); a failure is logged, never fatal.

Gateway: discord.py with the GUILDS, GUILD_MESSAGES, DIRECT_MESSAGES and MESSAGE_CONTENT
intents; `DISCORD_API_URL` and `DISCORD_GATEWAY_URL` repoint discord.py's class-level
`Route.BASE` and `DiscordWebSocket.DEFAULT_GATEWAY` (discord.py's own source:
https://github.com/Rapptz/discord.py/blob/master/discord/http.py and
https://github.com/Rapptz/discord.py/blob/master/discord/gateway.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import discord
import yarl
from aiohttp import web
from nacl.signing import VerifyKey
from redis.exceptions import RedisError

from adapters.base import AdapterDeps
from adapters.discord.commands import register_commands
from adapters.discord.normalize import (
    AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    PING,
    normalize_component,
    normalize_interaction,
    normalize_message_create,
)
from adapters.discord.send import DiscordError, DiscordRest, DiscordSender, DiscordThreads
from adapters.payload import Skip
from adapters.progress import SendProgress
from adapters.verification import verify_ed25519
from bot.errors import BacklogFull
from bot.log import get_logger

log = get_logger("adapters.discord")
ENQUEUE_ATTEMPTS = 4  # waits 1 + 2 + 4 s for Redis: the gateway never redelivers
PONG, CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE = 1, 4, 5, 6
AUTOCOMPLETE_RESULT = 8
EPHEMERAL = 1 << 6


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    # exactly application/json, no charset parameter (Discord's own examples)
    return web.Response(body=json.dumps(payload).encode(), status=status,
                        headers={"Content-Type": "application/json"})


class DiscordAdapter:
    """Discord's ingress (interactions and/or gateway) and sender."""

    name = "discord"

    def __init__(self, deps: AdapterDeps, *, bot_token: str | None, public_key: str | None,
                 api_url: str, gateway_url: str) -> None:
        self._deps = deps
        self._commands = frozenset(c.name for c in deps.commands)
        self._bot_token = bot_token
        self._key = VerifyKey(bytes.fromhex(public_key)) if public_key else None
        self._api_url = api_url
        self._gateway_url = gateway_url
        self._threads = DiscordThreads(deps.redis, deps.prefix)
        self._rest = DiscordRest(deps.http, api_url, bot_token)
        self.sender = DiscordSender(self._rest, self._threads,
                                    SendProgress(deps.redis, deps.prefix))
        self._client: discord.Client | None = None
        self._gateway: asyncio.Task[None] | None = None
        self._registering: asyncio.Task[None] | None = None

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/discord/interactions", self.handle)] if self._key else []

    # interactions -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._key is not None
        body = await request.read()
        if not verify_ed25519(self._key, body, request.headers.get("X-Signature-Timestamp"),
                              request.headers.get("X-Signature-Ed25519")):
            return _json({"error": "invalid request signature"}, 401)
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            return _json({"error": "body is not valid JSON"}, 400)
        if not isinstance(payload, dict):
            return _json({"error": "body must be a JSON object"}, 400)
        return _json(await self.respond(payload))

    async def respond(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The interaction response to a verified interaction, from the HTTP endpoint or the
        gateway (https://discord.com/developers/docs/interactions/receiving-and-responding):
        PONG to a PING; a command is stored, then deferred (type 5, "thinking..."); a press of
        one of the bot's buttons is stored, then DEFERRED_UPDATE_MESSAGE (type 6: the answer
        edits the message holding the button); other components are acknowledged (type 6),
        autocomplete gets no choices. When the message cannot be stored, an ephemeral apology
        (type 4); a command without a question, an ephemeral hint."""
        kind = payload.get("type")
        if kind == PING:
            return {"type": PONG}
        if kind == AUTOCOMPLETE:
            return {"type": AUTOCOMPLETE_RESULT, "data": {"choices": []}}
        if kind == MESSAGE_COMPONENT:
            message = normalize_component(payload)
            if isinstance(message, Skip):
                log.debug("discord component acknowledged", reason=message.reason)
                return {"type": DEFERRED_UPDATE_MESSAGE}
            deferred, apology = DEFERRED_UPDATE_MESSAGE, "Sorry, I cannot take that right now."
        else:
            message = normalize_interaction(payload, self._commands)
            if isinstance(message, Skip):
                return _ephemeral("Ask me a question, e.g. `/ask question: how do I ...`")
            deferred = DEFERRED_CHANNEL_MESSAGE
            apology = "Sorry, I cannot take questions right now."
        try:
            await self._deps.inbox.enqueue(message)
        except (RedisError, OSError, BacklogFull):
            log.error("discord interaction not stored", interaction=str(payload.get("id")))
            return _ephemeral(apology + " Please try again.")
        return {"type": deferred}

    # gateway ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the gateway in the background (login retried with backoff); start-up
        never waits on Discord."""
        if not self._bot_token:
            return
        if self._deps.commands:
            self._registering = asyncio.create_task(
                register_commands(self._rest, self._deps.commands), name="discord-commands")
        if self._api_url.rstrip("/") != discord.http.Route.BASE:
            discord.http.Route.BASE = self._api_url.rstrip("/")
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self._gateway_url)
        self._gateway = asyncio.create_task(self._run_gateway(self._bot_token),
                                            name="discord-gateway")
        self._gateway.add_done_callback(_report_gateway_end)

    async def _run_gateway(self, token: str) -> None:
        intents = discord.Intents(guilds=True, guild_messages=True, dm_messages=True,
                                  message_content=True)
        backoff_s = 1.0
        while True:
            client = discord.Client(intents=intents)
            client.event(self._make_on_message(client))
            client.event(self.on_interaction)
            self._client = client
            try:
                await client.login(token)
                await client.connect(reconnect=True)  # returns only when closed
                return
            except (discord.LoginFailure, discord.PrivilegedIntentsRequired):
                await client.close()
                raise  # configuration errors: retrying cannot help
            except (discord.HTTPException, discord.GatewayNotFound, aiohttp.ClientError,
                    OSError) as exc:
                await client.close()
                log.warning("discord gateway unavailable; retrying", error=type(exc).__name__,
                            delay_s=backoff_s)
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 60.0)

    async def stop(self) -> None:
        if self._registering is not None:
            self._registering.cancel()
            # never raises by design; if it ever did, stop() must still close the rest
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._registering
            self._registering = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._gateway is not None:
            self._gateway.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gateway
            self._gateway = None

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """An interaction over the gateway (when no Interactions Endpoint URL is set, Discord
        sends them here): the same response as over HTTP, sent to
        `POST /interactions/{id}/{token}/callback`. A failure is logged; Discord then shows
        "This interaction failed" and the user can try again."""
        payload = _interaction_payload(interaction)
        response = await self.respond(payload)
        try:
            await self._rest.request(
                "POST", f"/interactions/{interaction.id}/{interaction.token}/callback",
                response, bot_auth=False)
        except (DiscordError, aiohttp.ClientError, OSError) as exc:
            log.error("discord interaction not acknowledged", interaction=str(interaction.id),
                      error=type(exc).__name__)

    def _make_on_message(self, client: discord.Client) -> Any:
        async def on_message(message: discord.Message) -> None:
            if client.user is None:
                return
            is_thread = isinstance(message.channel, discord.Thread)
            channel_id = str(message.channel.id)
            if message.author.bot:
                return  # before any Redis work: never a loop, whatever Redis does
            for attempt in range(ENQUEUE_ATTEMPTS):
                try:
                    in_bot_thread = is_thread and await self._threads.contains(channel_id)
                    normalized = normalize_message_create(
                        _payload(message), str(client.user.id), is_thread=is_thread,
                        in_bot_thread=in_bot_thread, commands=self._commands)
                    if isinstance(normalized, Skip):
                        log.debug("discord message not answered", reason=normalized.reason)
                        return
                    await self._deps.inbox.enqueue(normalized)
                    return
                except (RedisError, OSError, BacklogFull) as exc:
                    if attempt + 1 == ENQUEUE_ATTEMPTS:
                        # the gateway does not redeliver: this message is lost; say so loudly
                        log.error("discord message not stored", message_id=message.id,
                                  error=type(exc).__name__)
                        return
                    await asyncio.sleep(2 ** attempt)

        return on_message


def _report_gateway_end(task: asyncio.Task[None]) -> None:
    """A gateway that ends by itself is an outage of the Discord adapter: say why, loudly."""
    if task.cancelled():
        return
    error = task.exception()
    if isinstance(error, discord.PrivilegedIntentsRequired):
        log.error("discord gateway refused the MESSAGE_CONTENT intent: enable 'Message Content "
                  "Intent' for the bot in the Developer Portal; Discord messages are not "
                  "answered until then")
    elif isinstance(error, discord.LoginFailure):
        log.error("discord login failed: check DISCORD_BOT_TOKEN; Discord messages are not "
                  "answered")
    elif error is not None:
        log.error("discord gateway stopped", error=type(error).__name__)


def _ephemeral(content: str) -> dict[str, Any]:
    """An immediate reply only the user sees (CHANNEL_MESSAGE_WITH_SOURCE, EPHEMERAL)."""
    return {"type": CHANNEL_MESSAGE, "data": {"content": content, "flags": EPHEMERAL}}


def _member(user: discord.User | discord.Member) -> dict[str, Any]:
    """`member` (guild: user and role ids without @everyone) or `user` of a payload."""
    if isinstance(user, discord.Member):
        return {"member": {"user": {"id": str(user.id)},
                           "roles": [str(r.id) for r in user.roles if not r.is_default()]}}
    return {"user": {"id": str(user.id)}}


def _interaction_payload(interaction: discord.Interaction) -> dict[str, Any]:
    """The interaction fields `respond` reads, from discord.py's object (`data` is Discord's
    own, unparsed)."""
    payload: dict[str, Any] = {
        "id": str(interaction.id), "application_id": str(interaction.application_id),
        "type": interaction.type.value, "token": interaction.token,
        "channel_id": str(interaction.channel_id) if interaction.channel_id else None,
        "guild_id": str(interaction.guild_id) if interaction.guild_id else None,
        "data": dict(interaction.data or {}), **_member(interaction.user)}
    if interaction.message is not None:
        payload["message"] = {"components": [row.to_dict()
                                             for row in interaction.message.components]}
    return payload


def _payload(message: discord.Message) -> dict[str, Any]:
    """The MESSAGE_CREATE fields `normalize_message_create` reads, from discord.py's object;
    `member.roles` (ids, without @everyone) when the author is a guild member."""
    return {"id": str(message.id), "channel_id": str(message.channel.id),
            "guild_id": str(message.guild.id) if message.guild else None,
            "type": message.type.value, "content": message.content,
            "author": {"id": str(message.author.id), "bot": message.author.bot},
            "mentions": [{"id": str(m.id)} for m in message.mentions],
            **_member(message.author)}
