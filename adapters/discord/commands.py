"""The bot's commands as Discord application commands (PROTOCOLS.md 3.2; Discord's
developers/interactions/application-commands).

Each `CommandSpec` becomes a global CHAT_INPUT command (type 1). Option kinds map to Discord
option types: string 3, integer 4, boolean 5, number 10. Names must be 1-32 characters of
lowercase letters, digits, "-" and "_" (others are skipped with a warning); descriptions are
1-100 characters (the name stands in for an empty one); an option's choices become
`{"name": str(value), "value": value}`, at most 25; required options come before optional
ones, as Discord requires. At most 100 global CHAT_INPUT commands are sent.

Registration is one bulk overwrite, `PUT /applications/{application id}/commands`, after
`GET /oauth2/applications/@me` for the id, so commands removed from the bot disappear from
Discord too.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from adapters.discord.send import DiscordError, DiscordRest
from bot.log import get_logger
from bot.protocols import CommandOption, CommandSpec

log = get_logger("adapters.discord")
CHAT_INPUT = 1
OPTION_TYPES = {"string": 3, "integer": 4, "boolean": 5, "number": 10}
NAME = re.compile(r"^[-_a-z0-9]{1,32}$")
DESCRIPTION_LIMIT = 100
CHOICE_NAME_LIMIT = 100
MAX_CHOICES = 25
MAX_OPTIONS = 25
MAX_COMMANDS = 100


def _description(text: str, fallback: str) -> str:
    return (text.strip() or fallback)[:DESCRIPTION_LIMIT]


def option_json(option: CommandOption) -> dict[str, Any]:
    """One application command option. An unknown kind is sent as a string option."""
    kind = OPTION_TYPES.get(option.kind)
    if kind is None:
        log.warning("discord option kind unknown; sent as a string", option=option.name,
                    kind=option.kind)
        kind = OPTION_TYPES["string"]
    body: dict[str, Any] = {"type": kind, "name": option.name,
                            "description": _description(option.description, option.name),
                            "required": option.required}
    if option.choices and kind != OPTION_TYPES["boolean"]:
        body["choices"] = [
            {"name": str(value)[:CHOICE_NAME_LIMIT],
             "value": str(value) if kind == OPTION_TYPES["string"] else value}
            for value in option.choices[:MAX_CHOICES]]
    return body


def command_json(spec: CommandSpec) -> dict[str, Any] | None:
    """One CHAT_INPUT command, or None (logged) when Discord would refuse its name or an
    option's name."""
    bad = [n for n in (spec.name, *(o.name for o in spec.options)) if not NAME.match(n)]
    if bad:
        log.warning("discord cannot offer this command; skipped", command=spec.name,
                    invalid_names=",".join(bad))
        return None
    # a stable sort keeps the declared order within required and within optional options
    options = sorted(spec.options, key=lambda o: not o.required)[:MAX_OPTIONS]
    return {"type": CHAT_INPUT, "name": spec.name,
            "description": _description(spec.description, spec.name),
            "options": [option_json(o) for o in options]}


def commands_json(specs: tuple[CommandSpec, ...]) -> list[dict[str, Any]]:
    """The body of the bulk overwrite: valid commands, at most 100."""
    commands = [c for c in (command_json(s) for s in specs) if c is not None]
    if len(commands) > MAX_COMMANDS:
        log.warning("discord allows 100 global commands; the rest are not registered",
                    dropped=len(commands) - MAX_COMMANDS)
    return commands[:MAX_COMMANDS]


async def register_commands(rest: DiscordRest, specs: tuple[CommandSpec, ...]) -> None:
    """Overwrite the application's global commands with `specs`. Never raises (but for
    cancellation): failures are logged, the bot runs on with the commands Discord had."""
    body = commands_json(specs)
    if not body:
        return
    try:
        app = await rest.request("GET", "/oauth2/applications/@me")
        application_id = app.get("id") if isinstance(app, dict) else None
        if not application_id:
            raise DiscordError(200, "no application id in /oauth2/applications/@me")
        await rest.request("PUT", f"/applications/{application_id}/commands", body)
    except (DiscordError, aiohttp.ClientError, OSError, ValueError) as exc:
        log.error("discord commands not registered", error=type(exc).__name__,
                  detail=str(exc)[:200])
        return
    log.info("discord commands registered", count=len(body))
