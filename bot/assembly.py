"""Build functions of the composition root (`bot.runtime.Runtime`): each takes what it needs,
registers what it opens on the caller's `AsyncExitStack` as soon as it is open (so a failure
half-way closes exactly what was built, newest first), and returns a frozen set of
components.

    connections = await connect(settings, database_url, redis_url, resources)
    state = await build_state(settings, connections)
    engine = await build_engine(settings, connections, state, resources, embedder, retriever)

`Connections` are the process's clients; `State` the components that own state in Redis and
Postgres (one owner for each key and table, bot/keys.py); `Engine` what turns a message into
a reply: platforms and senders, the generator, guardrails, actions, the pipeline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

import aiohttp
import asyncpg
from pgvector.asyncpg import register_vector
from redis.asyncio import Redis
from redis.exceptions import RedisError

from actions.arguments import command_spec
from actions.audit import AuditLog
from actions.loading import load_actions
from actions.policy import Permissions
from actions.registry import Registry
from actions.runner import ActionRunner, ActionServices
from actions.stage import RouteAction
from actions.tools import toolbox_factory
from adapters.base import AdapterDeps, PlatformAdapter
from adapters.console.adapter import ConsoleAdapter
from adapters.registry import build_platforms, console
from bot.answers import AnswerStore
from bot.config import EmbeddingBackend, Settings
from bot.errors import ServiceUnavailable
from bot.guardrails.policy import GuardrailPolicy, Guardrails, build_guardrails
from bot.guardrails.stages import CheckPassages, InputRails, OutputRails
from bot.inbox import Inbox
from bot.llm import ChatGenerator, ExtractiveGenerator, LLMRouter, count_tokens
from bot.llm.cache import ResponseCache
from bot.log import get_logger
from bot.memory import RedisMemory
from bot.ordering import ConversationOrder
from bot.pipeline import (
    AlreadyAnswered,
    Generate,
    LoadMemory,
    Pipeline,
    RecordTranscript,
    Retrieve,
    SaveMemory,
    SendReply,
    ShowTyping,
    SkipBlank,
)
from bot.protocols import CommandOption, CommandSpec, Generator, Retriever, Sender
from bot.ratelimit import Paced, RateLimiter, SendPacer
from bot.ratelimit_inbound import InboundLimiter, InboundRateLimit
from bot.redis_pool import Coalesced, WaitingConnectionPool
from bot.rendezvous import ReplyRendezvous
from bot.transcript import Transcript
from knowledge.embedders import Embedder, LocalEmbedder
from knowledge.store import ChunkStore

log = get_logger("bot.runtime")

#: Redis connections per process: every worker holds one while blocked in XREADGROUP, and
#: ingress takes one per request in flight.
REDIS_CONNECTIONS = 512

#: Socket timeout of every Redis command, seconds (redis-py's default differs by version).
#: Blocking commands stay well below it: XREADGROUP blocks 0.25 s, a reply wait 1 s per step.
REDIS_SOCKET_TIMEOUT_S = 10.0

#: Connections of the shared round trips' client (`Connections.round_trips`): each set of
#: shared round trips has one round trip out at a time, and a process has two such sets.
ROUND_TRIP_CONNECTIONS = 8

#: How long a generated answer is kept for retries of its message, seconds.
ANSWER_TTL_S = 24 * 3600

#: The platform command that asks a question (Discord needs it registered with its option).
ASK_COMMAND = CommandSpec(
    name="ask", description="Ask a question about the knowledge base",
    options=(CommandOption("question", "your question", "string", True),),
    usage="/ask <question>")


async def reset_connection(conn: asyncpg.Connection) -> None:
    """What the Postgres pool runs when a connection is released: a ROLLBACK when a borrower
    left a transaction open (it was cancelled mid-transaction), else nothing.

    asyncpg's default reset runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL` on every release: four statements (a round trip) per borrow, for session state
    this project never keeps (no LISTEN, cursors, session-level SET or advisory locks on pooled
    connections: `SET LOCAL` only, inside transactions; the migration lock uses its own
    connection).
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


@dataclass(frozen=True)
class Connections:
    """The process's clients: a Postgres pool (pgvector registered; at most 10
    connections), Redis (a pool of `REDIS_CONNECTIONS` that waits when all are in use) and one
    HTTP session."""

    pool: asyncpg.Pool
    redis: Redis
    http: aiohttp.ClientSession
    #: the shared round trips' client (`State.coalesced`): its connections have no socket
    #: timeout, `Coalesced` bounds each round trip as a whole (bot/redis_pool.py)
    round_trips: Redis


@dataclass(frozen=True)
class State:
    """The components that own the state in Redis and Postgres, one owner for each piece."""

    store: ChunkStore
    inbox: Inbox
    order: ConversationOrder
    rendezvous: ReplyRendezvous
    memory: RedisMemory
    answers: AnswerStore
    transcript: Transcript
    inbound_limiter: InboundLimiter
    coalesced: Coalesced  # the hot commands' shared round trips


@dataclass(frozen=True)
class Engine:
    """What turns a message into a reply. `max_text_chars`: the longest message text
    accepted (the webhook refuses more, the length rail too)."""

    generator: Generator
    guardrails: Guardrails
    actions: Registry
    action_runner: ActionRunner
    platforms: tuple[PlatformAdapter, ...]
    console: ConsoleAdapter
    senders: Mapping[str, Sender]
    max_text_chars: int
    pipeline: Pipeline


async def connect(database_url: str, redis_url: str, resources: AsyncExitStack
                  ) -> Connections:
    """Open the Postgres pool, Redis and the HTTP session, each registered on `resources`.

    Raises:
        ServiceUnavailable: Redis cannot be reached (only the error's type is named: a
            malformed URL's message may quote part of its password).
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=10, init=register_vector, timeout=10,
        reset=reset_connection)
    resources.push_async_callback(pool.close)
    try:
        # under load a command waits (up to 10 s) for a free connection instead of failing
        # at once (redis-py's default pool raises past its maximum)
        redis_pool = WaitingConnectionPool.from_url(
            redis_url, max_connections=REDIS_CONNECTIONS, timeout=10, socket_connect_timeout=5,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S, health_check_interval=30)
        redis = Redis.from_pool(redis_pool)  # owns the pool: aclose() closes it
        resources.push_async_callback(redis.aclose)
        await redis.ping()
        round_trips = Redis.from_pool(WaitingConnectionPool.from_url(
            redis_url, max_connections=ROUND_TRIP_CONNECTIONS, timeout=10,
            socket_connect_timeout=5, socket_timeout=None, health_check_interval=30))
        resources.push_async_callback(round_trips.aclose)
    except (RedisError, OSError, ValueError) as exc:
        raise ServiceUnavailable(f"REDIS_URL: cannot connect ({type(exc).__name__})"
                                 ) from None
    http = aiohttp.ClientSession()
    resources.push_async_callback(http.close)
    return Connections(pool, redis, http, round_trips)


async def build_state(settings: Settings, connections: Connections) -> State:
    """The state owners over `connections`; creates the inbox's consumer group if missing."""
    s, redis, prefix = settings, connections.redis, settings.bot_key_prefix
    # one set of shared round trips for the process's hot commands (bot/redis_pool.py)
    shared = Coalesced(connections.round_trips, timeout_s=REDIS_SOCKET_TIMEOUT_S)
    inbox = Inbox(redis, prefix, dedupe_ttl_s=s.bot_dedupe_ttl_s, max_backlog=s.bot_max_backlog,
                  coalesced=shared)
    await inbox.ensure_group()
    return State(
        store=ChunkStore(connections.pool),
        inbox=inbox,
        order=ConversationOrder(redis, prefix, ttl_ms=int(s.bot_claim_idle_s * 1000),
                                coalesced=shared),
        rendezvous=ReplyRendezvous(redis, prefix, result_ttl_s=s.webhook_reply_ttl_s,
                                   coalesced=shared),
        memory=RedisMemory(redis, prefix, turns=s.memory_turns, ttl_s=s.memory_ttl_s,
                           coalesced=shared),
        answers=AnswerStore(redis, prefix, ttl_s=ANSWER_TTL_S,
                            answered_ttl_s=s.bot_dedupe_ttl_s, coalesced=shared),
        transcript=Transcript(connections.pool),
        inbound_limiter=InboundLimiter.from_settings(redis, s, coalesced=shared),
        coalesced=shared)


def llm_router(settings: Settings, redis: Redis) -> LLMRouter:
    """A router over the configured providers (`LLM_PROVIDERS` or the single-provider
    settings), with the Redis response cache unless `LLM_CACHE_TTL_S=0`.

    Raises:
        ConfigError: a provider's API key variable is unset.
    """
    s = settings
    cache = ResponseCache(redis, s.bot_key_prefix, s.llm_cache_ttl_s) \
        if s.llm_cache_ttl_s > 0 else None
    return LLMRouter(s.providers(), retries=s.llm_retries,
                     backoff_initial_s=s.llm_backoff_initial_s,
                     backoff_max_s=s.llm_backoff_max_s,
                     retry_after_max_s=s.llm_retry_after_max_s,
                     breaker_failures=s.llm_breaker_failures,
                     breaker_cooldown_s=s.llm_breaker_cooldown_s, cache=cache,
                     api_keys=s.provider_api_keys())


async def build_generator(settings: Settings, redis: Redis, resources: AsyncExitStack
                          ) -> Generator:
    """The model behind the router when an LLM is configured (closed by `resources`), else
    the extractive answerer."""
    if not settings.llm_configured:
        return ExtractiveGenerator()
    # the tokenizer table takes a moment to load: not on the event loop, not per message
    await asyncio.to_thread(count_tokens, "")
    generator = ChatGenerator(llm_router(settings, redis), temperature=settings.llm_temperature,
                              max_tokens=settings.llm_max_tokens)
    resources.push_async_callback(generator.close)
    return generator


async def build_engine(settings: Settings, connections: Connections, state: State,
                       resources: AsyncExitStack, embedder: Embedder, retriever: Retriever
                       ) -> Engine:
    """Platforms, senders, generator, guardrails, actions and the pipeline. The guardrails
    share `embedder` when it is the local int8 MiniLM; `retriever` serves retrieval and the
    actions. The platforms and the guardrails are closed by `resources`."""
    s, redis, prefix = settings, connections.redis, settings.bot_key_prefix
    generator = await build_generator(s, redis, resources)
    policy = GuardrailPolicy.load(s.guardrails_policy)
    max_text_chars = policy.input.max_chars or s.bot_max_text_chars
    actions, actions_policy = load_actions(s)
    commands = (ASK_COMMAND, *[command_spec(a) for a in actions])
    limiter = state.inbound_limiter
    platforms = build_platforms(s, AdapterDeps(
        state.inbox, redis, prefix, connections.http, commands=commands,
        rendezvous=state.rendezvous, max_text_chars=max_text_chars,
        limit=limiter.check_inbound if limiter.enabled else None))
    resources.push_async_callback(stop_platforms, platforms)
    senders: dict[str, Sender] = {p.name: p.sender for p in platforms}
    if s.bot_send_pacing:  # sends wait for the platform's rate-limit buckets (Redis)
        pacer = SendPacer(RateLimiter(redis, prefix))
        for sender in senders.values():
            if isinstance(sender, Paced):
                sender.pacer = pacer
    router = generator.router if isinstance(generator, ChatGenerator) else None
    # the rails share the runtime's MiniLM when it is the same model (int8 ONNX)
    shared = embedder.embed_blocking if isinstance(embedder, LocalEmbedder) \
        and s.embedding_backend is EmbeddingBackend.ONNX else None
    guardrails = build_guardrails(policy, router, max_text_chars=max_text_chars, embed=shared)
    resources.callback(guardrails.close)
    action_runner = ActionRunner(
        actions, Permissions(actions_policy, senders), AuditLog(connections.pool), redis,
        prefix, ActionServices(state.memory, retriever, state.transcript, connections.http))
    answers = state.answers
    pipeline = Pipeline([
        AlreadyAnswered(answers),
        InboundRateLimit(limiter, senders),
        RouteAction(action_runner, answers),
        SkipBlank(),
        LoadMemory(state.memory),
        ShowTyping(senders),
        InputRails(guardrails),
        Retrieve(retriever, s.retrieval_top_k),
        CheckPassages(guardrails),
        Generate(generator, answers, redis, prefix, senders=senders,
                 stream_interval_s=s.llm_stream_edit_interval_s
                 if s.llm_stream and s.llm_configured else None,
                 draft_transform=guardrails.redact_draft,
                 tools=toolbox_factory(action_runner) if router is not None else None,
                 # the output rails keep the railed answer; kept before them only when they
                 # may call the model (a crash or failure there would pay for it twice)
                 keep_before_rails=not guardrails.output_rails
                 or guardrails.output_calls_model),
        OutputRails(guardrails, answers),
        RecordTranscript(state.transcript),
        SendReply(senders, answers),
        # after the send: memory holds only exchanges whose answer went out
        SaveMemory(state.memory),
    ], timeout_s=s.bot_message_timeout_s)
    return Engine(generator=generator, guardrails=guardrails, actions=actions,
                  action_runner=action_runner, platforms=tuple(platforms),
                  console=console(platforms), senders=senders,
                  max_text_chars=max_text_chars, pipeline=pipeline)


async def stop_platforms(platforms: Sequence[PlatformAdapter]) -> None:
    """Close every platform's connections and clients (safe when never started)."""
    for platform in platforms:
        try:
            await platform.stop()
        except Exception as exc:
            log.warning("platform adapter did not stop cleanly", platform=platform.name,
                        error=type(exc).__name__)
