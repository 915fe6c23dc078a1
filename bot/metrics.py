"""Prometheus metrics (prometheus-client), served by `bot run` at `GET /metrics`.

Counters are per process (each `bot worker` process counts its own; a Prometheus server
scraping only `bot run` sees that process's). The inbox gauges are read from Redis at scrape
time, so they describe the whole deployment whichever process serves them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry()

MESSAGES_PROCESSED = Counter(
    "switchboard_messages_processed", "Messages answered (or skipped as already answered).",
    ["platform"], registry=REGISTRY)
MESSAGE_FAILURES = Counter(
    "switchboard_message_failures", "Pipeline runs that failed and left the message pending.",
    ["platform", "transient"], registry=REGISTRY)
DEAD_LETTERS = Counter(
    "switchboard_dead_letters", "Messages moved to the dead-letter stream.", ["reason"],
    registry=REGISTRY)
INBOX_BACKLOG = Gauge(
    "switchboard_inbox_backlog", "Inbox entries not yet finished (whole deployment).",
    registry=REGISTRY)
DEAD_LETTER_BACKLOG = Gauge(
    "switchboard_dead_letter_backlog", "Entries in the dead-letter stream (whole deployment).",
    registry=REGISTRY)

LLM_CALLS = Counter(
    "switchboard_llm_calls", "Language-model calls per provider and outcome "
    "(ok, failed after retries, skipped while its circuit is open).",
    ["provider", "outcome"], registry=REGISTRY)
LLM_BREAKER_OPEN = Gauge(
    "switchboard_llm_breaker_open", "1 while a provider's circuit breaker is open.",
    ["provider"], registry=REGISTRY)
LLM_CACHE = Counter(
    "switchboard_llm_cache", "Response-cache lookups by result (hit, miss).", ["result"],
    registry=REGISTRY)
RAIL_VERDICTS = Counter(
    "switchboard_rail_verdicts", "Guardrail verdicts by rail and action (allow, redact, block).",
    ["rail", "action"], registry=REGISTRY)

__all__ = ["CONTENT_TYPE_LATEST", "DEAD_LETTERS", "DEAD_LETTER_BACKLOG", "INBOX_BACKLOG",
           "LLM_BREAKER_OPEN", "LLM_CACHE", "LLM_CALLS", "MESSAGES_PROCESSED",
           "MESSAGE_FAILURES", "RAIL_VERDICTS", "REGISTRY", "generate_latest"]
