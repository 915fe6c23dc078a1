"""What the soak test (bench/soak.py) records per message, and the figures it prints.

Definitions (times are the bench's clock, time.monotonic()):

- sent: when the first POST of the message started.
- stored: the earliest proof that the bot holds the message: a 200 or 202 answer to any POST
  of its id, a callback for it, or the fake LLM being asked about it.
- accepted: messages with such a proof.
- answered: accepted messages whose answer reached the client: a 200 response (to the first
  request, or to a repeat of the id), or a callback the endpoint accepted (2xx).
- lost: accepted, never answered by response, callback or repeat (the last repeat, after the
  drain, included), and not dead-lettered.
- doubled: an Idempotency-Key accepted by the callback endpoint more than once (split by
  whether the bodies differ), or a message whose original request got the answer (200) and
  which was also called back.
- reordered: message k of a conversation is reordered when some message m of the same
  conversation was stored before k was sent (m.stored < k.sent: the inbox had m ahead of k),
  and k's answer reached the client before m's. "Processed out of order" applies the same
  rule to processing: the fake LLM was first asked about k before it was last asked about m.
- stuck: conversations with lost messages at the end.
- latency: sent -> the first answer to reach the client.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench.soak_fakes import CallbackCall

WEBHOOK = "soak"
#: What the bot sends the author of a dead-lettered message (bot/runtime.py).
DEAD_LETTER_PREFIX = "Sorry, I could not answer this message"


@dataclass
class Answer:
    at: float
    path: str  # "response", "repeat", "callback", "final-repeat"
    text: str


@dataclass
class Msg:
    conv: str
    seq: int
    id: str
    delay_ms: int
    mode: str  # "callback" (no wait), "wait" (?wait=true, patient), "hangup" (short timeout)
    dup: str  # "", "later" (sent again later), "concurrent" (twice at once)
    slow: bool = False
    sent_at: float | None = None
    stored_at: float | None = None
    answers: list[Answer] = field(default_factory=list)
    notices: list[Answer] = field(default_factory=list)  # dead-letter notices
    outcomes: list[str] = field(default_factory=list)
    accepted_new: int = 0  # POSTs answered {"status": "accepted"} (more than 1: dedupe failed)
    dead_lettered: bool = False
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def key(self) -> str:
        return f"webhook:{WEBHOOK}:{self.id}"

    def stored(self, at: float) -> None:
        self.stored_at = at if self.stored_at is None else min(self.stored_at, at)

    def answer(self, at: float, path: str, text: str) -> None:
        self.stored(at)
        if text.startswith(DEAD_LETTER_PREFIX):
            self.dead_lettered = True
            self.notices.append(Answer(at, path, text[:40]))
        else:
            self.answers.append(Answer(at, path, text))
        self.answered.set()

    def first_answer(self) -> Answer | None:
        return min(self.answers, key=lambda a: a.at) if self.answers else None

    def dump(self) -> dict[str, Any]:
        return {"id": self.id, "conv": self.conv, "seq": self.seq, "delay_ms": self.delay_ms,
                "mode": self.mode, "dup": self.dup, "sent_at": self.sent_at,
                "stored_at": self.stored_at, "accepted_new": self.accepted_new,
                "dead_lettered": self.dead_lettered, "outcomes": self.outcomes,
                "answers": [(a.at, a.path, a.text) for a in self.answers],
                "notices": [(a.at, a.path) for a in self.notices]}


def quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _latency(label: str, values: list[float]) -> str:
    if not values:
        return f"{label}: none"
    ordered = sorted(values)
    return (f"{label}: p50 {statistics.median(ordered):.2f} s, p99 {quantile(ordered, 0.99):.2f} s,"
            f" max {ordered[-1]:.2f} s (n={len(ordered)})")


def reorders(msgs: list[Msg], llm_calls: dict[str, list[float]]
             ) -> tuple[list[tuple[Msg, Msg]], list[tuple[Msg, Msg]], int]:
    """(delivery, processing) violations as (m, k) pairs, one per reordered k (see the module
    docstring), and the number of ordered pairs (m stored before k was sent) checked."""
    by_conv: dict[str, list[Msg]] = defaultdict(list)
    for m in msgs:
        by_conv[m.conv].append(m)
    delivered: list[tuple[Msg, Msg]] = []
    processed: list[tuple[Msg, Msg]] = []
    pairs = 0
    for conv_msgs in by_conv.values():
        for k in conv_msgs:
            if k.sent_at is None:
                continue
            before = [m for m in conv_msgs if m is not k and m.stored_at is not None
                      and m.stored_at < k.sent_at]
            pairs += len(before)
            ka = k.first_answer()
            late = [m for m in before if ka is not None and (fa := m.first_answer()) is not None
                    and ka.at < fa.at]
            if late:
                delivered.append((late[0], k))
            k_calls = llm_calls.get(k.id)
            early = [m for m in before if k_calls and llm_calls.get(m.id)
                     and min(k_calls) < max(llm_calls[m.id])]
            if early:
                processed.append((early[0], k))
    return delivered, processed, pairs


def _by_repeat(m: Msg) -> bool:
    return any(a.path in ("repeat", "final-repeat") for a in m.answers)


def _t(at: float | None, t0: float) -> str:
    return "-" if at is None else f"{at - t0:.1f}"


def describe(m: Msg, t0: float, llm_calls: dict[str, list[float]]) -> str:
    answers = ", ".join(f"{a.path}@{a.at - t0:.1f} {a.text!r}" for a in m.answers) or "none"
    if m.notices:
        answers += "; dead-letter notice " + ", ".join(f"{a.path}@{a.at - t0:.1f}"
                                                      for a in m.notices)
    calls = ",".join(f"{c - t0:.1f}" for c in llm_calls.get(m.id, [])) or "-"
    return (f"{m.id} ({m.mode}{'/' + m.dup if m.dup else ''}, {m.delay_ms} ms) sent "
            f"{_t(m.sent_at, t0)} stored {_t(m.stored_at, t0)} llm [{calls}] "
            f"posts {m.outcomes} answers: {answers}")


def report(msgs: list[Msg], callbacks: list[CallbackCall], llm_calls: dict[str, list[float]],
           t0: float, fallback_failed: set[str]) -> dict[str, Any]:
    """Print the figures; return the counts (for the JSON dump). `fallback_failed`: message
    keys whose reply to a caller that hung up could not be called back (bot log)."""
    sent = [m for m in msgs if m.sent_at is not None]
    accepted = [m for m in sent if m.stored_at is not None]
    answered = [m for m in accepted if m.answers]
    dead = [m for m in accepted if m.dead_lettered and not m.answers]
    lost = [m for m in accepted if not m.answers and not m.dead_lettered]
    final_only = [m for m in answered if all(a.path == "final-repeat" for a in m.answers)]
    by_id = {m.id: m for m in msgs}

    ok_calls: dict[str, list[CallbackCall]] = defaultdict(list)
    for c in callbacks:
        if c.status < 300:
            ok_calls[c.key].append(c)
    multi = {k: v for k, v in ok_calls.items() if len(v) > 1}
    multi_distinct = [k for k, v in multi.items() if len({str(c.body) for c in v}) > 1]
    resp_and_cb = [m for m in answered if any(a.path == "response" for a in m.answers)
                   and m.key in ok_calls]
    distinct = [m for m in answered if len({a.text for a in m.answers}) > 1]
    wrong = [m for m in answered
             if any(not a.text.startswith(f"ANSWER {m.id} ") for a in m.answers)]
    twice_new = [m for m in accepted if m.accepted_new > 1]
    delivered, processed, pairs = reorders(accepted, llm_calls)
    stuck = sorted({m.conv for m in lost})
    lat = [fa.at - m.sent_at for m in answered
           if (fa := m.first_answer()) is not None and m.sent_at is not None]
    lat_fast = [fa.at - m.sent_at for m in answered if not m.slow
                and (fa := m.first_answer()) is not None and m.sent_at is not None]
    lat_slow = [fa.at - m.sent_at for m in answered if m.slow
                and (fa := m.first_answer()) is not None and m.sent_at is not None]

    hung = [m for m in accepted if "hangup" in m.outcomes]
    hung_paths = Counter(fa.path for m in hung if (fa := m.first_answer()) is not None)
    no_fallback = [m for m in accepted if m.key in fallback_failed]
    dead_modelled = [m for m in dead if m.id in llm_calls]
    paths = Counter(fa.path for m in answered if (fa := m.first_answer()) is not None)
    outcomes = Counter(o for m in msgs for o in m.outcomes)
    bad_sig = sum(1 for c in callbacks if not c.signed)
    bad_key = sum(1 for c in callbacks if c.key != f"webhook:{WEBHOOK}:{c.body.get('id')}")
    unknown = sum(1 for c in callbacks if str(c.body.get("id")) not in by_id)

    print(f"messages: sent {len(sent)}, accepted {len(accepted)} (not accepted: "
          f"{len(sent) - len(accepted)}), answered {len(answered)}, lost {len(lost)}, "
          f"dead-lettered {len(dead)} (told only 'Sorry, I could not answer'; the model had "
          f"answered {len(dead_modelled)} of them)")
    print(f"  first answer by: {dict(paths)}; answered only by the last repeat after the "
          f"drain: {len(final_only)}")
    print(f"  POST outcomes: {dict(outcomes)}")
    print(f"doubled: {len(multi)} keys called back more than once ({len(multi_distinct)} with "
          f"distinct bodies); {len(resp_and_cb)} answered by the response and by a callback; "
          f"answers with distinct content for one message: {len(distinct)}; wrong content: "
          f"{len(wrong)}; ids accepted as new twice: {len(twice_new)}")
    print(f"reordered: {len(delivered)} answers reached the client before the answer of an "
          f"earlier-stored message of their conversation; processed out of order: "
          f"{len(processed)} ({pairs} ordered pairs checked)")
    print(f"stuck conversations: {len(stuck)} {stuck if stuck else ''}")
    print("latency (sent -> first answer) " + _latency("all", lat))
    print("  " + _latency(f"fast answers (LLM <= 0.5 s), {len(lat_fast)}", lat_fast))
    print("  " + _latency(f"slow answers (LLM {max((m.delay_ms for m in msgs), default=0) / 1000:g}"
                          " s)", lat_slow))
    print(f"callbacks: {len(callbacks)} POSTs, {sum(1 for c in callbacks if c.status >= 500)} "
          f"answered 503, {bad_sig} with a bad signature, {bad_key} with an Idempotency-Key "
          f"other than webhook:{WEBHOOK}:<id>, {unknown} for unknown ids")
    print(f"hung-up callers: {len(hung)} messages, first answered by {dict(hung_paths)}; "
          f"replies to a hung-up caller whose callback failed for good (bot log 'callback after "
          f"the caller hung up failed'): {len(no_fallback)}, of which called back later: "
          f"{sum(m.key in ok_calls for m in no_fallback)}, answered by a repeat: "
          f"{sum(_by_repeat(m) for m in no_fallback)}")
    examples: list[tuple[str, Msg]] = [("lost", m) for m in lost[:5]]
    examples += [("answered only by the last repeat", m) for m in final_only[:3]]
    examples += [("callback-mode answered by no callback", m) for m in answered
                 if m.mode == "callback" and m.dup == "" and m.key not in ok_calls][:3]
    examples += [("doubled", by_id[k.rsplit(":", 1)[-1]]) for k in list(multi)[:3]
                 if k.rsplit(":", 1)[-1] in by_id]
    examples += [("response and callback", m) for m in resp_and_cb[:3]]
    examples += [("wrong content", m) for m in wrong[:3]]
    examples += [("hang-up fallback callback failed", m) for m in no_fallback[:3]]
    examples += [("dead-lettered", m) for m in dead[:3]]
    for label, (m, k) in ([("reordered", p) for p in delivered[:3]]
                          + [("processed out of order", p) for p in processed[:3]]):
        examples += [(f"{label}: earlier", m), (f"{label}: later", k)]
    for label, m in examples:
        print(f"  [{label}] {describe(m, t0, llm_calls)}")
    return {"sent": len(sent), "accepted": len(accepted), "answered": len(answered),
            "lost": len(lost), "dead_lettered": len(dead), "final_repeat_only": len(final_only),
            "doubled_keys": len(multi), "doubled_distinct": len(multi_distinct),
            "response_and_callback": len(resp_and_cb), "distinct_content": len(distinct),
            "wrong_content": len(wrong), "accepted_twice": len(twice_new),
            "reordered": len(delivered), "processed_out_of_order": len(processed),
            "stuck": stuck, "hangup_fallback_failed": len(no_fallback),
            "ordered_pairs": pairs,
            "latency_p50_s": statistics.median(lat) if lat else None,
            "latency_p99_s": quantile(sorted(lat), 0.99) if lat else None}
