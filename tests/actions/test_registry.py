"""Discovery: built-ins, installed distributions' `switchboard.actions` entry points (a real
`.dist-info` on sys.path, read by importlib.metadata) and BOT_ACTION_MODULES; duplicates fail
naming both origins, in the library and in `bot actions list`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from actions.builtin import builtin_specs
from actions.registry import ActionConflict, ActionLoadError, discover

REPO = Path(__file__).resolve().parents[2]

PLUGIN = '''
from pydantic import BaseModel
from actions import ActionContext, action

class Args(BaseModel):
    text: str

@action(description="Shout it")
async def shout(ctx: ActionContext, args: Args) -> str:
    return args.text.upper()

@action(description="Another whoami")
async def whoami(ctx: ActionContext) -> str:
    return "impostor"
'''


def install_plugin(root: Path, module: str, body: str, entry: str) -> None:
    """A distribution `demo-plugin 1.0` with one entry point, as pip would leave it."""
    (root / f"{module}.py").write_text(body)
    info = root / "demo_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[switchboard.actions]\ndemo = {entry}\n")


def test_entry_points_and_modules_are_found_with_their_origin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, "demo_plugin_ok", PLUGIN.replace("whoami", "whisper"),
                   "demo_plugin_ok")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = discover(builtin_specs(), ["tests.actions.sample_actions"])
    shout = registry.get("shout")
    assert shout is not None
    assert shout.origin == "entry point demo = demo_plugin_ok (demo-plugin 1.0)"
    assert registry.get("help") is not None and registry.get("help").origin == "builtin"  # type: ignore[union-attr]
    whoami = registry.get("whoami")
    assert whoami is not None and whoami.origin == "module tests.actions.sample_actions"
    assert registry.get("http_request") is None  # only with BOT_HTTP_ACTION_URL
    names = [s.name for s in registry]
    assert names[:5] == ["help", "reset", "sources", "feedback", "search"]
    without = discover(builtin_specs(), use_entry_points=False)
    assert without.get("shout") is None


def test_a_duplicate_name_fails_naming_both_origins(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, "demo_plugin_dup", PLUGIN, "demo_plugin_dup")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ActionConflict) as err:
        discover(builtin_specs(), ["tests.actions.sample_actions"])
    message = str(err.value)
    assert "'whoami'" in message
    assert "entry point demo = demo_plugin_dup (demo-plugin 1.0)" in message
    assert "module tests.actions.sample_actions" in message


def test_broken_plugins_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, "demo_plugin_broken", "raise ImportError('no tracker SDK')",
                   "demo_plugin_broken")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ActionLoadError, match="no tracker SDK"):
        discover(builtin_specs())
    with pytest.raises(ActionLoadError, match="holds no @action"):
        discover(builtin_specs(), ["json"], use_entry_points=False)
    with pytest.raises(ActionLoadError, match="failed to import"):
        discover(builtin_specs(), ["no_such_module_xyz"], use_entry_points=False)


def test_bot_actions_list_shows_plugins_and_refuses_duplicates(tmp_path: Path) -> None:
    install_plugin(tmp_path, "demo_plugin_cli", PLUGIN, "demo_plugin_cli")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
           "BOT_HTTP_ACTION_URL": "http://127.0.0.1:9/hook",
           "BOT_HTTP_ACTION_SECRET": "0123456789abcdef-signing"}
    listed = subprocess.run([sys.executable, "-m", "bot", "actions", "list", "--json"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert rows["shout"]["origin"] == "entry point demo = demo_plugin_cli (demo-plugin 1.0)"
    assert rows["shout"]["usage"] == "!shout <text>" and rows["shout"]["who"][0] == "anyone"
    assert rows["whoami"]["description"] == "Another whoami"
    assert "http_request" in rows and rows["http_request"]["idempotent"] is True
    dup = subprocess.run([sys.executable, "-m", "bot", "actions", "list"],
                         env={**env, "BOT_ACTION_MODULES": "tests.actions.sample_actions"},
                         capture_output=True, text=True, timeout=60)
    assert dup.returncode == 2
    assert "demo_plugin_cli (demo-plugin 1.0)" in dup.stderr
    assert "module tests.actions.sample_actions" in dup.stderr
    assert "Traceback" not in dup.stderr
    unsigned = subprocess.run([sys.executable, "-m", "bot", "actions", "list"],
                              env={**env, "BOT_HTTP_ACTION_SECRET": ""},
                              capture_output=True, text=True, timeout=60)
    assert unsigned.returncode == 2 and "BOT_HTTP_ACTION_SECRET" in unsigned.stderr


TYPE_CHECKING_PLUGIN = '''
from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel

from actions import action

if TYPE_CHECKING:
    from actions import ActionContext


class Args(BaseModel):
    text: str


@action(description="Echo it")
async def echo(ctx: ActionContext, args: Args) -> str:
    return args.text
'''


def test_a_plugin_may_import_the_context_for_type_checking_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "demo_plugin_tc.py").write_text(TYPE_CHECKING_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = discover([], ["demo_plugin_tc"], use_entry_points=False)
    echo = registry.get("echo")
    assert echo is not None and echo.args_model.__name__ == "Args"
    (tmp_path / "demo_plugin_tc_typo.py").write_text(
        TYPE_CHECKING_PLUGIN.replace("args: Args", "args: Argz"))
    with pytest.raises(ActionLoadError, match="cannot resolve the annotation of 'args'"):
        discover([], ["demo_plugin_tc_typo"], use_entry_points=False)


LOGGED = '''
import functools


def logged(func):
    @functools.wraps(func)
    async def wrapper(*args, **kwargs):
        return await func(*args, **kwargs)
    return wrapper
'''


def test_an_action_may_wear_a_decorator_from_another_module(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The args annotation resolves in the action's own module, not the wrapper's."""
    (tmp_path / "demo_logged.py").write_text(LOGGED)
    (tmp_path / "demo_plugin_wrapped.py").write_text(TYPE_CHECKING_PLUGIN.replace(
        "from actions import action\n", "from actions import action\nfrom demo_logged import "
        "logged\n").replace('@action(description="Echo it")\n',
                            '@action(description="Echo it")\n@logged\n'))
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = discover([], ["demo_plugin_wrapped"], use_entry_points=False)
    echo = registry.get("echo")
    assert echo is not None and echo.args_model.__name__ == "Args"


@pytest.mark.parametrize("name", ["ask", "start"])
def test_the_bots_own_commands_are_no_action_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    (tmp_path / f"demo_plugin_{name}.py").write_text(
        PLUGIN.replace("async def shout", f"async def {name}"))
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ActionConflict, match=f"module demo_plugin_{name} defines an action "
                                             f"named '{name}', which is reserved"):
        discover(builtin_specs(), [f"demo_plugin_{name}"], use_entry_points=False)
