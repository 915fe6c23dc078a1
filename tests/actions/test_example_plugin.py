"""The example plugin (examples/switchboard-tickets), installed with `pip install -e` into a
fresh virtual environment, appears in `bot actions list` and works end to end in `bot run`,
without any change to the framework or any BOT_ACTION_MODULES setting: its actions arrive
through the `switchboard.actions` entry point only.

The throwaway venv sees this environment's packages through a .pth file (so nothing is
downloaded), and this checkout first on its path (so the code under test is this one). The
plugin is copied to tmp_path before the editable install, because building it writes
`*.egg-info` next to its sources. The plugin is never installed into the environment that
runs the tests.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import site
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import aiohttp

from adapters.verification import sha256_signature
from tests.conftest import subprocess_env
from tests.fakes.bot_server import TEST_WEBHOOK_SECRET
from tests.fakes.processes import BotProcess

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "switchboard-tickets"
ORIGIN = "entry point tickets = switchboard_tickets.actions (switchboard-tickets 0.1.0)"


async def _run(*cmd: str | Path, env: dict[str, str] | None = None,
               cwd: Path) -> subprocess.CompletedProcess[str]:
    result = await asyncio.to_thread(subprocess.run, [str(c) for c in cmd], env=env, cwd=cwd,
                                     capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{cmd}\n{result.stdout}\n{result.stderr}"
    return result


def _setuptools_builds_offline() -> bool:
    """Whether this environment's setuptools can build an editable wheel by itself (70.1+
    has bdist_wheel built in; 64-70.0 needs the `wheel` package)."""
    try:
        major, minor = (int(p) for p in version("setuptools").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (70, 1) or ((major, minor) >= (64, 0)
                                         and find_spec("wheel") is not None)


async def _venv_with_plugin(tmp_path: Path) -> Path:
    """A new venv seeing this environment's packages, with the plugin installed editable;
    returns its python."""
    venv = tmp_path / "venv"
    await _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = (await _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                          "['purelib'])", cwd=tmp_path)).stdout.strip()
    parents = [*site.getsitepackages(),
               *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    lines = [str(ROOT)] + [f"import site; site.addsitedir({p!r})" for p in parents]
    (Path(purelib) / "_switchboard_test_parent.pth").write_text("\n".join(lines) + "\n")
    source = tmp_path / "switchboard-tickets"
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns(
        "*.egg-info", "__pycache__", "build", "dist"))
    # offline when this environment's setuptools can build the editable wheel; otherwise pip
    # fetches the build backend from its index, as `pip install -e .` of Switchboard does
    offline = ["--no-build-isolation", "--no-index"] if _setuptools_builds_offline() else []
    await _run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
               "--no-deps", *offline, "-e", source, cwd=tmp_path)
    return python


class Webhook:
    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0

    async def send(self, user: str, **fields: str) -> dict[str, Any]:
        """Post one message (`text=` or `button=`) and return the bot's reply."""
        self.sent += 1
        body = json.dumps({"id": f"m{self.sent}", "user": user, "conversation": "c1",
                           **fields}).encode()
        async with aiohttp.ClientSession() as session, session.post(
                f"{self.url}/webhooks/support?wait=true", data=body,
                headers={"Content-Type": "application/json",
                         "X-Signature": sha256_signature(TEST_WEBHOOK_SECRET, body)}) as r:
            assert r.status == 200, await r.text()
            reply: dict[str, Any] = await r.json()
            return reply


async def test_installed_example_plugin_is_listed_and_runs(
        env_settings: dict[str, str], tmp_path: Path) -> None:
    python = await _venv_with_plugin(tmp_path)
    tickets = tmp_path / "tickets.jsonl"
    policy = tmp_path / "actions.toml"
    policy.write_text('[roles]\nsupport = ["webhook:user:alice"]\n')
    env = subprocess_env(env_settings, SWITCHBOARD_TICKETS_FILE=str(tickets),
                         BOT_ACTIONS_POLICY=str(policy), BOT_ACTION_ENTRY_POINTS="true")
    env.pop("BOT_ACTION_MODULES", None)
    env.pop("PYTHONPATH", None)

    listed = await _run(python, "-m", "bot", "actions", "list", "--json", env=env,
                        cwd=tmp_path)
    rows = {row["name"]: row for row in map(json.loads, listed.stdout.splitlines())}
    assert {"help", "create_ticket", "list_tickets"} <= rows.keys()
    create, latest = rows["create_ticket"], rows["list_tickets"]
    assert create["origin"] == latest["origin"] == ORIGIN
    assert create["roles"] == ["support"] and create["confirm"] is True
    assert create["usage"] == "!create_ticket <title> [priority=low|normal|high]"
    assert latest["roles"] == [] and latest["confirm"] is False

    bot = BotProcess(env, tmp_path / "bot-run.log", "--workers", "1", python=python,
                     cwd=tmp_path)
    try:
        await bot.ready()
        hook = Webhook(bot.url)

        assert (await hook.send("bob", text="!list_tickets"))["answer"] == "No tickets yet."
        denied = await hook.send("bob", text="!create_ticket Printer on fire priority=high")
        assert "you may not run `create_ticket` (it needs the role: support)" in \
            denied["answer"]
        assert not tickets.exists()

        asked = await hook.send("alice", text="!create_ticket Printer on fire priority=high")
        assert asked["answer"].startswith(
            'Run `create_ticket` with title="Printer on fire", priority="high"?')
        assert [b["label"] for b in asked["buttons"]] == ["Confirm", "Cancel"]
        assert not tickets.exists()  # nothing runs before Confirm
        done = await hook.send("alice", button=asked["buttons"][0]["token"])
        assert done["answer"] == "Opened ticket #1: Printer on fire (priority high)"

        listed_reply = await hook.send("bob", text="!list_tickets 3")
        assert listed_reply["answer"] == ("The latest ticket:\n- #1 [high] Printer on fire "
                                          "(opened by webhook:alice)")
    finally:
        bot.stop()
    stored = [json.loads(line) for line in tickets.read_text().splitlines()]
    assert len(stored) == 1
    assert {k: stored[0][k] for k in ("number", "title", "priority", "platform", "user")} == {
        "number": 1, "title": "Printer on fire", "priority": "high", "platform": "webhook",
        "user": "alice"}
    assert stored[0]["call_id"] == "webhook:support:m4"  # the Confirm press's message id
