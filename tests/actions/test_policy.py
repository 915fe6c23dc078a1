"""The actions policy: the decorator's defaults, the deployment's overrides, grants."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from actions.loading import load_actions
from actions.policy import ActionsPolicy, Permissions
from actions.spec import ActionSpec, spec_of
from bot.config import Settings
from bot.errors import ConfigError
from bot.messages import Conversation, Message
from bot.runtime import Runtime
from tests.actions import sample_actions

REPO = Path(__file__).resolve().parents[2]


def msg(platform: str = "slack", user: str = "U1", channel: str = "C1") -> Message:
    return Message(id="m", conversation=Conversation(platform=platform, channel=channel),
                   user=user, text="!x")


def spec(func: object) -> ActionSpec:
    found = spec_of(func)
    assert found is not None
    return found


def write(tmp_path: Path, text: str, name: str = "actions.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


async def test_roles_users_platforms_and_channels(tmp_path: Path) -> None:
    policy = ActionsPolicy.load(write(tmp_path, """
[roles]
support = ["slack:user:U0ALICE", "telegram:5555"]

[actions.whoami]
platforms = ["slack", "webhook"]
channels = ["slack:C0OPS", "webhook:c1"]

[actions.boom]
enabled = false

[actions.slow]
users = ["discord:user:42"]
timeout_s = 2.5
confirm = true
"""))
    perms = Permissions(policy, {})
    ticket = spec(sample_actions.create_ticket)
    assert await perms.check(ticket, msg(user="U0ALICE")) is None
    assert await perms.check(ticket, msg("telegram", "5555")) is None
    denial = await perms.check(ticket, msg(user="U0BOB"))
    assert denial is not None and "role: support" in denial.reason
    # the same user id on another platform is somebody else
    assert await perms.check(ticket, msg("discord", "U0ALICE")) is not None
    whoami = spec(sample_actions.whoami)
    assert await perms.check(whoami, msg(channel="C0OPS")) is None
    assert "this channel" in (await perms.check(whoami, msg(channel="C1"))).reason  # type: ignore[union-attr]
    assert "on telegram" in (await perms.check(whoami, msg("telegram"))).reason  # type: ignore[union-attr]
    assert "turned off" in (await perms.check(spec(sample_actions.boom), msg())).reason  # type: ignore[union-attr]
    slow = spec(sample_actions.slow)
    assert await perms.check(slow, msg("discord", "42")) is None
    assert await perms.check(slow, msg("discord", "43")) is not None
    assert perms.timeout_s(slow) == 2.5 and perms.confirm(slow) is True
    assert perms.timeout_s(whoami) == whoami.timeout_s and perms.confirm(ticket) is True


async def test_groups_need_the_platform_and_unknown_roles_grant_nothing() -> None:
    perms = Permissions(ActionsPolicy(roles={"support": frozenset({"slack:group:S1"})}), {})
    # no GroupDirectory for slack here: a group cannot be checked, so it is not held
    assert await perms.check(spec(sample_actions.create_ticket), msg()) is not None
    assert await perms.check(spec(sample_actions.deploy), msg()) is not None  # role "ops" unset


@pytest.mark.parametrize(("text", "problem"), [
    ("[actions.x]\nroles = 'support'\n", "actions.x.roles"),
    ("[actions.x]\ncolour = 1\n", "actions.x.colour"),
    ("[roles]\nsupport = ['slack-U1']\n", "bad grant"),
    ("[actions.x]\ntimeout_s = 0\n", "timeout_s"),
    ("[roles\n", "actions.toml"),
])
def test_bad_policy_files_are_config_errors(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="BOT_ACTIONS_POLICY") as err:
        ActionsPolicy.load(write(tmp_path, text))
    assert problem in str(err.value)
    with pytest.raises(ConfigError, match="cannot read"):
        ActionsPolicy.load(tmp_path / "missing.toml")


def test_the_shipped_policy_is_the_default_and_json_works(tmp_path: Path) -> None:
    assert ActionsPolicy.load(REPO / "deploy" / "actions.toml") == ActionsPolicy()
    assert ActionsPolicy.load(None) == ActionsPolicy()
    loaded = ActionsPolicy.load(write(tmp_path, '{"roles": {"ops": ["slack:user:U1"]}}',
                                      "actions.json"))
    assert loaded.roles == {"ops": frozenset({"slack:user:U1"})}


BAD_GRANTS = '''
from pydantic import BaseModel
from actions import ActionContext, action

@action(description="Granted to a user id without a platform", users={"U123"})
async def wipe_all(ctx: ActionContext) -> str:
    return "wiped"
'''


@pytest.mark.parametrize(("module", "policy", "problem"), [
    ("good", "[actions.wipe_al]\nenabled = false\n",
     "[actions.wipe_al]: there is no action named 'wipe_al'"),
    ("good", "[actions.wipe_all]\nusers = ['alice']\n",
     "[actions.wipe_all]: users: bad grant 'alice'"),
    ("good", "[actions.wipe_all]\nchannels = ['C0OPS']\n",
     "[actions.wipe_all]: channels: bad channel 'C0OPS'"),
    ("bad", "", "action 'wipe_all' (module demo_grants_bad): users: bad grant 'U123'"),
])
async def test_every_grant_and_action_name_is_checked_at_start_up(
        make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        module: str, policy: str, problem: str) -> None:
    """A grant the runtime could not read, or a policy section for an action that does not
    exist, stops start-up instead of failing (or being ignored) per message."""
    body = BAD_GRANTS if module == "bad" else BAD_GRANTS.replace('users={"U123"}',
                                                                 'users={"slack:U123"}')
    (tmp_path / f"demo_grants_{module}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = make_settings(bot_action_modules=f"demo_grants_{module}",
                             bot_action_entry_points=False,
                             bot_actions_policy=write(tmp_path, policy))
    with pytest.raises(ConfigError) as err:
        async with Runtime(settings):
            pass
    assert problem in str(err.value)


def test_a_policy_may_restrict_http_request_where_it_is_not_configured(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """One policy file serves every deployment: `[actions.http_request]` is accepted while
    BOT_HTTP_ACTION_URL is unset (the action then does not exist), and applies once it is."""
    policy = write(tmp_path, "[roles]\nops = ['webhook:user:alice']\n"
                             "[actions.http_request]\nroles = ['ops']\n")
    registry, _ = load_actions(make_settings(bot_actions_policy=policy,
                                             bot_action_entry_points=False))
    assert "http_request" not in registry
    registry, loaded = load_actions(make_settings(
        bot_actions_policy=policy, bot_action_entry_points=False,
        bot_http_action_url="http://127.0.0.1:9/hook",
        bot_http_action_secret="0123456789abcdef"))
    assert "http_request" in registry
    assert loaded.actions["http_request"].roles == frozenset({"ops"})
