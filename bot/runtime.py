"""The composition root: builds every component from `Settings`, and owns their lifecycle.

This is the one module of `bot/` that names concrete adapters, the store and the embedder.
`async with Runtime(settings) as rt:` starts the embedded services when no URL is set,
connects, migrates, and builds the pipeline; leaving the block stops workers, closes
connections and leaves the embedded services (stopping them if no other process uses them).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from types import TracebackType

import aiohttp
import asyncpg
from pgvector.asyncpg import register_vector
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from actions.arguments import command_spec
from actions.audit import AuditLog
from actions.loading import load_actions
from actions.policy import Permissions
from actions.runner import ActionRunner, ActionServices
from actions.stage import RouteAction
from actions.tools import toolbox_factory
from adapters.base import AdapterDeps
from adapters.registry import build_platforms, console
from bot.answers import AnswerStore
from bot.config import EmbeddingBackend, RetrievalMode, Settings
from bot.errors import ServiceUnavailable
from bot.guardrails.policy import GuardrailPolicy, build_guardrails
from bot.guardrails.stages import CheckPassages, InputRails, OutputRails
from bot.inbox import Inbox
from bot.llm import ChatGenerator, ExtractiveGenerator, LLMRouter, count_tokens
from bot.llm.cache import ResponseCache
from bot.log import SecretRedactor, get_logger
from bot.memory import RedisMemory
from bot.messages import NOTICE_META, Message, Passage, Reply
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
from bot.rendezvous import ReplyRendezvous
from bot.services import EmbeddedPostgres, EmbeddedValkey
from bot.transcript import Transcript
from bot.worker import Worker
from knowledge.embedders import Embedder, LocalEmbedder, build_embedder
from knowledge.ingest import Ingestor
from knowledge.retrieve import KnowledgeRetriever
from knowledge.store import ChunkStore
from migrations import runner

log = get_logger("bot.runtime")

#: Redis connections per process: every worker holds one while blocked in XREADGROUP, and
#: ingress takes one per request in flight.
REDIS_CONNECTIONS = 512

#: Socket timeout of every Redis command, seconds (redis-py's default differs by version).
#: Blocking commands stay well below it: XREADGROUP blocks 0.25 s, a reply wait 1 s per step.
REDIS_SOCKET_TIMEOUT_S = 10.0

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


#: What the author of a dead-lettered message is told, where the platform can be reached.
DEAD_LETTER_TEXT = ("Sorry, I could not answer this message: something I depend on kept "
                    "failing. It has been set aside for the operators; please try again later.")

#: How long a generated answer is kept for retries of its message, seconds.
ANSWER_TTL_S = 24 * 3600


#: The platform command that asks a question (Discord needs it registered with its option).
ASK_COMMAND = CommandSpec(
    name="ask", description="Ask a question about the knowledge base",
    options=(CommandOption("question", "your question", "string", True),),
    usage="/ask <question>")


def embedding_dim(settings: Settings) -> int:
    """The vector length the configured embedder produces (384 for the local MiniLM)."""
    if settings.embedding_backend is EmbeddingBackend.OPENAI:
        return settings.embedding_dim
    return 384


class Runtime:
    """Everything one process needs. Attributes are valid inside `async with`."""

    def __init__(self, settings: Settings, *, migrate: bool | None = None) -> None:
        """`migrate`: apply pending migrations at start (default BOT_MIGRATE_ON_START); when
        False, start-up fails with ServiceUnavailable while any migration is pending."""
        self.settings = settings
        self._migrate = settings.bot_migrate_on_start if migrate is None else migrate
        self._pg: EmbeddedPostgres | None = None
        self._valkey: EmbeddedValkey | None = None
        self._embedder: Embedder | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._stop_workers = asyncio.Event()
        self.workers: list[Worker] = []
        self._redactor = SecretRedactor(settings.secret_values())
        #: every resource is registered here as it is built, and closed in reverse order
        self._resources = AsyncExitStack()

    # lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        try:
            await self._start()
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._close()

    def _service_urls(self) -> tuple[str, str]:
        """The services' URLs, starting (or joining) the embedded ones where no URL is set;
        each embedded server is left (stopped by its last user) when the runtime closes."""
        s = self.settings
        if s.database_url is not None:
            database_url = s.database_url.get_secret_value()
        else:
            self._pg = EmbeddedPostgres(s.bot_data_dir)
            self._resources.push_async_callback(asyncio.to_thread, self._pg.stop)
            database_url = self._pg.start()
        if s.redis_url is not None:
            redis_url = s.redis_url.get_secret_value()
        else:
            self._valkey = EmbeddedValkey(s.bot_data_dir)
            self._resources.push_async_callback(asyncio.to_thread, self._valkey.stop)
            redis_url = self._valkey.start()
        return database_url, redis_url

    async def _start(self) -> None:
        s = self.settings
        database_url, redis_url = await asyncio.to_thread(self._service_urls)
        try:
            conn = await asyncpg.connect(database_url, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ServiceUnavailable(f"DATABASE_URL: cannot connect ({exc})") from None
        except Exception as exc:  # asyncpg raises varied types for a malformed DSN
            raise ServiceUnavailable(f"DATABASE_URL: cannot connect ({type(exc).__name__})"
                                     ) from None
        try:  # migrate first: the pool's connections need the vector type to exist
            if self._migrate:
                applied = await runner.migrate(conn, embedding_dim=embedding_dim(s))
            else:
                applied = []
                if pending := await runner.pending(conn):
                    raise ServiceUnavailable(
                        f"DATABASE_URL: migrations {pending} are not applied and "
                        "BOT_MIGRATE_ON_START is false: run `bot migrate` first")
                await runner.check_dim(conn, embedding_dim(s))
        finally:
            await conn.close()
        if applied:
            log.info("migrations applied", versions=applied)
        self.pool: asyncpg.Pool = await asyncpg.create_pool(
            database_url, min_size=1, max_size=10, init=register_vector, timeout=10,
            reset=reset_connection)
        self._resources.push_async_callback(self.pool.close)
        try:
            # a blocking pool: under load a command waits (up to 10 s) for a free connection
            # instead of failing at once (redis-py's default pool raises past 100)
            pool = BlockingConnectionPool.from_url(redis_url, max_connections=REDIS_CONNECTIONS,
                                                   timeout=10, socket_connect_timeout=5,
                                                   socket_timeout=REDIS_SOCKET_TIMEOUT_S,
                                                   health_check_interval=30)
            self.redis = Redis.from_pool(pool)  # owns the pool: aclose() closes it
            self._resources.push_async_callback(self.redis.aclose)
            await self.redis.ping()
        except (RedisError, OSError, ValueError) as exc:
            # only the type: a malformed URL's message may quote part of its password
            raise ServiceUnavailable(f"REDIS_URL: cannot connect ({type(exc).__name__})"
                                     ) from None
        prefix = s.bot_key_prefix
        self.http = aiohttp.ClientSession()
        self._resources.push_async_callback(self.http.close)
        self.store = ChunkStore(self.pool)
        self.inbox = Inbox(self.redis, prefix, dedupe_ttl_s=s.bot_dedupe_ttl_s,
                           max_backlog=s.bot_max_backlog)
        await self.inbox.ensure_group()
        self.order = ConversationOrder(self.redis, prefix,
                                       ttl_ms=int(s.bot_claim_idle_s * 1000))
        self.rendezvous = ReplyRendezvous(self.redis, prefix,
                                          result_ttl_s=s.webhook_reply_ttl_s)
        self.memory = RedisMemory(self.redis, prefix, turns=s.memory_turns, ttl_s=s.memory_ttl_s)
        self.generator = await self._build_generator()
        if isinstance(self.generator, ChatGenerator):
            self._resources.push_async_callback(self.generator.close)
        self.retriever: Retriever = _LazyRetriever(self)
        self.inbound_limiter = InboundLimiter.from_settings(self.redis, s)
        policy = GuardrailPolicy.load(s.guardrails_policy)
        #: the longest message text accepted: the webhook refuses more, the length rail too
        self.max_text_chars = policy.input.max_chars or s.bot_max_text_chars
        self.actions, actions_policy = load_actions(s)
        commands = (ASK_COMMAND, *[command_spec(a) for a in self.actions])
        self.platforms = build_platforms(s, AdapterDeps(
            self.inbox, self.redis, prefix, self.http, commands=commands,
            rendezvous=self.rendezvous, max_text_chars=self.max_text_chars,
            limit=self.inbound_limiter.check_inbound if self.inbound_limiter.enabled else None))
        self._resources.push_async_callback(self.stop_platforms)
        self.console = console(self.platforms)
        self.senders: dict[str, Sender] = {p.name: p.sender for p in self.platforms}
        if s.bot_send_pacing:  # sends wait for the platform's rate-limit buckets (Redis)
            pacer = SendPacer(RateLimiter(self.redis, prefix))
            for sender in self.senders.values():
                if isinstance(sender, Paced):
                    sender.pacer = pacer
        router = self.generator.router if isinstance(self.generator, ChatGenerator) else None
        # the rails share the runtime's MiniLM when it is the same model (int8 ONNX)
        embedder = self.embedder
        shared = embedder.embed_blocking if isinstance(embedder, LocalEmbedder) \
            and s.embedding_backend is EmbeddingBackend.ONNX else None
        self.guardrails = build_guardrails(policy, router, max_text_chars=self.max_text_chars,
                                           embed=shared, embed_batch_size=s.embedding_batch_size)
        self._resources.callback(self.guardrails.close)
        self.transcript = Transcript(self.pool)
        self.action_runner = ActionRunner(
            self.actions, Permissions(actions_policy, self.senders), AuditLog(self.pool),
            self.redis, prefix, ActionServices(self.memory, self.retriever, self.transcript,
                                               self.http))
        self.answers = answers = AnswerStore(self.redis, prefix, ttl_s=ANSWER_TTL_S,
                                             answered_ttl_s=s.bot_dedupe_ttl_s)
        self.pipeline = Pipeline([
            AlreadyAnswered(answers),
            InboundRateLimit(self.inbound_limiter, self.senders),
            RouteAction(self.action_runner, answers),
            SkipBlank(),
            LoadMemory(self.memory),
            ShowTyping(self.senders),
            InputRails(self.guardrails),
            Retrieve(self.retriever, s.retrieval_top_k),
            CheckPassages(self.guardrails),
            Generate(self.generator, answers, self.redis, prefix, senders=self.senders,
                     stream_interval_s=s.llm_stream_edit_interval_s
                     if s.llm_stream and s.llm_configured else None,
                     draft_transform=self.guardrails.redact_draft,
                     tools=toolbox_factory(self.action_runner) if router is not None else None),
            OutputRails(self.guardrails, answers),
            RecordTranscript(self.transcript),
            SendReply(self.senders, answers),
            # after the send: memory holds only exchanges whose answer went out
            SaveMemory(self.memory),
        ], timeout_s=s.bot_message_timeout_s)

    async def _build_generator(self) -> Generator:
        s = self.settings
        if not s.llm_configured:
            return ExtractiveGenerator()
        # the tokenizer table takes a moment to load: not on the event loop, not per message
        await asyncio.to_thread(count_tokens, "")
        return ChatGenerator(self.llm_router(), temperature=s.llm_temperature,
                             max_tokens=s.llm_max_tokens)

    def llm_router(self) -> LLMRouter:
        """A router over the configured providers (`LLM_PROVIDERS` or the single-provider
        settings), with the Redis response cache unless `LLM_CACHE_TTL_S=0`.

        Raises:
            ConfigError: a provider's API key variable is unset.
        """
        s = self.settings
        cache = ResponseCache(self.redis, s.bot_key_prefix, s.llm_cache_ttl_s) \
            if s.llm_cache_ttl_s > 0 else None
        return LLMRouter(s.providers(), retries=s.llm_retries,
                         backoff_initial_s=s.llm_backoff_initial_s,
                         backoff_max_s=s.llm_backoff_max_s,
                         retry_after_max_s=s.llm_retry_after_max_s,
                         breaker_failures=s.llm_breaker_failures,
                         breaker_cooldown_s=s.llm_breaker_cooldown_s, cache=cache,
                         api_keys=s.provider_api_keys())

    async def start_platforms(self) -> None:
        """Open the platforms' long-lived connections (gateway, polling, Socket Mode)."""
        for platform in self.platforms:
            await platform.start()
            log.info("platform adapter started", platform=platform.name)

    async def stop_platforms(self) -> None:
        """Close every platform's connections and clients (safe when never started)."""
        for platform in self.platforms:
            try:
                await platform.stop()
            except Exception as exc:
                log.warning("platform adapter did not stop cleanly", platform=platform.name,
                            error=type(exc).__name__)

    async def _close(self) -> None:
        """Stop the workers, then close what was built, newest first (the platforms'
        clients before the HTTP session they use, Redis and Postgres last, then the embedded
        servers); what was never built was never registered."""
        await self.stop_workers()  # workers still send through the platforms' clients
        if self._embedder is not None:  # built lazily, by whoever asked first
            await self._embedder.aclose()
        await self._resources.aclose()

    # lazily built parts -----------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = build_embedder(self.settings)
        return self._embedder

    def knowledge_retriever(self, mode: RetrievalMode | None = None) -> KnowledgeRetriever:
        """A retriever over the knowledge base in `mode` (default: `RETRIEVAL_MODE`)."""
        s = self.settings
        return KnowledgeRetriever(self.store, self.embedder, mode or s.retrieval_mode,
                                  s.retrieval_dense_weight)

    def ingestor(self) -> Ingestor:
        s = self.settings
        return Ingestor(self.store, self.embedder, chunk_tokens=s.chunk_tokens,
                        overlap_tokens=s.chunk_overlap_tokens, max_bytes=s.ingest_max_bytes,
                        fetch_timeout_s=s.ingest_fetch_timeout_s,
                        batch_size=s.embedding_batch_size)

    async def warm_up(self) -> None:
        """Load the local embedding model now (it serves retrieval and the guardrails), so the
        first message does not wait for it; a remote embedder is left alone. Best effort: a
        failure is logged and the model loads at its first use instead."""
        if not isinstance(self.embedder, LocalEmbedder):
            return
        try:
            await self.embedder.embed(["warm-up"])
        except Exception as exc:
            log.warning("embedding model not loaded at start-up", error=type(exc).__name__)

    @staticmethod
    async def pending_migrations(conn: asyncpg.Connection) -> list[int]:
        """The migration versions not yet applied on `conn`'s database (for readiness)."""
        return await runner.pending(conn)

    # workers ----------------------------------------------------------------------------------

    async def _tell_dead_letter(self, message: Message, _error: str) -> None:
        """Tell the author that their message will not be answered (best effort, bounded)."""
        sender = self.senders.get(message.conversation.platform)
        if sender is None:
            return
        await asyncio.wait_for(sender.send(Reply(
            message_id=message.id, conversation=message.conversation, text=DEAD_LETTER_TEXT,
            meta={**message.meta, NOTICE_META: "dead_letter"})), timeout=15)

    def start_workers(self, count: int) -> None:
        """Start `count` worker tasks on this event loop."""
        s = self.settings
        self._stop_workers.clear()
        for index in range(count):
            worker = Worker(self.inbox, self.pipeline, self.order, index=index,
                            claim_idle_s=s.bot_claim_idle_s, max_deliveries=s.bot_max_deliveries,
                            turn_messages=s.bot_turn_messages, turn_s=s.bot_turn_s,
                            max_retry_age_s=s.bot_max_retry_age_s,
                            on_dead_letter=self._tell_dead_letter, redact=self._redactor.redact,
                            answers=self.answers)
            self.workers.append(worker)
            self._workers.append(asyncio.create_task(worker.run(self._stop_workers),
                                                     name=f"worker-{index}"))

    async def stop_workers(self, grace_s: float | None = None) -> None:
        """Let workers finish the message in hand (up to `grace_s`, default
        BOT_SHUTDOWN_GRACE_S), then cancel them; a cancelled message stays pending."""
        if not self._workers:
            return
        if grace_s is None:
            grace_s = self.settings.bot_shutdown_grace_s
        self._stop_workers.set()
        done, pending = await asyncio.wait(self._workers, timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("worker ended with an error", error=repr(task.exception()))
        self._workers.clear()
        self.workers.clear()


class _LazyRetriever:
    """Builds the knowledge retriever (and loads the embedding model) on first use, so commands
    that never retrieve do not pay for loading the model."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._inner: KnowledgeRetriever | None = None

    async def retrieve(self, query: str, top_k: int) -> list[Passage]:
        if self._inner is None:
            self._inner = self._runtime.knowledge_retriever()
        return await self._inner.retrieve(query, top_k)
