"""Who may run which action, where: the decorator's defaults, overridden per deployment by the
actions policy file (`BOT_ACTIONS_POLICY`, TOML or JSON; every key is in
`deploy/actions.toml`).

```toml
[roles]                     # role name -> grants
support = ["slack:group:S0SUPPORT", "telegram:group:admins", "discord:group:1122334455",
           "slack:user:U0ALICE", "webhook:user:ops-bot"]

[actions.create_ticket]     # any of these replaces the decorator's value
roles = ["support"]
platforms = ["slack", "discord"]
channels = ["slack:C0SUPPORT"]
users = ["telegram:user:5555"]
enabled = true
timeout_s = 20
```

A grant is `<platform>:user:<user id>` (also `<platform>:<user id>`) or
`<platform>:group:<group>`, where a group is a Slack user group id, Telegram's `admins` (the
administrators of the chat the message came from) or a Discord role id; groups are asked of
the platform's sender (`bot.protocols.GroupDirectory`). A channel is `<platform>:<channel id>`.
`ActionsPolicy.check_against` checks the grants, the decorators' too, and that every
`[actions.<name>]` names a registered action, at start-up.

The rule: the action must be enabled, offered on the message's platform and channel (empty
lists mean everywhere), and, when it names roles or users, the caller must hold one of the
roles or be one of the users. A group the platform cannot be asked about counts as not held.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from actions.spec import ActionSpec
from bot.errors import ConfigError
from bot.log import get_logger
from bot.messages import Message
from bot.policyfile import load_policy_file
from bot.protocols import GroupDirectory, Sender

log = get_logger("actions.policy")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionOverride(_Strict):
    enabled: bool = True
    roles: frozenset[str] | None = None
    users: frozenset[str] | None = None
    platforms: frozenset[str] | None = None
    channels: frozenset[str] | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    confirm: bool | None = None


class ActionsPolicy(_Strict):
    """The policy file's contents."""

    roles: dict[str, frozenset[str]] = {}
    actions: dict[str, ActionOverride] = {}

    @classmethod
    def load(cls, path: Path | None) -> ActionsPolicy:
        """The policy in `path` (.toml or .json), or the empty policy when None.

        Raises:
            ConfigError: unreadable file, bad syntax, or an unknown or invalid key (named).
        """
        policy = load_policy_file(cls, path, "BOT_ACTIONS_POLICY")
        for role, grants in policy.roles.items():
            for grant in grants:
                _parse_grant(grant, f"BOT_ACTIONS_POLICY: {path or ''}: [roles] {role}")
        return policy

    def check_against(self, specs: Iterable[ActionSpec], path: Path | None = None,
                      dormant: Iterable[str] = ()) -> None:
        """Check, at start-up, everything that names an action or a caller: each
        `[actions.<name>]` must name a registered action or one of `dormant` (actions that
        exist only when configured, so one policy file serves every deployment), and every
        `users` and `channels` entry, the decorators' and the policy's, must be well formed.

        Raises:
            ConfigError: the first bad entry, naming the action (and its origin, or the
                policy file) and the entry.
        """
        specs = list(specs)
        for spec in specs:
            where = f"action {spec.name!r} ({spec.origin or 'no origin'})"
            _check_entries(spec.users, spec.channels, where)
        names = {s.name for s in specs}
        for name, override in self.actions.items():
            where = f"BOT_ACTIONS_POLICY: {path or ''}: [actions.{name}]"
            if name not in names and name not in dormant:
                raise ConfigError(f"{where}: there is no action named {name!r} (the actions "
                                  f"are: {', '.join(sorted(names))})")
            _check_entries(override.users or (), override.channels or (), where)


@dataclass(frozen=True, slots=True)
class Rule:
    """The effective permissions of one action."""

    enabled: bool
    roles: frozenset[str]
    users: frozenset[str]
    platforms: frozenset[str]
    channels: frozenset[str]

    @property
    def restricted(self) -> bool:
        return bool(self.roles or self.users)


def _parse_grant(grant: str, where: str = "BOT_ACTIONS_POLICY") -> tuple[str, str, str]:
    """"slack:group:S1" -> ("slack", "group", "S1"); "slack:U1" -> ("slack", "user", "U1").

    Raises:
        ConfigError: "<where>: bad grant ..." when it has neither form.
    """
    parts = grant.split(":", 2)
    if len(parts) == 3 and parts[1] in ("user", "group") and parts[0] and parts[2]:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2 and all(parts):
        return parts[0], "user", parts[1]
    raise ConfigError(f"{where}: bad grant {grant!r} (use '<platform>:user:<id>' or "
                      "'<platform>:group:<group>')")


def _check_entries(users: Iterable[str], channels: Iterable[str], where: str) -> None:
    for grant in sorted(users):
        _parse_grant(grant, f"{where}: users")
    for channel in sorted(channels):
        platform, colon, channel_id = channel.partition(":")
        if not (platform and colon and channel_id):
            raise ConfigError(f"{where}: channels: bad channel {channel!r} (use "
                              "'<platform>:<channel id>')")


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a caller may not run an action (shown to them)."""

    reason: str


class Permissions:
    """Applies the policy to callers.

    Args:
        policy: the deployment's policy file.
        senders: per platform, the sender asked about groups when it is a `GroupDirectory`.
    """

    def __init__(self, policy: ActionsPolicy, senders: Mapping[str, Sender]) -> None:
        self.policy = policy
        self._senders = senders

    def rule(self, spec: ActionSpec) -> Rule:
        o = self.policy.actions.get(spec.name, ActionOverride())
        return Rule(enabled=o.enabled,
                    roles=o.roles if o.roles is not None else spec.roles,
                    users=o.users if o.users is not None else spec.users,
                    platforms=o.platforms if o.platforms is not None else spec.platforms,
                    channels=o.channels if o.channels is not None else spec.channels)

    def timeout_s(self, spec: ActionSpec) -> float:
        o = self.policy.actions.get(spec.name)
        return o.timeout_s if o is not None and o.timeout_s is not None else spec.timeout_s

    def confirm(self, spec: ActionSpec) -> bool:
        o = self.policy.actions.get(spec.name)
        return o.confirm if o is not None and o.confirm is not None else spec.confirm

    async def check(self, spec: ActionSpec, message: Message) -> Denial | None:
        """None when `message`'s author may run `spec` where the message was sent."""
        rule = self.rule(spec)
        conv = message.conversation
        if not rule.enabled:
            return Denial(f"`{spec.name}` is turned off here")
        if rule.platforms and conv.platform not in rule.platforms:
            return Denial(f"`{spec.name}` is not available on {conv.platform}")
        if rule.channels and f"{conv.platform}:{conv.channel}" not in rule.channels:
            return Denial(f"`{spec.name}` is not available in this channel")
        if not rule.restricted or await self._granted(rule, message):
            return None
        who = ", ".join(sorted(rule.roles)) or "listed users"
        return Denial(f"you may not run `{spec.name}` (it needs the role: {who})"
                      if rule.roles else f"you may not run `{spec.name}` (only {who} may)")

    async def _granted(self, rule: Rule, message: Message) -> bool:
        grants = set(rule.users)
        for role in rule.roles:
            grants |= self.policy.roles.get(role, frozenset())
        platform = message.conversation.platform
        groups: list[str] = []
        for grant in grants:
            grant_platform, kind, value = _parse_grant(grant)
            if grant_platform != platform:
                continue
            if kind == "user" and value == message.user:
                return True
            if kind == "group":
                groups.append(value)
        sender = self._senders.get(platform)
        if not groups or not isinstance(sender, GroupDirectory):
            return False
        for group in sorted(groups):
            try:
                if await sender.in_group(message, group):
                    return True
            except Exception as exc:  # cannot ask the platform: not granted
                log.warning("group membership unknown; denying", platform=platform,
                            group=group, error=type(exc).__name__)
        return False
