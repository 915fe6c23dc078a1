"""Slack sends paced to chat.postMessage's limit of about one message per second per channel
(https://docs.slack.dev/apis/web-api/rate-limits): sequential
replies to one channel wait for their turn, draft edits count too, other channels do not
wait."""

from __future__ import annotations

from adapters.slack.adapter import SlackAdapter
from bot.messages import Conversation, Message, Reply
from bot.ratelimit import Paced, RateLimiter, SendPacer
from tests.adapters.conftest import Harness, Sleeps
from tests.fakes.slack_api import SIGNING_SECRET, TEAM_ID, FakeSlack


def paced(harness: Harness, slack: FakeSlack) -> tuple[SlackAdapter, Sleeps]:
    adapter = SlackAdapter(harness.deps(()), bot_token="xoxb-test-token", api_url=slack.api_url,
                           signing_secret=SIGNING_SECRET, app_token=None)
    sleeps = Sleeps()
    assert isinstance(adapter.sender, Paced)
    adapter.sender.pacer = SendPacer(RateLimiter(harness.redis, harness.prefix), sleep=sleeps)
    return adapter, sleeps


async def test_replies_to_one_channel_go_out_one_per_second(harness: Harness,
                                                             slack: FakeSlack) -> None:
    adapter, sleeps = paced(harness, slack)
    for n in range(3):
        await adapter.sender.send(Reply(message_id=f"m-{n}", text=f"Answer {n}.",
                                        conversation=Conversation("slack", "C1", TEAM_ID)))
    assert [p["text"] for p in slack.posts()] == [f"Answer {n}." for n in range(3)]
    assert len(sleeps.requested) == 2 and all(0.5 <= s <= 1.0 for s in sleeps.requested)
    # another channel has its own bucket
    await adapter.sender.send(Reply(message_id="m-other", text="Elsewhere.",
                                    conversation=Conversation("slack", "C2", TEAM_ID)))
    assert len(sleeps.requested) == 2


async def test_draft_edits_wait_like_messages(harness: Harness, slack: FakeSlack) -> None:
    adapter, sleeps = paced(harness, slack)
    question = Message(id="slack:T:q1", conversation=Conversation("slack", "C1", TEAM_ID,
                                                                  thread="1.2"),
                       user="U1", text="Why?")
    handle = await adapter.sender.post_draft(question, "Because.")
    assert handle is not None and sleeps.requested == []
    await adapter.sender.edit_draft(question, handle, "Because it is.")
    assert len(sleeps.requested) == 1 and 0.5 <= sleeps.requested[0] <= 1.0
