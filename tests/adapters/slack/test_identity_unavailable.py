"""Signed bodies while Slack's `auth.test` cannot be reached or fails: a body that is not an
event the bot answers is classified without the bot's identity and answered at once (400 with
`X-Slack-No-Retry: 1` when it is not JSON or not a JSON object, 200 otherwise), so Slack does
not retry it; only an event that needs the identity is refused with 503 and, once `auth.test`
answers again, stored from Slack's retry: nothing is lost."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.slack.adapter import SlackAdapter
from tests.adapters.conftest import Harness
from tests.adapters.slack.test_commands_buttons import post, signed
from tests.fakes.slack_api import SIGNING_SECRET, TEAM_ID, FakeSlack

PAYLOADS = Path(__file__).parents[2] / "payloads" / "slack"
JSON = "application/json"


def payload(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text())
    return loaded


def envelope(event: Any) -> dict[str, Any]:
    return {"team_id": TEAM_ID, "api_app_id": "A0APP00001", "type": "event_callback",
            "event_id": "Ev0GARBAGE1", "event_time": 1515449522, "event": event}


MENTION = payload("app_mention")["event"]
#: signed JSON that is not an event the bot answers: acknowledged, never retried
IGNORED: dict[str, Any] = {
    "empty object": {},
    "unknown type": {"type": "app_rate_limited", "team_id": TEAM_ID},
    "no event": {k: v for k, v in envelope(None).items() if k != "event"},
    "event not an object": envelope([1, 2]),
    "event a string": envelope("x"),
    "other event type": envelope({"type": "reaction_added", "user": "U061F7AUR",
                                  "item": {"type": "message", "channel": "C0LAN2Q65",
                                           "ts": "1515449522.000016"}}),
    "edit": payload("message_changed"),
    "subtype not a string": envelope(dict(MENTION, subtype=[])),
    "other bot": payload("other_bot"),
    "no user": envelope({k: v for k, v in MENTION.items() if k != "user"}),
    "channel not a string": envelope(dict(MENTION, channel=7)),
}
#: signed bodies that are not JSON objects: refused, and Slack told not to retry
REFUSED: dict[str, bytes] = {"list": b"[1, 2]", "null": b"null", "string": b'"x"',
                             "number": b"7", "not JSON": b"{oops", "not UTF-8": b"\xff\xfe"}


@pytest.fixture(params=["refused", "failing"])
async def api_url(request: pytest.FixtureRequest, slack: FakeSlack) -> AsyncIterator[str]:
    """A Web API whose auth.test cannot be reached (a closed port) or answers 500."""
    if request.param == "refused":
        gone = await FakeSlack().start()
        await gone.stop()
        yield gone.api_url
    else:
        slack.failing["auth.test"] = 500
        yield slack.api_url


def adapter(harness: Harness, api_url: str) -> SlackAdapter:
    return SlackAdapter(harness.deps(), bot_token="xoxb-test-token", api_url=api_url,
                        signing_secret=SIGNING_SECRET, app_token=None)


@pytest.mark.parametrize("case", IGNORED)
async def test_signed_json_that_is_no_answerable_event_is_acknowledged(
        harness: Harness, slack: FakeSlack, api_url: str, case: str) -> None:
    url = await harness.serve(adapter(harness, api_url).routes())
    body = json.dumps(IGNORED[case]).encode()
    assert await post(url, body, signed(body, JSON)) == (200, "")
    assert slack.called("auth.test") == 0
    assert await harness.stored() == []


@pytest.mark.parametrize("case", REFUSED)
async def test_signed_bodies_that_are_not_json_objects_are_refused_without_retries(
        harness: Harness, slack: FakeSlack, api_url: str, case: str) -> None:
    url = await harness.serve(adapter(harness, api_url).routes())
    body = REFUSED[case]
    async with harness.http.post(url + "/slack/events", data=body,
                                 headers=signed(body, JSON)) as response:
        assert response.status == 400
        assert response.headers.get("X-Slack-No-Retry") == "1"
    assert slack.called("auth.test") == 0


async def test_an_event_needing_the_identity_is_refused_then_stored_from_the_retry(
        harness: Harness, slack: FakeSlack) -> None:
    slack.failing["auth.test"] = 500
    url = await harness.serve(adapter(harness, slack.api_url).routes())
    body = json.dumps(payload("app_mention")).encode()
    async with harness.http.post(url + "/slack/events", data=body,
                                 headers=signed(body, JSON)) as response:
        assert response.status == 503
        assert "X-Slack-No-Retry" not in response.headers  # Slack must deliver it again
    assert slack.called("auth.test") == 1
    assert await harness.stored() == []
    del slack.failing["auth.test"]
    retry = dict(signed(body, JSON), **{"X-Slack-Retry-Num": "1",
                                        "X-Slack-Retry-Reason": "http_error"})
    assert await post(url, body, retry) == (200, "")
    [message] = await harness.stored()
    assert message.text == "What buffer size does the zlib example define as CHUNK?"


async def test_socket_mode_acknowledges_garbage_without_the_identity(
        harness: Harness, slack: FakeSlack) -> None:
    slack.failing["auth.test"] = 500
    socket = SlackAdapter(harness.deps(), bot_token="xoxb-test-token", api_url=slack.api_url,
                          signing_secret=None, app_token="xapp-test-token")
    await socket.start()  # logs the failed auth.test and connects all the same
    try:
        asked = slack.called("auth.test")
        for n, case in enumerate(("no event", "event not an object", "other bot")):
            await slack.envelopes.put({"envelope_id": f"env-{n}", "type": "events_api",
                                       "accepts_response_payload": False,
                                       "payload": IGNORED[case]})
        await slack.wait_for(lambda: {a.get("envelope_id") for a in slack.acks} >= {
            "env-0", "env-1", "env-2"})
    finally:
        await socket.stop()
    assert slack.called("auth.test") == asked
    assert await harness.stored() == []
