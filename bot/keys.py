"""Every Redis key the project writes, built here and only here (tests/bot/test_keys.py checks
that no other module formats one), each with the one module that writes it and its lifetime.

`<p>` is BOT_KEY_PREFIX ("sb"); ids are the engine's (`Message.id`, `Conversation.key`,
inbox entry ids). TTLs are the settings' names where a setting decides them.

Key: type; owner (the only writer); lifetime.

- `<p>:inbox`: stream with the group `engine`; bot/inbox.py; entries deleted on ack.
- `<p>:dlq`: stream; bot/inbox.py; until retried (`bot dlq retry`).
- `<p>:seen:<message id>`: string; bot/inbox.py; BOT_DEDUPE_TTL_S.
- `<p>:attempts`: hash entry id -> runs; bot/inbox.py; a field is deleted on ack.
- `<p>:conv:<conversation>`: list of entry ids; appended by bot/inbox.py's enqueue script in
  the step that stores the entry, popped by bot/ordering.py; empties as entries finish.
- `<p>:lock:<conversation>`: string (a holder's token); bot/ordering.py; BOT_CLAIM_IDLE_S,
  refreshed while held.
- `<p>:ready`: list of conversation keys; bot/ordering.py; popped by workers.
- `<p>:answer:<message id>`: string (JSON); bot/answers.py; 24 h.
- `<p>:answered:<message id>`: string; bot/answers.py; BOT_DEDUPE_TTL_S.
- `<p>:mem:<conversation>`, `<p>:mem-once:<message id>`: list of JSON turns, string;
  bot/memory.py; MEMORY_TTL_S.
- `<p>:rl:<bucket>`: hash or string; bot/ratelimit.py (the inbound "told" marks
  `<p>:rl:told:<bucket>` and message memos: bot/ratelimit_inbound.py); as long as the
  bucket's backlog.
- `<p>:llmcache:<sha256>`: string (JSON); bot/llm/cache.py; LLM_CACHE_TTL_S.
- `<p>:draft:<message id>`: string; bot/streaming.py; 24 h.
- `<p>:wait:`, `<p>:reply:`, `<p>:result:`, `<p>:taken:`, `<p>:abandoned:<message id>`:
  strings and a list; bot/rendezvous.py (the wait marker is set by the inbox's enqueue script
  in the same step, on the rendezvous' behalf); WEBHOOK_REPLY_TTL_S or a wait's lease.
- `<p>:action:call:<call>` and `<call>:claimed`: string (JSON); actions/runner.py; 15 min to
  confirm, 24 h for other buttons.
- `<p>:sent:<message id>`: string (pieces delivered); adapters/progress.py; 24 h.
- `<p>:slack:thread:<channel>:<thread_ts>`: string; adapters/slack/send.py; 7 days.
- `<p>:discord:thread:<channel>`: string; adapters/discord/send.py; 7 days.
- `<p>:telegram:offset:<bot id>`: string; adapters/telegram/adapter.py; no TTL (one per bot).
"""

from __future__ import annotations


class Keys:
    """The key templates under one prefix (see the module docstring for owners and TTLs)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # the inbox and per-conversation order
    def inbox(self) -> str:
        return self._k("inbox")

    def dead_letters(self) -> str:
        return self._k("dlq")

    def seen(self, message_id: str) -> str:
        return self._k("seen", message_id)

    def attempts(self) -> str:
        return self._k("attempts")

    def conversation_fifo(self, conversation_key: str) -> str:
        return self._k("conv", conversation_key)

    def conversation_lock(self, conversation_key: str) -> str:
        return self._k("lock", conversation_key)

    def ready(self) -> str:
        return self._k("ready")

    # answers and memory
    def answer(self, message_id: str) -> str:
        return self._k("answer", message_id)

    def answered(self, message_id: str) -> str:
        return self._k("answered", message_id)

    def memory(self, conversation_key: str) -> str:
        return self._k("mem", conversation_key)

    def memory_once(self, message_id: str) -> str:
        return self._k("mem-once", message_id)

    # rate limits, the model's cache, streamed drafts
    def rate(self, bucket: str) -> str:
        return self._k("rl", bucket)

    def llm_cache(self, digest: str) -> str:
        return self._k("llmcache", digest)

    def draft(self, message_id: str) -> str:
        return self._k("draft", message_id)

    # webhook reply hand-offs (bot/rendezvous.py)
    def reply_wait(self, message_id: str) -> str:
        return self._k("wait", message_id)

    def reply_handoff(self, message_id: str) -> str:
        return self._k("reply", message_id)

    def reply_result(self, message_id: str) -> str:
        return self._k("result", message_id)

    def reply_taken(self, message_id: str) -> str:
        return self._k("taken", message_id)

    def reply_abandoned(self, message_id: str) -> str:
        return self._k("abandoned", message_id)

    # actions and adapters
    def action_call(self, call: str) -> str:
        return self._k("action", "call", call)

    def action_claim(self, call: str) -> str:
        return self._k("action", "call", call, "claimed")

    def sent_pieces(self, message_id: str) -> str:
        return self._k("sent", message_id)

    def slack_thread(self, channel: str, thread_ts: str) -> str:
        return self._k("slack", "thread", channel, thread_ts)

    def discord_thread(self, channel: str) -> str:
        return self._k("discord", "thread", channel)

    def telegram_offset(self, bot_id: str) -> str:
        return self._k("telegram", "offset", bot_id)
