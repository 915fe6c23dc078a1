"""Discord commands, buttons and roles at the adapter boundary: signed interactions posted over
HTTP and gateway messages land on the inbox with `meta["command"]`/`"args"`/`"button"`/
`"roles"`; the bot's commands are registered with a bulk overwrite on the fake REST API;
replies with buttons carry components; `in_group` reads the roles."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from nacl.signing import SigningKey

from adapters.discord.adapter import DiscordAdapter
from adapters.discord.commands import command_json, commands_json
from adapters.discord.normalize import (
    normalize_component,
    normalize_interaction,
    normalize_message_create,
)
from adapters.payload import Skip
from bot.messages import Button, ButtonStyle, Conversation, Message, Reply
from bot.protocols import CommandOption, CommandSpec
from tests.adapters.conftest import COMMANDS, Harness
from tests.fakes.discord_api import (
    APP_ID,
    BOT_ID,
    CHANNEL_ID,
    GUILD_ID,
    ROLE_ID,
    FakeDiscord,
    interaction_create,
    message_create,
)

PAYLOADS = Path(__file__).parents[2] / "payloads" / "discord"
SIGNING_KEY = SigningKey.generate()
PUBLIC_KEY = SIGNING_KEY.verify_key.encode().hex()
NAMES = frozenset({"ask", "help", "create_ticket"})
ORIGINAL = f"/webhooks/{APP_ID}/A_PRESS_TOKEN/messages/@original"


def interaction(name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text())
    return payload


def command(name: str, options: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The documented slash-command interaction, invoking `name` with `options`."""
    payload = interaction("slash_command")
    payload["data"] = {"id": "771825006014889984", "type": 1, "name": name,
                       "options": options or []}
    return payload


def signed(body: bytes) -> dict[str, str]:
    ts = str(int(time.time()))
    return {"X-Signature-Ed25519": SIGNING_KEY.sign(ts.encode() + body).signature.hex(),
            "X-Signature-Timestamp": ts, "Content-Type": "application/json"}


async def post(url: str, payload: dict[str, Any]) -> tuple[int, Any]:
    body = json.dumps(payload).encode()
    async with aiohttp.ClientSession() as session, session.post(
            url + "/discord/interactions", data=body, headers=signed(body)) as response:
        return response.status, await response.json(content_type=None)


def adapter(harness: Harness, discord_api: FakeDiscord, *, bot_token: str | None = None,
            max_backlog: int = 0, commands: tuple[CommandSpec, ...] = COMMANDS
            ) -> DiscordAdapter:
    return DiscordAdapter(harness.deps(commands, max_backlog=max_backlog), bot_token=bot_token,
                          public_key=PUBLIC_KEY, api_url=discord_api.api_url,
                          gateway_url=discord_api.gateway_url)


# normalization ------------------------------------------------------------------------------

def test_commands_carry_their_name_and_typed_options() -> None:
    ticket = normalize_interaction(command("create_ticket", [
        {"type": 3, "name": "title", "value": "Printer on fire"},
        {"type": 4, "name": "copies", "value": 2},
        {"type": 5, "name": "urgent", "value": True}]), NAMES)
    assert isinstance(ticket, Message)
    assert ticket.text == "Printer on fire"
    assert ticket.meta["command"] == "create_ticket"
    assert json.loads(ticket.meta["args"]) == {"title": "Printer on fire", "copies": 2,
                                               "urgent": True}
    assert ticket.meta["roles"] == "539082325061836999"
    assert (ticket.meta["mode"], ticket.meta["token"]) == ("interaction", "A_UNIQUE_TOKEN")
    # sub-command options are flattened; a known command without string options is kept
    nested = normalize_interaction(command("help", [
        {"type": 1, "name": "topic", "options": [{"type": 4, "name": "page", "value": 3}]}]),
        NAMES)
    assert isinstance(nested, Message)
    assert (nested.text, json.loads(nested.meta["args"])) == ("/help page=3", {"page": 3})
    bare = normalize_interaction(command("help"), NAMES)
    assert isinstance(bare, Message) and (bare.text, bare.meta["args"]) == ("/help", "{}")
    assert normalize_interaction(command("unknown"), NAMES) == Skip(
        "command without a question")
    dm = command("help")
    dm["user"] = dm.pop("member")["user"]
    del dm["guild_id"]
    direct = normalize_interaction(dm, NAMES)
    assert isinstance(direct, Message) and "roles" not in direct.meta
    assert direct.user == "53908232506183680" and direct.conversation.workspace is None


def test_a_press_of_a_bot_button_becomes_a_message() -> None:
    message = normalize_component(interaction("button_press"))
    assert isinstance(message, Message)
    assert message == Message(
        id="discord:interaction:846462639134605312",
        conversation=Conversation(platform="discord", channel="645027906669510667",
                                  workspace="290926798626357999"),
        user="53908232506183680", text="(pressed Confirm)", received_at=message.received_at,
        meta={"mode": "interaction", "application_id": APP_ID, "token": "A_PRESS_TOKEN",
              "roles": f"539082325061836999,{ROLE_ID}", "button": "confirm-7f3a"})
    foreign = interaction("button_press")
    foreign["data"]["custom_id"] = "feedback_up"
    assert normalize_component(foreign) == Skip("not a press of a bot button")


def test_bang_commands_and_roles_of_gateway_messages() -> None:
    bang = normalize_message_create(message_create("!help", roles=(ROLE_ID,)), BOT_ID,
                                    commands=NAMES)
    assert isinstance(bang, Message)
    assert bang.text == "!help" and bang.meta["roles"] == ROLE_ID
    assert "command" not in bang.meta
    unaddressed = Skip("guild message without a mention")
    assert normalize_message_create(message_create("!lunch"), BOT_ID,
                                    commands=NAMES) == unaddressed
    assert normalize_message_create(message_create("!help"), BOT_ID) == unaddressed


# registration ---------------------------------------------------------------------------------

def test_command_specs_become_chat_input_commands() -> None:
    spec = CommandSpec("create_ticket", "Open a support ticket " + "x" * 100, (
        CommandOption("priority", "How urgent", "string", False, ("low", "normal", "high")),
        CommandOption("title", "", "string", True),
        CommandOption("copies", "How many", "integer", False, tuple(range(30))),
        CommandOption("ratio", "Share", "number", True),
        CommandOption("urgent", "Now?", "boolean", False)))
    body = command_json(spec)
    assert body is not None
    assert (body["type"], body["name"], len(body["description"])) == (1, "create_ticket", 100)
    options = body["options"]
    assert [(o["name"], o["type"], o["required"]) for o in options] == [
        ("title", 3, True), ("ratio", 10, True), ("priority", 3, False),
        ("copies", 4, False), ("urgent", 5, False)]  # required first, order kept otherwise
    assert options[0]["description"] == "title" and "choices" not in options[0]
    assert options[2]["choices"] == [{"name": "low", "value": "low"},
                                     {"name": "normal", "value": "normal"},
                                     {"name": "high", "value": "high"}]
    assert len(options[3]["choices"]) == 25
    assert options[3]["choices"][7] == {"name": "7", "value": 7}
    assert [c["name"] for c in commands_json((spec, CommandSpec("Bad Name", "x"),
                                              CommandSpec("help", "List")))] == [
        "create_ticket", "help"]


def test_commands_discord_would_refuse_are_left_out_not_the_others() -> None:
    """One refused command fails Discord's whole bulk overwrite: each is checked alone."""
    text = CommandOption("text", "", "string", True)
    refused = (
        CommandSpec("twice", "", (text, text)),
        CommandSpec("crowded", "", tuple(CommandOption(f"o{i}", "", "string", False)
                                         for i in range(26))),
        CommandSpec("mixed", "", (CommandOption("n", "", "integer", True, (1, "two")),)),
        CommandSpec("blank", "", (CommandOption("s", "", "string", True, ("", "a")),)),
        CommandSpec("wordy", "", (CommandOption("s", "", "string", True, ("w" * 101,)),)),
        CommandSpec("huge", "x" * 90, tuple(
            CommandOption(f"o{i}", "d" * 100, "string", False, tuple(
                f"{i}-{j}-" + "c" * 40 for j in range(25))) for i in range(4))),
    )
    assert [command_json(spec) for spec in refused] == [None] * 6
    fine = CommandSpec("fine", "", (CommandOption("n", "", "number", True, (1, 2.5)),))
    assert [c["name"] for c in commands_json((*refused, fine))] == ["fine"]


async def test_commands_are_registered_at_start(harness: Harness,
                                                discord_api: FakeDiscord) -> None:
    bot = adapter(harness, discord_api, bot_token="discord-bot-token-123")
    discord_api.app_gate = asyncio.Event()  # Discord does not answer until released
    await asyncio.wait_for(bot.start(), 10)  # start-up never waits on the registration
    try:
        assert not discord_api.bodies("PUT", f"/applications/{APP_ID}/commands")
        discord_api.app_gate.set()
        path = f"/applications/{APP_ID}/commands"
        await discord_api.wait_for(lambda: discord_api.bodies("PUT", path))
    finally:
        await bot.stop()
    [body] = discord_api.bodies("PUT", f"/applications/{APP_ID}/commands")
    [headers] = [c[3] for c in discord_api.calls if c[0] == "PUT"]
    assert headers["authorization"] == "Bot discord-bot-token-123"
    assert [(c["name"], c["type"]) for c in body] == [("ask", 1), ("help", 1),
                                                      ("create_ticket", 1)]
    assert body[0]["options"] == [{"type": 3, "name": "question",
                                   "description": "What to ask", "required": True}]
    assert body[1]["options"] == []
    assert body[2]["options"][1]["choices"][2] == {"name": "high", "value": "high"}


async def test_a_refused_registration_is_not_fatal(harness: Harness,
                                                   discord_api: FakeDiscord) -> None:
    discord_api.commands_status = 400
    bot = adapter(harness, discord_api, bot_token="discord-bot-token-123")
    await bot.start()
    try:
        await discord_api.wait_for(lambda: any(c[0] == "PUT" for c in discord_api.calls))
        await discord_api.wait_for(lambda: discord_api.identify is not None)  # gateway runs
        assert bot._registering is not None
        await asyncio.wait_for(bot._registering, 5)  # ended without raising
    finally:
        await bot.stop()


async def test_nothing_is_registered_without_commands(harness: Harness,
                                                      discord_api: FakeDiscord) -> None:
    bot = adapter(harness, discord_api, bot_token="discord-bot-token-123", commands=())
    await bot.start()
    await discord_api.wait_for(lambda: discord_api.identify is not None)
    await bot.stop()
    assert not any(c[0] == "PUT" for c in discord_api.calls)


async def test_gateway_messages_carry_the_authors_roles(harness: Harness,
                                                        discord_api: FakeDiscord) -> None:
    bot = adapter(harness, discord_api, bot_token="discord-bot-token-123")
    await bot.start()
    try:
        await discord_api.wait_for(lambda: discord_api.identify is not None)
        await asyncio.sleep(0.5)  # READY and GUILD_CREATE processed
        await discord_api.events.put(message_create("!help", roles=(ROLE_ID,),
                                                    message_id="21"))
        await discord_api.events.put(message_create("chatter", message_id="22"))
        await discord_api.events.put(message_create(f"<@{BOT_ID}> hi", mention_bot=True,
                                                    message_id="23"))
        stored: list[Message] = []
        for _ in range(50):
            stored += await harness.stored()
            if len(stored) >= 2:
                break
            await asyncio.sleep(0.1)
    finally:
        await bot.stop()
    # discord.py dispatches each event in its own task: the order of storing is not fixed
    assert sorted((m.id, m.text, m.meta.get("roles")) for m in stored) == [
        ("discord:message:21", "!help", ROLE_ID), ("discord:message:23", "hi", "")]


# interactions ---------------------------------------------------------------------------------

async def test_a_signed_press_is_stored_and_deferred(harness: Harness,
                                                     discord_api: FakeDiscord) -> None:
    url = await harness.serve(adapter(harness, discord_api).routes())
    assert await post(url, interaction("button_press")) == (200, {"type": 6})
    foreign = interaction("button_press")
    foreign["id"], foreign["data"]["custom_id"] = "846462639134605313", "feedback_up"
    assert await post(url, foreign) == (200, {"type": 6})
    assert await post(url, command("help")) == (200, {"type": 5})
    pressed, helped = await harness.stored()
    assert pressed.meta["button"] == "confirm-7f3a" and pressed.text == "(pressed Confirm)"
    assert helped.meta["command"] == "help" and helped.text == "/help"


async def test_a_press_that_cannot_be_stored_gets_an_apology(harness: Harness,
                                                             discord_api: FakeDiscord) -> None:
    full = adapter(harness, discord_api, max_backlog=1)
    await harness.deps().inbox.enqueue(Message("x:1", Conversation("discord", "C"), "U", "hi"))
    url = await harness.serve(full.routes())
    status, answer = await post(url, interaction("button_press"))
    assert status == 200 and answer["type"] == 4 and answer["data"]["flags"] == 64
    assert "Sorry" in answer["data"]["content"]


# buttons out ----------------------------------------------------------------------------------

STYLES: list[ButtonStyle] = ["primary", "danger", "", "primary", "", "", "danger"]
BUTTONS = tuple(Button(f"Option {i}", f"opt-{i}", style) for i, style in enumerate(STYLES))


async def test_buttons_are_components_under_the_last_piece(harness: Harness,
                                                           discord_api: FakeDiscord) -> None:
    sender = adapter(harness, discord_api).sender
    text = "\n\n".join(f"Part {i}. " + "lorem ipsum " * 100 for i in range(3))  # > 2,000
    await sender.send(Reply(message_id="m-gw", text=text, buttons=BUTTONS,
                            conversation=Conversation("discord", CHANNEL_ID, GUILD_ID,
                                                      reply_to="99"),
                            meta={"mode": "gateway"}))
    *first, (_, last) = discord_api.messages()
    assert first and all("components" not in body for _, body in first)
    rows = last["components"]
    assert [len(r["components"]) for r in rows] == [5, 2] and {r["type"] for r in rows} == {1}
    buttons = [b for r in rows for b in r["components"]]
    assert [(b["type"], b["style"], b["custom_id"]) for b in buttons] == [
        (2, 1, "sb:opt-0"), (2, 4, "sb:opt-1"), (2, 2, "sb:opt-2"), (2, 1, "sb:opt-3"),
        (2, 2, "sb:opt-4"), (2, 2, "sb:opt-5"), (2, 4, "sb:opt-6")]
    assert buttons[0]["label"] == "Option 0"


async def test_the_pressed_message_is_replaced_without_its_buttons(
        harness: Harness, discord_api: FakeDiscord) -> None:
    sender = adapter(harness, discord_api).sender
    meta = {"mode": "interaction", "application_id": APP_ID, "token": "A_PRESS_TOKEN",
            "button": "confirm-7f3a"}
    conversation = Conversation("discord", CHANNEL_ID, GUILD_ID)
    await sender.send(Reply(message_id="m-done", text="Ticket #42 created.",
                            conversation=conversation, meta=meta))
    await sender.send(Reply(message_id="m-next", text="Sure?", buttons=BUTTONS[:2],
                            conversation=conversation, meta=meta))
    done, sure = discord_api.bodies("PATCH", ORIGINAL)
    assert done["content"] == "Ticket #42 created." and done["components"] == []
    assert [b["label"] for b in sure["components"][0]["components"]] == ["Option 0",
                                                                         "Option 1"]
    long = Reply(message_id="m-long", conversation=conversation, meta=meta, buttons=BUTTONS[:1],
                 text="\n\n".join("lorem ipsum " * 150 for _ in range(2)))
    await sender.send(long)
    assert discord_api.bodies("PATCH", ORIGINAL)[-1]["components"] == []
    [follow_up] = discord_api.bodies("POST", f"/webhooks/{APP_ID}/A_PRESS_TOKEN")
    assert follow_up["components"][0]["components"][0]["custom_id"] == "sb:opt-0"


async def test_answers_for_the_caller_alone_are_ephemeral_follow_ups(
        harness: Harness, discord_api: FakeDiscord) -> None:
    sender = adapter(harness, discord_api).sender
    conversation = Conversation("discord", CHANNEL_ID, GUILD_ID)
    webhook = f"/webhooks/{APP_ID}/A_PRESS_TOKEN"
    press = {"mode": "interaction", "application_id": APP_ID, "token": "A_PRESS_TOKEN",
             "button": "confirm-7f3a"}
    # a stranger pressed someone's Confirm: the pressed message and its buttons stay
    await sender.send(Reply(message_id="m-stranger", conversation=conversation, meta=press,
                            text="Only the person who asked can confirm or cancel this.",
                            ephemeral=True))
    assert [(m, p) for m, p, _, _ in discord_api.calls] == [("POST", webhook)]
    assert discord_api.bodies("POST", webhook)[0]["flags"] == 64
    # a denied command: its public "thinking..." goes, the denial is for the caller only
    command_meta = {k: v for k, v in press.items() if k != "button"}
    await sender.send(Reply(message_id="m-denied", conversation=conversation,
                            meta=command_meta, text="Sorry, you may not run `deploy`.",
                            ephemeral=True))
    assert [(m, p) for m, p, _, _ in discord_api.calls][1:] == [
        ("DELETE", ORIGINAL), ("POST", webhook)]
    assert discord_api.bodies("POST", webhook)[1]["flags"] == 64


async def test_an_answer_faster_than_the_interaction_response_waits_for_it(
        harness: Harness, discord_api: FakeDiscord) -> None:
    sender = adapter(harness, discord_api).sender
    discord_api.webhook_unknown = 2  # Discord does not know the interaction yet
    meta = {"mode": "interaction", "application_id": APP_ID, "token": "A_PRESS_TOKEN"}
    conversation = Conversation("discord", CHANNEL_ID, GUILD_ID)
    await sender.send(Reply(message_id="m-fast", text="Done.", meta=meta,
                            conversation=conversation))
    assert [m for m, p, _, _ in discord_api.calls] == ["404", "404", "PATCH"]
    assert discord_api.bodies("PATCH", ORIGINAL)[0]["content"] == "Done."
    # the same for an ephemeral answer to a press, which is a follow-up
    discord_api.webhook_unknown = 2
    await sender.send(Reply(message_id="m-fast-press", text="Only the person who asked ...",
                            conversation=conversation,
                            meta={**meta, "button": "confirm-7f3a"}, ephemeral=True))
    assert [m for m, p, _, _ in discord_api.calls][3:] == ["404", "404", "POST"]


async def test_gateway_interactions_are_stored_and_answered_over_rest(
        harness: Harness, discord_api: FakeDiscord) -> None:
    bot = DiscordAdapter(harness.deps(COMMANDS), bot_token="discord-bot-token-123",
                         public_key=None, api_url=discord_api.api_url,
                         gateway_url=discord_api.gateway_url)
    assert bot.routes() == []  # no Interactions Endpoint URL: Discord uses the gateway
    held = {"type": 1, "components": [{"type": 2, "style": 1, "label": "Confirm",
                                       "custom_id": "sb:confirm-7f3a"}]}
    await bot.start()
    try:
        await discord_api.wait_for(lambda: discord_api.identify is not None)
        await discord_api.events.put(interaction_create(
            2, {"id": "1", "name": "create_ticket", "type": 1,
                "options": [{"name": "title", "type": 3, "value": "Printer on fire"}]},
            interaction_id="1700000000000000001", roles=(ROLE_ID,)))
        await discord_api.events.put(interaction_create(
            3, {"custom_id": "sb:confirm-7f3a", "component_type": 2},
            interaction_id="1700000000000000002",
            message={"id": "1400000000000000777", "channel_id": CHANNEL_ID, "type": 0,
                     "content": "Create it?", "author": {"id": BOT_ID, "username": "sb",
                                                         "discriminator": "0",
                                                         "avatar": None, "bot": True},
                     "attachments": [], "embeds": [], "mentions": [], "mention_roles": [],
                     "pinned": False, "mention_everyone": False, "tts": False,
                     "timestamp": "2026-11-21T12:00:00+00:00", "edited_timestamp": None,
                     "flags": 0, "components": [held]}))
        await discord_api.wait_for(lambda: sum(
            p.endswith("/callback") for _, p, _, _ in discord_api.calls) == 2)
    finally:
        await bot.stop()
    callbacks = {p.split("/")[2]: body for m, p, body, _ in discord_api.calls
                 if p.endswith("/callback")}
    assert callbacks == {"1700000000000000001": {"type": 5}, "1700000000000000002": {"type": 6}}
    command_message, press = sorted(await harness.stored(), key=lambda m: m.id)
    assert command_message.id == "discord:interaction:1700000000000000001"
    assert command_message.meta["command"] == "create_ticket"
    assert json.loads(command_message.meta["args"]) == {"title": "Printer on fire"}
    assert command_message.meta["roles"] == ROLE_ID
    assert command_message.meta["token"] == "gateway-interaction-token-1700000000000000001"
    assert (press.meta["button"], press.text) == ("confirm-7f3a", "(pressed Confirm)")


async def test_roles_decide_group_membership(harness: Harness,
                                             discord_api: FakeDiscord) -> None:
    sender = adapter(harness, discord_api).sender
    message = normalize_component(copy.deepcopy(interaction("button_press")))
    assert isinstance(message, Message)
    assert await sender.in_group(message, ROLE_ID) is True
    assert await sender.in_group(message, "539082325061836999") is True
    assert await sender.in_group(message, "1600000000000000009") is False
    assert await sender.in_group(message, "") is False
    dm = Message("m", Conversation("discord", "D1"), "42", "hi", meta={"mode": "gateway"})
    assert await sender.in_group(dm, ROLE_ID) is False
    assert discord_api.calls == []  # roles come with the message: Discord is not asked
