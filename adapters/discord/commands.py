"""The bot's commands as Discord application commands
(https://discord.com/developers/docs/interactions/application-commands).

Each `CommandSpec` becomes a global CHAT_INPUT command (type 1). Option kinds map to Discord
option types: string 3, integer 4, boolean 5, number 10. Names must be 1-32 characters of
lowercase letters, digits, "-" and "_"; descriptions are
1-100 characters (the name stands in for an empty one); an option's choices become
`{"name": str(value), "value": value}`, at most 25; required options come before optional
ones, as Discord requires. A command Discord would refuse is skipped with a warning (one bad
command fails the whole bulk overwrite); at most 100 global CHAT_INPUT commands are sent.

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
MAX_CHARACTERS = 8000  # names, descriptions and choices of one command together


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


def _characters(command: dict[str, Any]) -> int:
    """What Discord counts against the 8,000 characters of a command: the names,
    descriptions and choice names and values of the command and its options."""
    total = len(command["name"]) + len(command["description"])
    for option in command["options"]:
        total += len(option["name"]) + len(option["description"])
        total += sum(len(c["name"]) + len(str(c["value"])) for c in option.get("choices", []))
    return total


def _refusal(spec: CommandSpec) -> str | None:
    """Why Discord would refuse the whole bulk overwrite over this command, if it would."""
    names = [spec.name, *(o.name for o in spec.options)]
    bad = [n for n in names if not NAME.match(n)]
    if bad:
        return f"invalid names: {','.join(bad)}"
    if len({o.name for o in spec.options}) < len(spec.options):
        return "two options with one name"
    if len(spec.options) > MAX_OPTIONS:
        return f"more than {MAX_OPTIONS} options"
    for option in spec.options:
        kind = OPTION_TYPES.get(option.kind, OPTION_TYPES["string"])
        wrong = [c for c in option.choices if not _choice_fits(kind, c)]
        if wrong:
            return f"choices of {option.name} not of its type: {wrong[:3]}"
    return None


def _choice_fits(kind: int, value: object) -> bool:
    """Whether Discord takes `value` as a choice of an option of type `kind` (a choice's name
    and a string choice's value are 1-100 characters)."""
    if kind == OPTION_TYPES["integer"]:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == OPTION_TYPES["number"]:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == OPTION_TYPES["boolean"]:
        return True  # booleans get no choices
    return 0 < len(str(value)) <= CHOICE_NAME_LIMIT


def command_json(spec: CommandSpec) -> dict[str, Any] | None:
    """One CHAT_INPUT command, or None (logged) when Discord would refuse it, which would
    fail the bulk overwrite of every command: a name Discord does not allow, two options
    with one name, more than 25 options, a choice not of its option's type, or more than
    8,000 characters
    (https://discord.com/developers/docs/interactions/application-commands#slash-commands)."""
    refusal = _refusal(spec)
    if refusal is None:
        # a stable sort keeps the declared order within required and within optional options
        options = sorted(spec.options, key=lambda o: not o.required)
        command = {"type": CHAT_INPUT, "name": spec.name,
                   "description": _description(spec.description, spec.name),
                   "options": [option_json(o) for o in options]}
        if _characters(command) <= MAX_CHARACTERS:
            return command
        refusal = f"more than {MAX_CHARACTERS} characters"
    log.warning("discord cannot offer this command; skipped", command=spec.name,
                reason=refusal)
    return None


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
