"""Value types across versions: what a process reads that another version wrote."""

from __future__ import annotations

import json

from bot.messages import Conversation, Reply


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
