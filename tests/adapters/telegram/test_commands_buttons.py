"""Telegram commands, buttons and admins at the adapter boundary: updates posted to the webhook
(or served by getUpdates) land on the inbox with `meta["command"]` / `meta["button"]`; the
command menu is registered with setMyCommands; replies with buttons reach the fake Bot API as
an inline keyboard; `in_group("admins")` asks getChatMember."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from adapters.payload import Skip
from adapters.telegram.adapter import TelegramAdapter
from adapters.telegram.normalize import (
    TelegramIdentity,
    normalize_callback,
    normalize_update,
)
from adapters.telegram.send import keyboard
from bot.messages import Button, Conversation, Message, Reply
from bot.protocols import CommandSpec
from tests.adapters.conftest import COMMANDS, Harness
from tests.fakes.telegram_api import BOT_ID, BOT_USERNAME, TOKEN, FakeTelegram

SECRET = "tg-webhook-secret_0123"
ME = TelegramIdentity(id=BOT_ID, username=BOT_USERNAME)
NAMES = frozenset({"ask", "help", "create_ticket"})
GROUP = {"id": -1001234567890, "title": "Engineering", "type": "supergroup", "is_forum": True}
PRIVATE = {"id": 1111111, "first_name": "Ada", "type": "private"}


def text_update(text: str, chat: dict[str, Any] = GROUP, update_id: int = 848200100
                ) -> dict[str, Any]:
    entities = ([{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
                if text.startswith("/") else [])
    return {"update_id": update_id, "message": {
        "message_id": 90, "date": 1731999999, "chat": chat, "text": text, "entities": entities,
        "from": {"id": 2222222, "is_bot": False, "first_name": "Grace"}}}


def press(data: str = "sb:confirm-7f3a", update_id: int = 848200200) -> dict[str, Any]:
    """A callback_query on the bot's confirmation message in a forum topic (Bot API
    CallbackQuery: id, from, message, chat_instance, data)."""
    return {"update_id": update_id, "callback_query": {
        "id": "4382bfdwdsb323b2d9", "chat_instance": "-7890", "data": data,
        "from": {"id": 2222222, "is_bot": False, "first_name": "Grace"},
        "message": {
            "message_id": 5001, "date": 1732000000, "chat": GROUP,
            "message_thread_id": 7, "is_topic_message": True,
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "Switchboard",
                     "username": BOT_USERNAME},
            "text": "Create ticket Printer on fire?",
            "reply_markup": {"inline_keyboard": [[
                {"text": "Confirm", "callback_data": "sb:confirm-7f3a"},
                {"text": "Cancel", "callback_data": "sb:cancel-7f3a"}]]}}}}


def adapter(harness: Harness, telegram: FakeTelegram, *, webhook: bool = True,
            commands: tuple[CommandSpec, ...] = COMMANDS) -> TelegramAdapter:
    return TelegramAdapter(harness.deps(commands), token=TOKEN, api_url=telegram.api_url,
                           webhook_secret=SECRET if webhook else None, poll_timeout_s=1)


async def post(url: str, update: dict[str, Any]) -> int:
    async with aiohttp.ClientSession() as session, session.post(
            url + "/telegram/webhook", data=json.dumps(update).encode(),
            headers={"Content-Type": "application/json",
                     "X-Telegram-Bot-Api-Secret-Token": SECRET}) as response:
        return response.status


# normalization ------------------------------------------------------------------------------

def test_known_commands_carry_their_name() -> None:
    cases = {
        "/help": ("help", ""),
        "/Help@switchboard_test_bot": ("help", ""),
        "/create_ticket@switchboard_test_bot Printer on fire": ("create_ticket",
                                                                "Printer on fire"),
        "/start": ("start", ""),  # not in the menu, still passed (the engine shows help)
    }
    for text, (command, rest) in cases.items():
        message = normalize_update(text_update(text), ME, NAMES)
        assert isinstance(message, Message), text
        assert (message.meta.get("command"), message.text) == (command, rest), text
        assert message.id == f"telegram:{BOT_ID}:848200100"
        assert message.conversation.channel == "-1001234567890"
    unknown = normalize_update(text_update("/weather 94070", PRIVATE), ME, NAMES)
    assert isinstance(unknown, Message)
    assert unknown.text == "94070" and "command" not in unknown.meta
    assert normalize_update(text_update("/weather"), ME, NAMES) == Skip(
        "command without a question")
    assert normalize_update(text_update("/help@other_ops_bot"), ME, NAMES) == Skip(
        "command for another bot")


def test_bang_commands_address_the_bot_in_groups() -> None:
    bang = normalize_update(text_update("!create_ticket Printer on fire"), ME, NAMES)
    assert isinstance(bang, Message)
    assert bang.text == "!create_ticket Printer on fire" and "command" not in bang.meta
    chatter = Skip("group message not addressed to the bot")
    assert normalize_update(text_update("!lunch anyone?"), ME, NAMES) == chatter
    assert normalize_update(text_update("!help"), ME) == chatter


def test_a_press_of_a_bot_button_becomes_a_message() -> None:
    message = normalize_callback(press(), ME)
    assert isinstance(message, Message)
    assert message == Message(
        id=f"telegram:{BOT_ID}:848200200",
        conversation=Conversation(platform="telegram", channel="-1001234567890", thread="7",
                                  reply_to="5001"),
        user="2222222", text="(pressed Confirm)", received_at=message.received_at,
        meta={"button": "confirm-7f3a", "chat_type": "supergroup", "button_message": "5001"})
    assert normalize_callback(press("feedback:up"), ME) == Skip("not a press of a bot button")
    inline = press()
    del inline["callback_query"]["message"]
    assert normalize_callback(inline, ME) == Skip("button on an inline message")
    unlabelled = press("sb:old-token")
    message = normalize_callback(unlabelled, ME)
    assert isinstance(message, Message) and message.text == "(pressed a button)"


# ingress --------------------------------------------------------------------------------------

async def test_a_press_on_the_webhook_is_answered_and_stored(harness: Harness,
                                                             telegram: FakeTelegram) -> None:
    bot = adapter(harness, telegram)
    await bot.start()
    try:
        url = await harness.serve(bot.routes())
        assert await post(url, press()) == 200
        assert await post(url, press("feedback:up", update_id=848200201)) == 200
        assert await post(url, text_update("/help")) == 200
    finally:
        await bot.stop()
    answered = telegram.params("answerCallbackQuery")
    assert answered == [{"callback_query_id": "4382bfdwdsb323b2d9"}] * 2
    pressed, command = await harness.stored()
    assert pressed.meta["button"] == "confirm-7f3a" and pressed.user == "2222222"
    assert command.meta["command"] == "help" and command.text == ""


async def test_a_press_fetched_by_polling_is_stored(harness: Harness,
                                                    telegram: FakeTelegram) -> None:
    bot = adapter(harness, telegram, webhook=False)
    await telegram.push(press())
    await bot.start()
    try:
        await telegram.wait_for(lambda: "answerCallbackQuery" in telegram.methods())
        await telegram.wait_for(lambda: any(p.get("offset") == 848200201
                                            for p in telegram.params("getUpdates")))
    finally:
        await bot.stop()
    [message] = await harness.stored()
    assert message.meta["button"] == "confirm-7f3a"


# command menu ---------------------------------------------------------------------------------

@pytest.mark.parametrize("webhook", [True, False])
async def test_commands_are_registered_at_start(harness: Harness, telegram: FakeTelegram,
                                                webhook: bool) -> None:
    commands = (*COMMANDS, CommandSpec("Bad-Name", "refused by Telegram"),
                CommandSpec("long", "x" * 300))
    bot = adapter(harness, telegram, webhook=webhook, commands=commands)
    await bot.start()
    try:
        await telegram.wait_for(lambda: "setMyCommands" in telegram.methods())
    finally:
        await bot.stop()
    [params] = telegram.params("setMyCommands")
    assert params["commands"] == [
        {"command": "ask", "description": "Ask a question about the docs"},
        {"command": "help", "description": "List what I can do"},
        {"command": "create_ticket", "description": "Open a support ticket"},
        {"command": "long", "description": "x" * 256}]


async def test_a_refused_registration_is_not_fatal(harness: Harness,
                                                   telegram: FakeTelegram) -> None:
    telegram.errors["setMyCommands"] = "Bad Request: BOT_COMMAND_INVALID"
    bot = adapter(harness, telegram)
    await bot.start()
    try:
        await telegram.wait_for(lambda: "setMyCommands" in telegram.methods())
        url = await harness.serve(bot.routes())
        assert await post(url, text_update("/help")) == 200  # the webhook still works
    finally:
        await bot.stop()
    assert [m.meta["command"] for m in await harness.stored()] == ["help"]


async def test_no_commands_leave_the_menu_alone(harness: Harness,
                                                telegram: FakeTelegram) -> None:
    bot = adapter(harness, telegram, commands=())
    await bot.start()
    url = await harness.serve(bot.routes())
    assert await post(url, text_update("/help", PRIVATE)) == 200
    await bot.stop()
    assert "setMyCommands" not in telegram.methods()


# buttons out ----------------------------------------------------------------------------------

BUTTONS = (Button("Confirm", "confirm-7f3a", "primary"), Button("Cancel", "cancel-7f3a"))


async def test_buttons_are_an_inline_keyboard_under_the_last_piece(
        harness: Harness, telegram: FakeTelegram) -> None:
    bot = adapter(harness, telegram)
    await bot.start()
    try:
        text = "\n\n".join("word " * 500 + f"paragraph {i}" for i in range(3))  # > 4,096
        await bot.sender.send(Reply(message_id="m-kb", text=text, buttons=BUTTONS,
                                    conversation=Conversation("telegram", "1111111",
                                                              reply_to="9")))
    finally:
        await bot.stop()
    *first, last = telegram.sent()
    assert first and all("reply_markup" not in p for p in first)
    assert last["reply_markup"] == {"inline_keyboard": [[
        {"text": "Confirm", "callback_data": "sb:confirm-7f3a"},
        {"text": "Cancel", "callback_data": "sb:cancel-7f3a"}]]}
    assert "editMessageReplyMarkup" not in telegram.methods()


def test_keyboards_have_rows_of_at_most_eight_buttons() -> None:
    markup = keyboard(tuple(Button(f"B{i}", f"t{i}") for i in range(10)))
    assert markup is not None
    assert [[b.callback_data for b in row] for row in markup.inline_keyboard] == [
        [f"sb:t{i}" for i in range(8)], ["sb:t8", "sb:t9"]]
    assert keyboard((Button("Too long", "x" * 62),)) is None  # 65 bytes of callback_data


async def test_answering_a_press_removes_its_keyboard_first(harness: Harness,
                                                            telegram: FakeTelegram) -> None:
    bot = adapter(harness, telegram)
    await bot.start()
    conversation = Conversation("telegram", "-1001234567890", thread="7", reply_to="5001")
    try:
        await bot.sender.send(Reply(message_id="m-done", text="Ticket #42 created.",
                                    conversation=conversation,
                                    meta={"button_message": "5001"}))
        telegram.errors["editMessageReplyMarkup"] = "Bad Request: message is not modified"
        await bot.sender.send(Reply(message_id="m-again", text="Already done.",
                                    conversation=conversation,
                                    meta={"button_message": "5001"}))
        # a stranger's press of someone's Confirm: the keyboard is still the requester's
        await bot.sender.send(Reply(message_id="m-stranger", conversation=conversation,
                                    text="Only the person who asked can confirm or cancel.",
                                    meta={"button_message": "5001"}, ephemeral=True))
    finally:
        await bot.stop()
    methods = [m for m in telegram.methods() if m in ("editMessageReplyMarkup", "sendMessage")]
    assert methods == ["editMessageReplyMarkup", "sendMessage"] * 2 + ["sendMessage"]
    removal = telegram.params("editMessageReplyMarkup")[0]
    assert removal == {"chat_id": -1001234567890, "message_id": 5001}  # no markup: removed
    assert [p["text"] for p in telegram.sent()][:2] == ["Ticket #42 created.", "Already done."]


async def test_a_finished_draft_gets_the_keyboard(harness: Harness,
                                                  telegram: FakeTelegram) -> None:
    bot = adapter(harness, telegram)
    await bot.start()
    try:
        await bot.sender.send(Reply(message_id="m-draft", text="Create it?", buttons=BUTTONS,
                                    conversation=Conversation("telegram", "1111111"),
                                    draft="5005"))
    finally:
        await bot.stop()
    [edit] = telegram.params("editMessageText")
    assert edit["message_id"] == 5005
    assert edit["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "sb:confirm-7f3a"
    assert telegram.sent() == []


# admins -----------------------------------------------------------------------------------------

async def test_admins_are_the_chats_creator_and_administrators(
        harness: Harness, telegram: FakeTelegram) -> None:
    telegram.creators = {-1001234567890: 1000001}
    telegram.admins = {-1001234567890: {2222222}}
    bot = adapter(harness, telegram)
    await bot.start()

    def by(user: str, chat: str = "-1001234567890", chat_type: str = "supergroup") -> Message:
        return Message("m", Conversation("telegram", chat), user, "hi",
                       meta={"chat_type": chat_type})

    try:
        assert await bot.sender.in_group(by("1000001"), "admins") is True
        assert await bot.sender.in_group(by("2222222"), "admins") is True
        assert await bot.sender.in_group(by("3333333"), "admins") is False
        asked = len(telegram.params("getChatMember"))
        assert await bot.sender.in_group(by("2222222"), "moderators") is False
        assert await bot.sender.in_group(by("1111111", "1111111", "private"), "admins") is False
        assert await bot.sender.in_group(by("1111111", "1111111", ""), "admins") is False
        assert len(telegram.params("getChatMember")) == asked == 3  # those were not asked
    finally:
        await bot.stop()
    assert telegram.params("getChatMember")[1] == {"chat_id": -1001234567890,
                                                   "user_id": 2222222}
