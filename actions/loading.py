"""Loading the actions a deployment runs: the built-ins its settings enable, plugins
(entry points, BOT_ACTION_MODULES), and the actions policy, checked against each other."""

from __future__ import annotations

from actions.builtin import CONFIGURED_BUILTINS, builtin_specs
from actions.policy import ActionsPolicy
from actions.registry import Registry, discover
from bot.config import Settings
from bot.errors import ConfigError


def build_action_registry(s: Settings) -> Registry:
    """`load_actions(s)`'s registry (`bot actions list`). Raises: as `load_actions`."""
    return load_actions(s)[0]


def load_actions(s: Settings) -> tuple[Registry, ActionsPolicy]:
    """The action registry and the actions policy, checked against each other.

    Raises:
        ConfigError: two actions share a name or one is reserved, a plugin fails to load,
            BOT_HTTP_ACTION_URL is set without BOT_HTTP_ACTION_SECRET, the policy file is bad
            or names no registered action, or a `users`/`channels` entry is malformed.
    """
    secret = s.bot_http_action_secret.get_secret_value() if s.bot_http_action_secret else ""
    if s.bot_http_action_url and len(secret) < 16:
        raise ConfigError("BOT_HTTP_ACTION_SECRET: set a secret of at least 16 characters to "
                          "sign http_request calls to BOT_HTTP_ACTION_URL")
    registry = discover(builtin_specs(s.bot_http_action_url, secret,
                                      s.bot_http_action_timeout_s),
                        s.action_modules(), use_entry_points=s.bot_action_entry_points)
    policy = ActionsPolicy.load(s.bot_actions_policy)
    policy.check_against(registry, s.bot_actions_policy, dormant=CONFIGURED_BUILTINS)
    return registry, policy
