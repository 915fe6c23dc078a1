"""Value types across versions: what a process reads that another version wrote."""

from __future__ import annotations

import json
from dataclasses import asdict

from bot.messages import Button, Conversation, Filtered, Message, Reply, Source, jsonable


def test_a_reply_kept_with_the_old_meta_flags_reads_as_typed_fields() -> None:
    """Kept answers live a day in Redis: one written when `ephemeral` and `draft` rode in
    `meta` keeps its meaning after an upgrade."""
    reply = Reply(message_id="m", conversation=Conversation("slack", "C1", "T1"), text="hi",
                  meta={"response_url": "https://hooks.slack.test/1"})
    old = json.loads(reply.to_json())
    del old["ephemeral"], old["draft"]
    old["meta"].update(ephemeral="1", draft="1700000001.000100")
    read = Reply.from_json(json.dumps(old))
    assert read.ephemeral and read.draft == "1700000001.000100"
    assert read.meta == {"response_url": "https://hooks.slack.test/1"}
    assert Reply.from_json(reply.to_json()) == reply


def test_jsonable_writes_what_asdict_writes() -> None:
    conversation = Conversation("slack", "C1", "T1", "171.2", None)
    message = Message("m1", conversation, "U1", "hi", 1.5, {"k": "v"}, True)
    reply = Reply("m1", conversation, "answer", (Source("kb:a", "A", 0.5, "s", 3),),
                  {"k": "v"}, (Button("Yes", "tok", "primary"),),
                  (Filtered("kb:a", "cut", 0.9, 12),), True, "D1")
    for value in (message, reply, conversation):
        assert json.dumps(jsonable(value)) == json.dumps(asdict(value))
    assert jsonable(()) == []
    assert Message.from_json(message.to_json()) == message
