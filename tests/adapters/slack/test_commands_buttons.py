"""Slack commands, buttons and user groups at the adapter boundary: slash commands and
`block_actions` presses signed and posted over HTTP (or sent through Socket Mode) land on the
inbox as `Message`s with `meta["command"]` / `meta["button"]`; replies with buttons reach the
fake Web API / response_url as Block Kit; `in_group` asks the fake's usergroups.users.list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError

from adapters.payload import Skip
from adapters.slack.adapter import SlackAdapter
from adapters.slack.normalize import (
    SlackIdentity,
    normalize_block_action,
    normalize_command,
    normalize_event,
)
from bot.messages import Button, Conversation, Message, Reply
from tests.adapters.conftest import Harness
from tests.fakes.slack_api import (
    BOT_ID,
    BOT_USER_ID,
    SIGNING_SECRET,
    TEAM_ID,
    FakeSlack,
    signed_headers,
)

PAYLOADS = Path(__file__).parents[2] / "payloads" / "slack"
SECRET = SIGNING_SECRET
ME = SlackIdentity(user_id=BOT_USER_ID, bot_id=BOT_ID)
NAMES = frozenset({"ask", "help", "create_ticket"})
FORM = "application/x-www-form-urlencoded"


def block_actions(response_url: str = "https://hooks.slack.com/actions/T0/1/abc"
                  ) -> dict[str, Any]:
    raw = (PAYLOADS / "block_actions.json").read_text()
    payload: dict[str, Any] = json.loads(raw)
    payload["response_url"] = response_url
    return payload


def command_form(command: str, text: str, trigger: str = "13345224609.738474920.8088930"
                 ) -> dict[str, str]:
    return {"token": "gIkuvaNzQIHg97ATvDxqgjtO", "team_id": TEAM_ID, "team_domain": "example",
            "channel_id": "C2147483705", "channel_name": "test", "user_id": "U2147483697",
            "user_name": "Steve", "command": command, "text": text,
            "response_url": "https://hooks.slack.com/commands/1234/5678",
            "trigger_id": trigger, "api_app_id": "A0APP00001"}


def channel_message(text: str, ts: str = "1515449600.000300") -> dict[str, Any]:
    return {"token": "x", "team_id": TEAM_ID, "api_app_id": "A0APP00001", "type": "event_callback",
            "event_id": "Ev0BANG0001", "event_time": 1515449600,
            "event": {"type": "message", "channel": "C0LAN2Q65", "user": "U061F7AUR",
                      "text": text, "ts": ts, "event_ts": ts, "channel_type": "channel"}}


def signed(body: bytes, content_type: str = FORM, secret: str = SECRET) -> dict[str, str]:
    return signed_headers(body, secret, content_type=content_type)


async def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.post(
            url + "/slack/events", data=body, headers=headers) as response:
        return response.status, await response.text()


def adapter(harness: Harness, slack: FakeSlack, *, max_backlog: int = 0,
            app_token: str | None = None) -> SlackAdapter:
    return SlackAdapter(harness.deps(max_backlog=max_backlog), bot_token="xoxb-test-token",
                        api_url=slack.api_url, signing_secret=SECRET, app_token=app_token)


# normalization ------------------------------------------------------------------------------

def test_slash_commands_carry_their_name_and_known_ones_pass_without_text() -> None:
    help_ = normalize_command(command_form("/help", ""), NAMES)
    assert isinstance(help_, Message)
    assert (help_.text, help_.meta["command"]) == ("", "help")
    assert help_.meta["response_url"] == "https://hooks.slack.com/commands/1234/5678"
    assert help_.id == f"slack:{TEAM_ID}:command:13345224609.738474920.8088930"
    ticket = normalize_command(command_form("/create_ticket", "  Printer on fire  "), NAMES)
    assert isinstance(ticket, Message)
    assert (ticket.text, ticket.meta["command"]) == ("Printer on fire", "create_ticket")
    # an unknown command still needs a question; with one, it is passed on by its name
    assert normalize_command(command_form("/weather", ""), NAMES) == Skip(
        "command without text")
    weather = normalize_command(command_form("/weather", "94070"), NAMES)
    assert isinstance(weather, Message) and weather.meta["command"] == "weather"


def test_a_press_of_a_bot_button_becomes_a_message() -> None:
    message = normalize_block_action(block_actions())
    assert isinstance(message, Message)
    assert message == Message(
        id=f"slack:{TEAM_ID}:button:12321423423.333649436676.d8c1bb837935619ccad0f624c448ffb3",
        conversation=Conversation(platform="slack", channel="C0LAN2Q65", workspace=TEAM_ID,
                                  thread="1515449522.000016"),
        user="U061F7AUR", text="(pressed Confirm)", received_at=message.received_at,
        meta={"button": "confirm-7f3a",
              "response_url": "https://hooks.slack.com/actions/T0/1/abc",
              "replace_original": "1"})


def test_other_interactions_are_not_messages() -> None:
    foreign = block_actions()
    foreign["actions"][0]["action_id"] = "feedback_up"
    assert normalize_block_action(foreign) == Skip("no press of a bot button")
    bare = block_actions()
    bare["actions"][0]["action_id"] = "sb:"
    assert normalize_block_action(bare) == Skip("no press of a bot button")
    assert normalize_block_action({"type": "view_submission"}) == Skip(
        "interaction type view_submission")
    # no label on the action: still a press; no response_url: answered in the thread
    unlabelled = block_actions(response_url="")
    del unlabelled["actions"][0]["text"]
    message = normalize_block_action(unlabelled)
    assert isinstance(message, Message) and message.text == "(pressed a button)"
    assert message.meta == {"button": "confirm-7f3a"}


def test_bang_commands_address_the_bot_in_channels() -> None:
    bang = normalize_event(channel_message("!create_ticket Printer on fire"), ME,
                           commands=NAMES)
    assert isinstance(bang, Message)
    assert bang.text == "!create_ticket Printer on fire" and "command" not in bang.meta
    assert bang.conversation.thread == "1515449600.000300"  # answered in a new thread
    outside = Skip("channel message outside the bot's threads")
    assert normalize_event(channel_message("!lunch anyone?"), ME, commands=NAMES) == outside
    assert normalize_event(channel_message("!create_ticket x"), ME) == outside
    assert normalize_event(channel_message("hey !help"), ME, commands=NAMES) == outside


# HTTP and Socket Mode ingress ---------------------------------------------------------------

async def test_a_signed_press_is_stored_and_acknowledged(harness: Harness,
                                                         slack: FakeSlack) -> None:
    url = await harness.serve(adapter(harness, slack).routes())
    body = ("payload=" + quote(json.dumps(block_actions()))).encode()
    assert await post(url, body, signed(body)) == (200, "")
    assert await post(url, body, signed(body)) == (200, "")  # a redelivery: stored once
    assert (await post(url, body, signed(body, secret="not-the-secret")))[0] == 401
    [message] = await harness.stored()
    assert message.meta["button"] == "confirm-7f3a" and message.user == "U061F7AUR"
    assert message.text == "(pressed Confirm)"


async def test_a_press_that_cannot_be_stored_is_acked_and_the_user_told(
        harness: Harness, slack: FakeSlack) -> None:
    full = adapter(harness, slack, max_backlog=1)
    await harness.deps().inbox.enqueue(Message("x:1", Conversation("slack", "C1"), "U1", "hi"))
    url = await harness.serve(full.routes())
    # Slack never delivers an interaction again: a 503 would lose the press silently
    body = ("payload=" + quote(json.dumps(block_actions(
        f"http://127.0.0.1:{slack.port}/response/full")))).encode()
    assert await post(url, body, signed(body)) == (200, "")
    assert slack.responses() == [{"id": "full", "response_type": "ephemeral",
                                  "replace_original": False,
                                  "text": "Sorry, I could not take that. Please press again."}]
    foreign = block_actions()
    foreign["actions"][0]["action_id"] = "feedback_up"  # nothing to store: acknowledged
    body = ("payload=" + quote(json.dumps(foreign))).encode()
    assert await post(url, body, signed(body)) == (200, "")
    assert len(slack.responses()) == 1


async def test_known_commands_without_text_are_stored(harness: Harness, slack: FakeSlack
                                                      ) -> None:
    url = await harness.serve(adapter(harness, slack).routes())
    body = urlencode(command_form("/help", "")).encode()
    status, text = await post(url, body, signed(body))
    assert (status, json.loads(text)) == (200, {"response_type": "in_channel"})
    body = urlencode(command_form("/weather", "", trigger="2.2.2")).encode()
    status, text = await post(url, body, signed(body))
    assert status == 200 and json.loads(text)["response_type"] == "ephemeral"
    [message] = await harness.stored()
    assert (message.meta["command"], message.text) == ("help", "")


async def test_socket_mode_presses_are_stored_then_acknowledged(harness: Harness,
                                                                slack: FakeSlack) -> None:
    socket = adapter(harness, slack, app_token="xapp-test-token")
    await socket.start()
    try:
        await slack.envelopes.put({"envelope_id": "env-press", "type": "interactive",
                                   "accepts_response_payload": False,
                                   "payload": block_actions()})
        await slack.wait_for(lambda: any(a.get("envelope_id") == "env-press"
                                         for a in slack.acks))
    finally:
        await socket.stop()
    [message] = await harness.stored()
    assert message.meta["button"] == "confirm-7f3a"


async def test_bang_command_events_are_stored(harness: Harness, slack: FakeSlack) -> None:
    url = await harness.serve(adapter(harness, slack).routes())
    for text in ("!help", "lunch anyone?"):
        body = json.dumps(channel_message(text, ts=f"1515449600.{len(text):06d}")).encode()
        assert await post(url, body, signed(body, "application/json")) == (200, "")
    [message] = await harness.stored()
    assert message.text == "!help"


# buttons out ----------------------------------------------------------------------------------

BUTTONS = (Button("Confirm", "confirm-7f3a", "primary"), Button("Cancel", "cancel-7f3a"),
           Button("Delete " + "x" * 90, "delete-7f3a", "danger"))


async def test_buttons_go_under_the_last_piece_as_block_kit(harness: Harness,
                                                            slack: FakeSlack) -> None:
    sender = adapter(harness, slack).sender
    # ~3,600 characters: one plain message, but two when the last must fit in a section
    text = "\n\n".join(f"Paragraph {i}: " + "word " * 140 for i in range(5))
    await sender.send(Reply(message_id="m-buttons", text=text, buttons=BUTTONS,
                            conversation=Conversation("slack", "C1", TEAM_ID, thread="1.2")))
    posts = slack.posts()
    assert len(posts) == 2 and "blocks" not in posts[0]
    last = posts[-1]
    section, actions = last["blocks"]
    assert section == {"type": "section", "text": {"type": "mrkdwn", "text": last["text"]}}
    assert len(last["text"]) <= 3000  # a section's limit, not the 3,900 of plain messages
    assert actions["type"] == "actions"
    assert [(e["action_id"], e["value"], e.get("style")) for e in actions["elements"]] == [
        ("sb:confirm-7f3a", "confirm-7f3a", "primary"), ("sb:cancel-7f3a", "cancel-7f3a", None),
        ("sb:delete-7f3a", "delete-7f3a", "danger")]
    labels = [e["text"] for e in actions["elements"]]
    assert labels[0] == {"type": "plain_text", "text": "Confirm"}
    assert len(labels[2]["text"]) == 75
    assert "".join(p["text"] for p in posts).count("word") == 5 * 140


async def test_response_url_answers_replace_the_pressed_message(harness: Harness,
                                                                slack: FakeSlack) -> None:
    sender = adapter(harness, slack).sender
    url = f"http://127.0.0.1:{slack.port}/response/press1"
    text = "\n\n".join(f"Part {i}: " + "word " * 150 for i in range(5))
    await sender.send(Reply(message_id="m-press", text=text, buttons=BUTTONS[:1],
                            conversation=Conversation("slack", "C1", TEAM_ID),
                            meta={"response_url": url, "replace_original": "1"}))
    first, *rest = slack.responses()
    assert rest and first["replace_original"] is True and "blocks" not in first
    assert all("replace_original" not in r for r in rest)  # later pieces are new messages
    assert rest[-1]["blocks"][1]["elements"][0]["action_id"] == "sb:confirm-7f3a"
    assert {r["response_type"] for r in slack.responses()} == {"in_channel"}
    await sender.send(Reply(message_id="m-eph", text="Only you can see this.",
                            conversation=Conversation("slack", "C1", TEAM_ID),
                            meta={"response_url": url}, ephemeral=True))
    assert slack.responses()[-1] == {"id": "press1", "response_type": "ephemeral",
                                     "text": "Only you can see this."}
    # a stranger pressed someone's Confirm: the pressed message and its buttons stay
    await sender.send(Reply(message_id="m-stranger", text="Only the person who asked ...",
                            conversation=Conversation("slack", "C1", TEAM_ID),
                            meta={"response_url": url, "replace_original": "1"},
                            ephemeral=True))
    assert slack.responses()[-1] == {"id": "press1", "response_type": "ephemeral",
                                     "text": "Only the person who asked ...",
                                     "replace_original": False}
    assert slack.posts() == []


async def test_a_finished_draft_gets_the_buttons(harness: Harness, slack: FakeSlack) -> None:
    sender = adapter(harness, slack).sender
    await sender.send(Reply(message_id="m-draft", text="Create it?", buttons=BUTTONS[:2],
                            conversation=Conversation("slack", "C1", TEAM_ID, thread="1.2"),
                            draft="1700000001.000100"))
    [update] = [body for method, body in slack.calls if method == "chat.update"]
    assert update["ts"] == "1700000001.000100"
    assert [e["action_id"] for e in update["blocks"][1]["elements"]] == [
        "sb:confirm-7f3a", "sb:cancel-7f3a"]
    assert slack.posts() == []


# groups -----------------------------------------------------------------------------------------

async def test_user_groups_are_asked_and_cached(harness: Harness, slack: FakeSlack) -> None:
    slack.usergroups = {"S0SUPPORT": ["U061F7AUR", "U0ADA"]}
    sender = adapter(harness, slack).sender
    ada = Message("m", Conversation("slack", "C1", TEAM_ID), "U061F7AUR", "hi")
    bob = Message("n", Conversation("slack", "C1", TEAM_ID), "U0BOB", "hi")
    assert await sender.in_group(ada, "S0SUPPORT") is True
    assert await sender.in_group(bob, "S0SUPPORT") is False
    asked = [b for m, b in slack.calls if m == "usergroups.users.list"]
    assert len(asked) == 1 and asked[0]["usergroup"] == "S0SUPPORT"
    assert asked[0]["_auth"] == "Bearer xoxb-test-token"
    with pytest.raises(SlackApiError):
        await sender.in_group(ada, "S0UNKNOWN")
