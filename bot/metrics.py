"""Prometheus metrics (prometheus-client), served at `GET /metrics` by `bot run` and by
`bot worker` (on BOT_METRICS_PORT).

Counters and histograms are per process: scrape every process (the Helm chart's PodMonitor
does). The inbox gauges (backlog, dead letters, the consumer group's pending entries and lag)
are read from Redis at scrape time, so they describe the whole deployment whichever process
serves them. Durations are in seconds, token counts in tokens.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
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

INBOX_PENDING = Gauge(
    "switchboard_inbox_pending", "Inbox entries delivered to a worker and not yet acknowledged "
    "(the consumer group's pending entries list; whole deployment).", registry=REGISTRY)
INBOX_LAG = Gauge(
    "switchboard_inbox_lag", "Inbox entries not yet delivered to any worker (the consumer "
    "group's lag, what KEDA scales on; whole deployment).", registry=REGISTRY)

#: Seconds, from a cheap command (1 ms) to a slow local model (2 minutes).
_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                      10.0, 20.0, 30.0, 60.0, 120.0)
#: Tokens of one request or completion (OpenTelemetry's gen_ai.client.token.usage buckets).
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)

MESSAGE_LATENCY = Histogram(
    "switchboard_message_latency_seconds", "From the message's arrival in the inbox to its "
    "reply sent and the entry acknowledged.", ["platform"], buckets=_LATENCY_BUCKETS_S,
    registry=REGISTRY)
QUEUE_WAIT = Histogram(
    "switchboard_queue_wait_seconds", "From the message's arrival in the inbox to a worker "
    "starting on it (this attempt).", ["platform"], buckets=_LATENCY_BUCKETS_S,
    registry=REGISTRY)
STAGE_LATENCY = Histogram(
    "switchboard_stage_latency_seconds", "One pipeline stage's run for one message (retrieval "
    "is stage Retrieve, generation Generate).", ["stage"], buckets=_LATENCY_BUCKETS_S,
    registry=REGISTRY)
LLM_LATENCY = Histogram(
    "switchboard_llm_request_seconds", "One successful language-model request, to its last "
    "byte.", ["provider", "model"], buckets=_LATENCY_BUCKETS_S, registry=REGISTRY)
LLM_TIME_TO_FIRST_TOKEN = Histogram(
    "switchboard_llm_time_to_first_token_seconds", "From a streamed request to its first "
    "text.", ["provider", "model"], buckets=_LATENCY_BUCKETS_S, registry=REGISTRY)
LLM_TOKENS = Histogram(
    "switchboard_llm_token_usage", "Tokens per request, by type: input (the prompt) or output "
    "(the completion), as gen_ai.client.token.usage.", ["provider", "model", "type"],
    buckets=_TOKEN_BUCKETS, registry=REGISTRY)


def observe_llm(provider: str, model: str, seconds: float, tokens_in: int,
                tokens_out: int) -> None:
    """Record one successful model request."""
    LLM_LATENCY.labels(provider, model).observe(seconds)
    if tokens_in:
        LLM_TOKENS.labels(provider, model, "input").observe(tokens_in)
    if tokens_out:
        LLM_TOKENS.labels(provider, model, "output").observe(tokens_out)


__all__ = ["CONTENT_TYPE_LATEST", "DEAD_LETTERS", "DEAD_LETTER_BACKLOG", "INBOX_BACKLOG",
           "INBOX_LAG", "INBOX_PENDING", "LLM_BREAKER_OPEN", "LLM_CACHE", "LLM_CALLS",
           "LLM_LATENCY", "LLM_TIME_TO_FIRST_TOKEN", "LLM_TOKENS", "MESSAGES_PROCESSED",
           "MESSAGE_FAILURES", "MESSAGE_LATENCY", "QUEUE_WAIT", "RAIL_VERDICTS", "REGISTRY",
           "STAGE_LATENCY", "generate_latest", "observe_llm"]
