"""The kept answer of each message and its "answered" mark: the one owner of both Redis keys.

- `<p>:answer:<message id>` (JSON, `ttl_s`): the reply as first written (by an action or the
  model), then as the output rails left it, with what is needed to finish the message again
  (the `Generated` record, whether the rails ran, the action's name, the rail verdicts). A
  retried message (a failed send, a crash) restores it instead of running the action or the
  model again, so a retry sends exactly what the first attempt began to send.
- `<p>:answered:<message id>` ("1", `answered_ttl_s`): set once the reply went out, so a
  redelivery after a crash between send and acknowledge is not answered twice.

`lookup` reads both in one round trip at the start of a message's run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from bot.keys import Keys
from bot.messages import Button, Reply, jsonable
from bot.protocols import AfterSend, Generated
from bot.redis_pool import Coalesced, call


@dataclass(frozen=True)
class Kept:
    """A kept answer.

    Attributes:
        reply: the reply to send.
        generated: the model's (or the action's) record of writing it.
        railed: the output rails have run on `reply`.
        action: the action that wrote it ("" when the model did).
        verdicts: the rail verdicts recorded so far (JSON objects, for the transcript).
        answered_by: who wrote it: "action", "model" or "outage" (the apology for a model
            outage), as `bot.pipeline.AnsweredBy`.
    """

    reply: Reply
    generated: Generated
    railed: bool
    action: str
    verdicts: list[dict[str, Any]]
    answered_by: Literal["action", "model", "outage"]

    def to_json(self) -> str:
        return json.dumps({"reply": self.reply.to_json(), "generated": jsonable(self.generated),
                           "railed": self.railed, "action": self.action,
                           "verdicts": self.verdicts, "answered_by": self.answered_by})

    @classmethod
    def from_json(cls, raw: bytes | str) -> Kept:
        data = json.loads(raw)
        generated = dict(data["generated"])
        generated["buttons"] = tuple(Button(**b) for b in generated.get("buttons", ()))
        action = str(data.get("action", ""))
        by = data.get("answered_by")  # a kept answer of the previous version: derived
        if by not in ("action", "model", "outage"):
            by = "action" if action else "outage" if generated.get("error") else "model"
        return cls(reply=Reply.from_json(data["reply"]), generated=Generated(**generated),
                   railed=bool(data.get("railed")), action=action,
                   verdicts=list(data.get("verdicts", [])), answered_by=by)


@dataclass(frozen=True)
class Lookup:
    """What the store held for a message when its run began."""

    answered: bool
    kept: Kept | None


class AnswerStore:
    """Reads and writes the kept answers and answered marks (see the module docstring).

    Args:
        ttl_s: how long a kept answer lives, seconds (longer than any retry).
        answered_ttl_s: how long the answered mark lives, seconds (the dedupe window).
        coalesced: the process's shared round trips (bot/redis_pool.py), for `lookup` and
            `keep`.
    """

    def __init__(self, redis: Redis, prefix: str, *, ttl_s: int, answered_ttl_s: int,
                 coalesced: Coalesced | None = None) -> None:
        self._redis = redis
        self._coalesced = coalesced
        self._prefix = prefix
        self._keys = Keys(prefix)
        self._ttl_s = ttl_s
        self._answered_ttl_s = answered_ttl_s

    def _answer_key(self, message_id: str) -> str:
        return self._keys.answer(message_id)

    def _answered_key(self, message_id: str) -> str:
        return self._keys.answered(message_id)

    async def lookup(self, message_id: str) -> Lookup:
        """Both keys of a message in one round trip (MGET).

        Raises: redis.exceptions.RedisError, OSError: Redis cannot be asked."""
        return self.lookup_reply(await call(self._redis, self._coalesced,
                                            lambda pipe: self.queue_lookup(pipe, message_id)))

    def queue_lookup(self, pipe: Pipeline, message_id: str) -> None:
        """Queue `lookup` on `pipe`; pass its reply to `lookup_reply`."""
        pipe.mget(self._answered_key(message_id), self._answer_key(message_id))

    @staticmethod
    def lookup_reply(reply: list[bytes | str | None]) -> Lookup:
        """The `Lookup` of a queued `lookup`, from its reply."""
        answered, kept = reply
        return Lookup(answered is not None, Kept.from_json(kept) if kept is not None else None)

    async def load(self, message_id: str) -> Kept | None:
        """The kept answer of a message, or None."""
        raw = await self._redis.get(self._answer_key(message_id))
        return Kept.from_json(raw) if raw is not None else None

    async def keep(self, message_id: str, kept: Kept) -> None:
        """Keep (or replace) a message's answer for `ttl_s`."""
        key, value, ttl_s = self._answer_key(message_id), kept.to_json(), self._ttl_s
        await call(self._redis, self._coalesced, lambda pipe: pipe.set(key, value, ex=ttl_s))

    def mark_answered_after_send(self, message_id: str) -> AfterSend:
        """`mark_answered` as a write the worker queues on the transaction that acknowledges
        the message (`bot.protocols.AfterSend`)."""
        return _MarkAnswered(self, message_id)

    async def mark_answered(self, message_id: str) -> None:
        """Record that the reply went out. Rides out a short Redis blip (up to 10 s): the reply
        is already sent, and a retry would send it again (with the same idempotency key, but
        still a second message)."""
        async for attempt in AsyncRetrying(
                stop=stop_after_delay(10), wait=wait_exponential_jitter(initial=0.1, max=2),
                retry=retry_if_exception_type((RedisError, OSError)), reraise=True):
            with attempt:
                await self._redis.set(self._answered_key(message_id), "1",
                                      ex=self._answered_ttl_s)


@dataclass(frozen=True)
class _MarkAnswered:
    """`AnswerStore.mark_answered` queued on another pipeline."""

    store: AnswerStore
    message_id: str

    def queue(self, pipe: Pipeline) -> None:
        pipe.set(self.store._answered_key(self.message_id), "1",
                 ex=self.store._answered_ttl_s)

    async def settle(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            raise reply

    async def run(self) -> None:
        await self.store.mark_answered(self.message_id)
