"""The composition root: builds every component from `Settings`, and owns their lifecycle.

With `bot.assembly` (its build functions), the one part of `bot/` that names concrete
adapters, the store and the embedder. `async with Runtime(settings) as rt:` starts the
embedded services when no URL is set, connects, migrates, and builds three frozen sets of
components, `rt.connections`, `rt.state` and `rt.engine` (each part is also an attribute of
its own: `rt.inbox`, `rt.pipeline`, ...); every resource is registered on one
`AsyncExitStack` as it is built, so leaving the block (or a failed start) stops the workers,
closes what was built newest first and leaves the embedded services (stopping them if no
other process uses them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AsyncExitStack
from types import TracebackType

import asyncpg
from redis.asyncio import Redis

from actions.registry import Registry
from actions.runner import ActionRunner
from adapters.base import PlatformAdapter
from adapters.console.adapter import ConsoleAdapter
from bot.answers import AnswerStore
from bot.assembly import (
    Connections,
    Engine,
    State,
    build_engine,
    build_state,
    connect,
    stop_platforms,
)
from bot.config import EmbeddingBackend, RetrievalMode, Settings
from bot.errors import ServiceUnavailable
from bot.guardrails.policy import Guardrails
from bot.inbox import Inbox
from bot.log import SecretRedactor, get_logger
from bot.memory import RedisMemory
from bot.messages import NOTICE_META, Message, Passage, Reply
from bot.ordering import ConversationOrder
from bot.pipeline import Pipeline
from bot.protocols import Generator, Retriever, Sender
from bot.ratelimit_inbound import InboundLimiter
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

#: What the author of a dead-lettered message is told, where the platform can be reached.
DEAD_LETTER_TEXT = ("Sorry, I could not answer this message: something I depend on kept "
                    "failing. It has been set aside for the operators; please try again later.")


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
        await self._migrate_database(database_url)
        self.connections: Connections = await connect(database_url, redis_url,
                                                      self._resources)
        self.state: State = await build_state(s, self.connections)
        self.retriever: Retriever = _LazyRetriever(self)
        self.engine: Engine = await build_engine(s, self.connections, self.state,
                                                 self._resources, self.embedder, self.retriever)

    async def _migrate_database(self, database_url: str) -> None:
        """Apply pending migrations (or, without BOT_MIGRATE_ON_START, refuse to start while
        any is pending), on a connection of its own: the pool's connections need the vector
        type to exist.

        Raises:
            ServiceUnavailable: the database cannot be reached, or migrations are pending.
        """
        s = self.settings
        try:
            conn = await asyncpg.connect(database_url, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ServiceUnavailable(f"DATABASE_URL: cannot connect ({exc})") from None
        except Exception as exc:  # asyncpg raises varied types for a malformed DSN
            raise ServiceUnavailable(f"DATABASE_URL: cannot connect ({type(exc).__name__})"
                                     ) from None
        try:
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

    # the built components, by name (read-only: built once, in `_start`) ----------------------

    @property
    def pool(self) -> asyncpg.Pool:
        return self.connections.pool

    @property
    def redis(self) -> Redis:
        return self.connections.redis

    @property
    def store(self) -> ChunkStore:
        return self.state.store

    @property
    def inbox(self) -> Inbox:
        return self.state.inbox

    @property
    def order(self) -> ConversationOrder:
        return self.state.order

    @property
    def rendezvous(self) -> ReplyRendezvous:
        return self.state.rendezvous

    @property
    def memory(self) -> RedisMemory:
        return self.state.memory

    @property
    def answers(self) -> AnswerStore:
        return self.state.answers

    @property
    def transcript(self) -> Transcript:
        return self.state.transcript

    @property
    def inbound_limiter(self) -> InboundLimiter:
        return self.state.inbound_limiter

    @property
    def generator(self) -> Generator:
        return self.engine.generator

    @property
    def guardrails(self) -> Guardrails:
        return self.engine.guardrails

    @property
    def actions(self) -> Registry:
        return self.engine.actions

    @property
    def action_runner(self) -> ActionRunner:
        return self.engine.action_runner

    @property
    def platforms(self) -> tuple[PlatformAdapter, ...]:
        return self.engine.platforms

    @property
    def console(self) -> ConsoleAdapter:
        return self.engine.console

    @property
    def senders(self) -> Mapping[str, Sender]:
        return self.engine.senders

    @property
    def max_text_chars(self) -> int:
        return self.engine.max_text_chars

    @property
    def pipeline(self) -> Pipeline:
        return self.engine.pipeline

    async def start_platforms(self) -> None:
        """Open the platforms' long-lived connections (gateway, polling, Socket Mode)."""
        for platform in self.platforms:
            await platform.start()
            log.info("platform adapter started", platform=platform.name)

    async def stop_platforms(self) -> None:
        """Close every platform's connections and clients (safe when never started)."""
        await stop_platforms(self.platforms)

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
        # the workers' round trips that fall together go together (bot/redis_pool.Coalesced)
        coalesced = self.state.coalesced
        finishing = coalesced.sibling(transaction=True)
        for index in range(count):
            worker = Worker(self.inbox, self.pipeline, self.order, index=index,
                            claim_idle_s=s.bot_claim_idle_s, max_deliveries=s.bot_max_deliveries,
                            turn_messages=s.bot_turn_messages, turn_s=s.bot_turn_s,
                            max_retry_age_s=s.bot_max_retry_age_s,
                            on_dead_letter=self._tell_dead_letter, redact=self._redactor.redact,
                            answers=self.answers, coalesced=coalesced, finishing=finishing)
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
