"""Webhook updates while the Bot API's `getMe` cannot be reached or fails: a body that is not
an update the bot answers is classified without the bot's identity and acknowledged 200 at
once (Telegram redelivers anything else, forever), a body that is not JSON is 400; only an
update that needs the identity is refused with 503 and, once `getMe` answers again, stored
from Telegram's redelivery: nothing is lost."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.telegram.adapter import TelegramAdapter
from tests.adapters.conftest import Harness
from tests.adapters.telegram.test_commands_buttons import SECRET, press, text_update
from tests.fakes.telegram_api import TOKEN, FakeTelegram

PAYLOADS = Path(__file__).parents[2] / "payloads" / "telegram"


def update(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text())
    return loaded


def with_message(**changes: Any) -> dict[str, Any]:
    """The private text update with its `message` fields changed (None: removed)."""
    changed = update("private_text")
    for key, value in changes.items():
        if value is None:
            del changed["message"][key]
        else:
            changed["message"][key] = value
    return changed


#: signed (secret-bearing) JSON that is not an update the bot answers: acknowledged
IGNORED: dict[str, Any] = {
    "list": [1, 2],
    "null": None,
    "string": "x",
    "number": 7,
    "empty object": {},
    "update_id not a number": dict(update("private_text"), update_id="848200001"),
    "message not an object": {"update_id": 848200010, "message": 7},
    "no chat": with_message(chat=None),
    "from a bot": with_message(**{"from": {"id": 42, "is_bot": True, "first_name": "B"}}),
    "no text": with_message(text=None, sticker={"file_id": "x"}),
    "channel chat": with_message(chat={"id": -100777, "type": "channel", "title": "News"}),
    "edit": update("edited_message"),
    "other kind": update("unknown_kind"),
    "foreign button": update("callback_query"),
    "callback_query not an object": {"update_id": 848200011, "callback_query": [1]},
}
NOT_JSON = {"broken": b"{oops", "not UTF-8": b"\xff\xfe"}


@pytest.fixture(params=["refused", "failing"])
async def api_url(request: pytest.FixtureRequest, telegram: FakeTelegram
                  ) -> AsyncIterator[str]:
    """A Bot API whose getMe cannot be reached (a closed port) or answers 500."""
    if request.param == "refused":
        gone = await FakeTelegram().start()
        await gone.stop()
        yield gone.api_url
    else:
        telegram.errors["getMe"] = "Internal Server Error"
        telegram.error_status = 500
        yield telegram.api_url


@pytest.fixture
async def webhook(harness: Harness, api_url: str) -> AsyncIterator[str]:
    """The webhook's base URL, served by an adapter started with no commands."""
    bot = TelegramAdapter(harness.deps(commands=()), token=TOKEN, api_url=api_url,
                          webhook_secret=SECRET, poll_timeout_s=1)
    await bot.start()
    try:
        yield await harness.serve(bot.routes())
    finally:
        await bot.stop()


async def post(harness: Harness, url: str, body: bytes) -> int:
    async with harness.http.post(url + "/telegram/webhook", data=body, headers={
            "Content-Type": "application/json",
            "X-Telegram-Bot-Api-Secret-Token": SECRET}) as response:
        return response.status


@pytest.mark.parametrize("case", IGNORED)
async def test_json_that_is_no_answerable_update_is_acknowledged(
        harness: Harness, telegram: FakeTelegram, webhook: str, case: str) -> None:
    assert await post(harness, webhook, json.dumps(IGNORED[case]).encode()) == 200
    assert "getMe" not in telegram.methods()
    assert await harness.stored() == []


@pytest.mark.parametrize("case", NOT_JSON)
async def test_a_body_that_is_not_json_is_400(harness: Harness, telegram: FakeTelegram,
                                              webhook: str, case: str) -> None:
    assert await post(harness, webhook, NOT_JSON[case]) == 400
    assert "getMe" not in telegram.methods()


async def test_a_foreign_press_still_stops_the_spinner(harness: Harness,
                                                       telegram: FakeTelegram) -> None:
    telegram.errors["getMe"] = "Internal Server Error"
    telegram.error_status = 500
    bot = TelegramAdapter(harness.deps(commands=()), token=TOKEN, api_url=telegram.api_url,
                          webhook_secret=SECRET, poll_timeout_s=1)
    await bot.start()
    try:
        url = await harness.serve(bot.routes())
        assert await post(harness, url, json.dumps(update("callback_query")).encode()) == 200
    finally:
        await bot.stop()
    assert telegram.params("answerCallbackQuery") == [
        {"callback_query_id": "4382bfdwdsb323b2d9"}]
    assert "getMe" not in telegram.methods()


async def test_updates_needing_the_identity_are_refused_then_stored_from_redelivery(
        harness: Harness, telegram: FakeTelegram) -> None:
    telegram.errors["getMe"] = "Internal Server Error"
    telegram.error_status = 500
    bot = TelegramAdapter(harness.deps(), token=TOKEN, api_url=telegram.api_url,
                          webhook_secret=SECRET, poll_timeout_s=1)
    await bot.start()
    try:
        url = await harness.serve(bot.routes())
        bodies = [json.dumps(update("private_text")).encode(),
                  json.dumps(text_update("/help")).encode(), json.dumps(press()).encode()]
        for body in bodies:
            assert await post(harness, url, body) == 503
        assert telegram.methods().count("getMe") == len(bodies)
        assert await harness.stored() == []
        del telegram.errors["getMe"]
        for body in bodies:  # Telegram delivers them again
            assert await post(harness, url, body) == 200
    finally:
        await bot.stop()
    stored = await harness.stored()
    assert [m.text for m in stored] == [
        "What buffer size does the zlib example define as CHUNK?", "", "(pressed Confirm)"]
