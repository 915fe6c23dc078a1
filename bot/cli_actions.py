"""`bot actions ...`: what actions this deployment offers, and to whom."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

actions_app = typer.Typer(no_args_is_help=True, help="Inspect the actions.")


def _who(rule: Any, confirm: bool, timeout_s: float) -> list[str]:
    parts = []
    if not rule.enabled:
        parts.append("turned off")
    parts.append("roles: " + ", ".join(sorted(rule.roles)) if rule.roles else
                 "anyone" if not rule.users else "")
    if rule.users:
        parts.append("users: " + ", ".join(sorted(rule.users)))
    if rule.platforms:
        parts.append("platforms: " + ", ".join(sorted(rule.platforms)))
    if rule.channels:
        parts.append("channels: " + ", ".join(sorted(rule.channels)))
    if confirm:
        parts.append("asks to confirm")
    parts.append(f"timeout {timeout_s:g} s")
    return [p for p in parts if p]


@actions_app.command("list")
def actions_list(as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per action, one per line.")] = False) -> None:
    """Each action with its arguments, where it came from and who may run it (the actions
    policy applied). Exits 2 when two actions share a name or a plugin fails to load."""
    from actions.arguments import usage
    from actions.loading import build_action_registry
    from actions.policy import ActionsPolicy, Permissions
    from bot.cli_common import run as _run
    from bot.cli_common import settings as _settings

    settings = _settings()

    async def main() -> int:
        registry = build_action_registry(settings)
        permissions = Permissions(ActionsPolicy.load(settings.bot_actions_policy), {})
        rows: list[dict[str, Any]] = []
        for spec in registry:
            rule = permissions.rule(spec)
            rows.append({
                "name": spec.name, "description": spec.description, "usage": usage(spec),
                "origin": spec.origin, "enabled": rule.enabled, "roles": sorted(rule.roles),
                "users": sorted(rule.users), "platforms": sorted(rule.platforms),
                "channels": sorted(rule.channels), "confirm": permissions.confirm(spec),
                "timeout_s": permissions.timeout_s(spec), "idempotent": spec.idempotent,
                "read_only": spec.read_only,
                "tool": spec.tool,
                "who": _who(rule, permissions.confirm(spec), permissions.timeout_s(spec))})
        if as_json:
            for row in rows:
                typer.echo(json.dumps(row))
            return 0
        table = Table(title=f"{len(rows)} actions")
        for column in ("action", "arguments", "from", "who may run it"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(f"{escape(row['name'])}\n[dim]{escape(row['description'])}[/dim]",
                          escape(row["usage"]), escape(row["origin"]),
                          escape("\n".join(row["who"])))
        Console(width=max(Console().width, 120)).print(table)
        return 0

    _run(main())
