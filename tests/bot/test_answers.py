"""The answer store: one owner for the kept answer and the answered mark, read in one round
trip per run, and an action's reply kept once."""

from __future__ import annotations

from actions.stage import RouteAction
from bot.answers import AnswerStore, Kept
from bot.guardrails.stages import OutputRails
from bot.messages import Conversation, Message, Reply
from bot.pipeline import AlreadyAnswered, Context, Pipeline, SendReply
from bot.protocols import Generated
from bot.runtime import Runtime


class Counting(AnswerStore):
    """Counts the store's calls by method."""

    calls: dict[str, int]

    def count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def lookup(self, message_id: str):  # type: ignore[no-untyped-def]
        self.count("lookup")
        return await super().lookup(message_id)

    async def load(self, message_id: str) -> Kept | None:
        self.count("load")
        return await super().load(message_id)

    async def keep(self, message_id: str, kept: Kept) -> None:
        self.count("keep")
        await super().keep(message_id, kept)


class Sent:
    def __init__(self) -> None:
        self.replies: list[Reply] = []

    async def send(self, reply: Reply) -> None:
        self.replies.append(reply)


def _message(text: str, mid: str) -> Message:
    return Message(id=mid, conversation=Conversation("webhook", "c", "w"), user="u", text=text)


async def test_lookup_reads_the_mark_and_the_kept_answer(runtime: Runtime) -> None:
    answers = AnswerStore(runtime.redis, runtime.settings.bot_key_prefix, ttl_s=60,
                          answered_ttl_s=60)
    empty = await answers.lookup("m")
    assert not empty.answered and empty.kept is None
    reply = Reply(message_id="m", conversation=Conversation("webhook", "c", "w"), text="hi")
    await answers.keep("m", Kept(reply, Generated(text="hi", model="x"), False, "", [],
                                  "model"))
    await answers.mark_answered("m")
    found = await answers.lookup("m")
    assert found.answered and found.kept is not None and found.kept.reply.text == "hi"


async def test_a_command_is_looked_up_once_and_kept_once(runtime: Runtime) -> None:
    answers = Counting(runtime.redis, runtime.settings.bot_key_prefix, ttl_s=60,
                       answered_ttl_s=60)
    answers.calls = {}
    sent = Sent()
    pipeline = Pipeline([AlreadyAnswered(answers), RouteAction(runtime.action_runner, answers),
                         OutputRails(runtime.guardrails, answers),
                         SendReply({"webhook": sent}, answers)])
    ctx: Context = await pipeline.run(_message("!help", "webhook:w:help-1"))
    assert ctx.action == "help" and len(sent.replies) == 1
    assert answers.calls == {"lookup": 1, "keep": 1}
    again = await pipeline.run(_message("!help", "webhook:w:help-1"))  # a redelivery
    assert again.done and again.skipped_reason == "already answered"
    assert len(sent.replies) == 1
