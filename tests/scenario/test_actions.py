"""Actions on every platform, end to end: signed platform payloads in, the fake platform's
recorded API calls out, the audit rows in Postgres.

On Slack, Telegram and Discord the same action (`create_ticket`: confirm=True, role
"support") is invoked by a command, confirmed by pressing the platform's button, and invoked
by an LLM tool call from the fake OpenAI-compatible server; argument errors, permission
denials, timeouts and exceptions each get their reply and audit row. The "support" role is a
real platform group: a Slack user group, the Telegram chat's administrators, a Discord role.
"""

from __future__ import annotations

import io
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlencode

import aiohttp
import pytest

from tests.actions import sample_actions
from tests.fakes.bot_server import Server
from tests.fakes.discord_api import APP_ID, CHANNEL_ID, GUILD_ID, ROLE_ID, FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, ToolScript
from tests.fakes.slack_api import BOT_USER_ID, SIGNING_SECRET, TEAM_ID, FakeSlack, signed_headers
from tests.fakes.telegram_api import BOT_USERNAME, TOKEN, FakeTelegram
from tests.scenario.test_discord import PUBLIC_KEY
from tests.scenario.test_discord import signed as discord_signed
from tests.scenario.test_telegram import SECRET as TELEGRAM_SECRET

POLICY = f"""
[roles]
support = ["slack:group:S0SUPPORT", "telegram:group:admins", "discord:group:{ROLE_ID}"]
"""
SUPPORT, OTHER = "support", "other"
_n = itertools.count(1)

SCRIPT = ToolScript("Model answer")
#: the calls the fake model makes for the next question (then it answers)
PLAN = SCRIPT.plan


class Sent:
    """One reply as the platform received it: its text and its buttons (label, token)."""

    def __init__(self, text: str, buttons: list[tuple[str, str]]) -> None:
        self.text = text
        self.buttons = buttons

    def token(self, label: str) -> str:
        return next(t for lbl, t in self.buttons if lbl == label)


class Driver:
    """Speaks one platform's inbound protocol to the bot and reads its replies off the
    platform fake."""

    name = ""
    srv: Server

    async def _post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        async with aiohttp.ClientSession() as session, session.post(
                self.srv.url + path, data=io.BytesIO(body), headers=headers) as response:
            return response.status

    async def command(self, who: str, name: str, text: str, options: dict[str, Any]) -> Sent:
        raise NotImplementedError

    async def ask(self, who: str, text: str) -> Sent:
        raise NotImplementedError

    async def press(self, who: str, token: str, label: str) -> Sent:
        raise NotImplementedError

    async def bang(self, who: str, text: str) -> Sent:
        """`!name args` as plain text in a channel, not addressed to the bot otherwise."""
        raise NotImplementedError

    def calls(self) -> int:
        """How many API calls the platform fake has recorded."""
        raise NotImplementedError

    def pressed_message_changed(self, since: int) -> bool:
        """Whether, after call number `since`, the bot replaced a pressed message or took
        its buttons away."""
        raise NotImplementedError


class SlackDriver(Driver):
    name = "slack"
    users: ClassVar[dict[str, str]] = {SUPPORT: "U0ALICE", OTHER: "U0BOB"}

    def __init__(self, fake: FakeSlack) -> None:
        self.fake = fake
        fake.usergroups = {"S0SUPPORT": ["U0ALICE"]}

    def _sent(self) -> list[Sent]:
        out = []
        for method, body in self.fake.calls:
            if method not in ("chat.postMessage", "response_url") or not body.get("text"):
                continue
            blocks = body.get("blocks") or []
            if isinstance(blocks, str):
                blocks = json.loads(blocks)
            buttons = [(e["text"]["text"], e["value"]) for b in blocks
                       if b.get("type") == "actions" for e in b["elements"]]
            out.append(Sent(body["text"], buttons))
        return out

    async def _next(self, before: int) -> Sent:
        await self.fake.wait_for(lambda: len(self._sent()) > before)
        return self._sent()[-1]

    def calls(self) -> int:
        return len(self.fake.calls)

    def pressed_message_changed(self, since: int) -> bool:
        return any(method == "response_url" and body.get("replace_original") is True
                   for method, body in self.fake.calls[since:])

    async def _form(self, fields: dict[str, str]) -> None:
        body = urlencode(fields).encode()
        status = await self._post("/slack/events", body, signed_headers(
            body, content_type="application/x-www-form-urlencoded"))
        assert status == 200

    async def command(self, who: str, name: str, text: str, options: dict[str, Any]) -> Sent:
        before = len(self._sent())
        n = next(_n)
        await self._form({"command": f"/{name}", "text": text, "user_id": self.users[who],
                          "channel_id": "C0ACTIONS", "team_id": TEAM_ID,
                          "trigger_id": f"{n}.{n}.trigger{n}",
                          "response_url": f"http://127.0.0.1:{self.fake.port}/response/{n}"})
        return await self._next(before)

    async def ask(self, who: str, text: str) -> Sent:
        before = len(self._sent())
        n = next(_n)
        event = {"type": "event_callback", "team_id": TEAM_ID, "event_id": f"EvACT{n}",
                 "event": {"type": "app_mention", "user": self.users[who],
                           "channel": "C0ACTIONS", "ts": f"1700000{n:03d}.000100",
                           "text": f"<@{BOT_USER_ID}> {text}"}}
        body = json.dumps(event).encode()
        assert await self._post("/slack/events", body, signed_headers(body)) == 200
        return await self._next(before)

    async def bang(self, who: str, text: str) -> Sent:
        before = len(self._sent())
        n = next(_n)
        event = {"type": "event_callback", "team_id": TEAM_ID, "event_id": f"EvBANG{n}",
                 "event": {"type": "message", "channel_type": "channel",
                           "user": self.users[who], "channel": "C0ACTIONS",
                           "ts": f"1700001{n:03d}.000100", "text": text}}
        body = json.dumps(event).encode()
        assert await self._post("/slack/events", body, signed_headers(body)) == 200
        return await self._next(before)

    async def press(self, who: str, token: str, label: str) -> Sent:
        before = len(self._sent())
        n = next(_n)
        payload = {"type": "block_actions", "user": {"id": self.users[who]},
                   "team": {"id": TEAM_ID}, "channel": {"id": "C0ACTIONS"},
                   "container": {"type": "message", "message_ts": "1700000000.000200"},
                   "message": {"ts": "1700000000.000200", "text": "?"},
                   "trigger_id": f"{n}.{n}.press{n}",
                   "response_url": f"http://127.0.0.1:{self.fake.port}/response/p{n}",
                   "actions": [{"action_id": f"sb:{token}", "block_id": "sb", "value": token,
                                "type": "button", "action_ts": f"1700000{n:03d}.1",
                                "text": {"type": "plain_text", "text": label}}]}
        await self._form({"payload": json.dumps(payload)})
        return await self._next(before)


class TelegramDriver(Driver):
    name = "telegram"
    chat = -1001234567890
    users: ClassVar[dict[str, int]] = {SUPPORT: 5551, OTHER: 5552}

    def __init__(self, fake: FakeTelegram) -> None:
        self.fake = fake
        fake.admins = {self.chat: {5551}}

    def _sent(self) -> list[Sent]:
        out = []
        for params in self.fake.params("sendMessage"):
            markup = params.get("reply_markup") or {}
            rows = markup.get("inline_keyboard", []) if isinstance(markup, dict) else []
            buttons = [(b["text"], b["callback_data"].removeprefix("sb:")) for row in rows
                       for b in row]
            out.append(Sent(params["text"], buttons))
        return out

    def calls(self) -> int:
        return len(self.fake.calls)

    def pressed_message_changed(self, since: int) -> bool:
        return any(method == "editMessageReplyMarkup" for method, _ in self.fake.calls[since:])

    async def _update(self, update: dict[str, Any]) -> Sent:
        before = len(self._sent())
        status = await self._post("/telegram/webhook", json.dumps(update).encode(), {
            "X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET,
            "Content-Type": "application/json"})
        assert status == 200
        await self.fake.wait_for(lambda: len(self._sent()) > before)
        return self._sent()[-1]

    def _message(self, who: str, text: str, entities: list[dict[str, Any]]) -> dict[str, Any]:
        n = next(_n)
        return {"update_id": 800000 + n, "message": {
            "message_id": 100 + n, "date": int(time.time()), "text": text,
            "entities": entities,
            "from": {"id": self.users[who], "is_bot": False, "first_name": who},
            "chat": {"id": self.chat, "type": "supergroup", "title": "Support"}}}

    async def command(self, who: str, name: str, text: str, options: dict[str, Any]) -> Sent:
        command = f"/{name}@{BOT_USERNAME}"
        return await self._update(self._message(
            who, f"{command} {text}".strip(),
            [{"type": "bot_command", "offset": 0, "length": len(command)}]))

    async def ask(self, who: str, text: str) -> Sent:
        mention = f"@{BOT_USERNAME}"
        return await self._update(self._message(
            who, f"{mention} {text}", [{"type": "mention", "offset": 0,
                                        "length": len(mention)}]))

    async def bang(self, who: str, text: str) -> Sent:
        return await self._update(self._message(who, text, []))

    async def press(self, who: str, token: str, label: str) -> Sent:
        n = next(_n)
        return await self._update({"update_id": 800000 + n, "callback_query": {
            "id": f"cbq{n}", "chat_instance": "-77",
            "from": {"id": self.users[who], "is_bot": False, "first_name": who},
            "data": f"sb:{token}",
            "message": {"message_id": 5000 + n, "date": int(time.time()), "text": "?",
                        "from": {"id": int(TOKEN.split(":")[0]), "is_bot": True,
                                 "first_name": "Switchboard"},
                        "chat": {"id": self.chat, "type": "supergroup", "title": "Support"}}}})


class DiscordDriver(Driver):
    name = "discord"
    users: ClassVar[dict[str, str]] = {SUPPORT: "4201", OTHER: "4202"}
    roles: ClassVar[dict[str, list[str]]] = {SUPPORT: [ROLE_ID], OTHER: []}

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    def _sent(self) -> list[Sent]:
        out = []
        for method, path, body, _ in self.fake.calls:
            if method not in ("PATCH", "POST") or not path.startswith("/webhooks/"):
                continue
            if not isinstance(body, dict) or "content" not in body:
                continue
            buttons = [(c["label"], c["custom_id"].removeprefix("sb:"))
                       for row in body.get("components") or [] for c in row["components"]]
            out.append(Sent(body["content"], buttons))
        return out

    def calls(self) -> int:
        return len(self.fake.calls)

    def pressed_message_changed(self, since: int) -> bool:
        return any(method in ("PATCH", "DELETE") and path.endswith("/@original")
                   for method, path, _, _ in self.fake.calls[since:])

    async def _interaction(self, who: str, kind: int, data: dict[str, Any]) -> Sent:
        before = len(self._sent())
        n = next(_n)
        payload = {"id": f"99{n:06d}", "application_id": APP_ID, "type": kind,
                   "token": f"itoken{n}", "version": 1, "guild_id": GUILD_ID,
                   "channel_id": CHANNEL_ID, "data": data,
                   "member": {"roles": self.roles[who],
                              "user": {"id": self.users[who], "username": who}}}
        if kind == 3:
            payload["message"] = {"id": "1400000000000000123", "channel_id": CHANNEL_ID}
        body = json.dumps(payload).encode()
        assert await self._post("/discord/interactions", body, discord_signed(body)) == 200
        await self.fake.wait_for(lambda: len(self._sent()) > before)
        return self._sent()[-1]

    async def command(self, who: str, name: str, text: str, options: dict[str, Any]) -> Sent:
        types = {str: 3, int: 4, bool: 5, float: 10}
        return await self._interaction(who, 2, {"id": "1", "name": name, "type": 1, "options": [
            {"name": k, "type": types[type(v)], "value": v} for k, v in options.items()]})

    async def ask(self, who: str, text: str) -> Sent:
        return await self._interaction(who, 2, {"id": "2", "name": "ask", "type": 1,
                                                "options": [{"name": "question", "type": 3,
                                                             "value": text}]})

    async def press(self, who: str, token: str, label: str) -> Sent:
        return await self._interaction(who, 3, {"custom_id": f"sb:{token}",
                                                "component_type": 2})


@pytest.fixture(params=["slack", "telegram", "discord"])
async def driver(request: pytest.FixtureRequest, server_factory: Callable[..., Any],
                 tmp_path: Path) -> AsyncIterator[Driver]:
    sample_actions.CALLS.clear()
    PLAN.clear()
    policy = tmp_path / "actions.toml"
    policy.write_text(POLICY)
    llm = await FakeOpenAI(answer=SCRIPT.answer, tool_calls=SCRIPT.tool_calls).start()
    common: dict[str, Any] = {"bot_action_modules": "tests.actions.sample_actions",
                              "bot_actions_policy": policy, "llm_base_url": llm.base_url,
                              "openai_api_key": "sk-test-0000"}
    fake: FakeSlack | FakeTelegram | FakeDiscord
    if request.param == "slack":
        fake = await FakeSlack().start()
        drv: Driver = SlackDriver(fake)
        settings = {"slack_bot_token": "xoxb-actions", "slack_signing_secret": SIGNING_SECRET,
                    "slack_api_url": fake.api_url}
    elif request.param == "telegram":
        fake = await FakeTelegram().start()
        drv = TelegramDriver(fake)
        settings = {"telegram_bot_token": TOKEN, "telegram_webhook_secret": TELEGRAM_SECRET,
                    "telegram_api_url": fake.api_url}
    else:
        fake = await FakeDiscord().start()
        drv = DiscordDriver(fake)
        settings = {"discord_public_key": PUBLIC_KEY, "discord_api_url": fake.api_url}
    drv.srv = await server_factory(**common, **settings)
    yield drv
    await fake.stop()
    await llm.stop()


async def last_audit(srv: Server) -> dict[str, Any]:
    row = await srv.rt.pool.fetchrow(
        "SELECT action, via, status, platform, user_id, args, error, trace_id "
        "FROM action_runs ORDER BY id DESC LIMIT 1")
    assert row is not None
    return {**dict(row), "args": json.loads(row["args"])}


async def test_command_then_confirm_button(driver: Driver) -> None:
    asked = await driver.command(SUPPORT, "create_ticket", "Printer on fire priority=high",
                                 {"title": "Printer on fire", "priority": "high"})
    # (the platforms render the Markdown differently: Telegram as entities, without backticks)
    assert 'create_ticket' in asked.text
    assert 'with title="Printer on fire", priority="high"?' in asked.text
    assert [label for label, _ in asked.buttons] == ["Confirm", "Cancel"]
    row = await last_audit(driver.srv)
    assert (row["via"], row["status"], row["platform"]) == (
        "command", "needs_confirmation", driver.name)
    assert sample_actions.CALLS == []
    before = driver.calls()
    stranger = await driver.press(OTHER, asked.token("Confirm"), "Confirm")
    assert "Only the person who asked" in stranger.text
    # the requester's question and its buttons stay: a stranger cannot void them
    assert not driver.pressed_message_changed(before)
    before = driver.calls()
    done = await driver.press(SUPPORT, asked.token("Confirm"), "Confirm")
    assert "Opened ticket #1: Printer on fire (high)" in done.text
    assert done.buttons == [] and driver.pressed_message_changed(before)
    row = await last_audit(driver.srv)
    assert (row["action"], row["via"], row["status"]) == ("create_ticket", "button", "ok")
    user = sample_actions.CALLS[0][1]
    assert sample_actions.CALLS == [("create_ticket", user, "Printer on fire", "high")]


async def test_llm_tool_call_then_confirm_button(driver: Driver) -> None:
    PLAN.append(("create_ticket", {"title": "Toner empty", "priority": "low"}))
    reply = await driver.ask(SUPPORT, "please open a ticket, the toner is empty")
    assert "NOT RUN YET" in reply.text
    assert [label for label, _ in reply.buttons] == ["Confirm", "Cancel"]
    row = await last_audit(driver.srv)
    assert (row["via"], row["status"]) == ("tool", "needs_confirmation")
    done = await driver.press(SUPPORT, reply.token("Confirm"), "Confirm")
    assert "Opened ticket #1: Toner empty (low)" in done.text
    assert (await last_audit(driver.srv))["status"] == "ok"
    # the model is never offered what the caller may not run, and cannot run it anyway
    PLAN.append(("create_ticket", {"title": "Sneaky one"}))
    denied = await driver.ask(OTHER, "open a ticket as the support lead")
    assert "[denied]" in denied.text
    row = await last_audit(driver.srv)
    assert (row["via"], row["status"], row["user_id"]) == (
        "tool", "denied", DRIVER_USERS[driver.name][OTHER])
    assert len(sample_actions.CALLS) == 1


DRIVER_USERS = {"slack": {k: str(v) for k, v in SlackDriver.users.items()},
                "telegram": {k: str(v) for k, v in TelegramDriver.users.items()},
                "discord": {k: str(v) for k, v in DiscordDriver.users.items()}}


async def test_errors_denials_timeouts_and_exceptions(driver: Driver) -> None:
    bad = await driver.command(SUPPORT, "create_ticket", "ab priority=urgent",
                               {"title": "ab", "priority": "urgent"})
    assert "title:" in bad.text and "Usage:" in bad.text
    assert (await last_audit(driver.srv))["status"] == "invalid_args"
    denied = await driver.command(OTHER, "create_ticket", "Printer on fire",
                                  {"title": "Printer on fire"})
    assert "you may not run create_ticket" in denied.text.replace("`", "")
    row = await last_audit(driver.srv)
    assert (row["status"], row["user_id"]) == ("denied", DRIVER_USERS[driver.name][OTHER])
    slow = await driver.command(OTHER, "slow", "", {})
    row = await last_audit(driver.srv)
    assert row["status"] == "timeout" and row["trace_id"] in slow.text
    boom = await driver.command(OTHER, "boom", "", {})
    row = await last_audit(driver.srv)
    assert row["status"] == "failed" and f"trace id {row['trace_id']}" in boom.text
    assert "ghp_" not in boom.text and "ghp_" not in (row["error"] or "")
    assert sample_actions.CALLS == [("boom", DRIVER_USERS[driver.name][OTHER])]


# Discord's `!name` arrives on the gateway (tests/adapters/discord checks it is stored); the
# Discord fixture here serves interactions only
@pytest.mark.parametrize("driver", ["slack", "telegram"], indirect=True)
async def test_bang_help_lists_what_the_caller_may_run(driver: Driver) -> None:
    support = await driver.bang(SUPPORT, "!help")
    other = await driver.bang(OTHER, "!help")
    assert "create_ticket" in support.text and "!help" in support.text
    assert "create_ticket" not in other.text and "!help" in other.text
    detail = await driver.bang(SUPPORT, "!help create_ticket")
    assert "confirmation" in detail.text and "title" in detail.text
