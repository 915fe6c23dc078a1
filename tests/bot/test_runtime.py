"""The composition root's pools: what a borrow of a pooled connection costs."""

from __future__ import annotations

from bot.runtime import Runtime


async def test_pool_release_runs_no_reset_statements(runtime: Runtime) -> None:
    """A released connection is handed back as it is: no `RESET ALL; UNLISTEN *; ...` round
    trip per borrow (asyncpg's default), since nothing keeps session state."""
    async with runtime.pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
        raw = conn._con  # the pooled connection behind the proxy
        before = raw._protocol.queries_count
    async with runtime.pool.acquire() as again:
        assert again._con is raw
        assert raw._protocol.queries_count == before


async def test_pool_release_rolls_back_an_open_transaction(runtime: Runtime) -> None:
    """A borrower that leaves a transaction open (cancelled mid-way) does not hand the next
    borrower a connection inside it."""
    async with runtime.pool.acquire() as conn:
        await conn.execute("BEGIN")
        await conn.execute("CREATE TEMP TABLE left_open (x int)")
        raw = conn._con
    async with runtime.pool.acquire() as again:
        assert again._con is raw
        assert not again.is_in_transaction()
        assert await again.fetchval("SELECT to_regclass('pg_temp.left_open')") is None


async def test_the_rails_use_the_runtimes_embedder(runtime: Runtime) -> None:
    """One MiniLM per process: the injection rail embeds with the runtime's embedder (on its
    thread) instead of loading a second model."""
    from bot.guardrails.base import RailContext
    from knowledge.embedders import LocalEmbedder

    embedder = runtime.embedder
    assert isinstance(embedder, LocalEmbedder) and embedder._model is None
    rail = runtime.guardrails.injection
    assert rail is not None
    verdict = await rail.check("question 5?", RailContext())  # n-grams alone cannot settle it
    assert verdict.action == "allow"
    assert embedder._model is not None  # loaded by the rail's call


async def test_warm_up_loads_the_local_model(runtime: Runtime) -> None:
    """`bot run` loads the MiniLM at start-up (in the background), not at the first message."""
    from knowledge.embedders import LocalEmbedder

    embedder = runtime.embedder
    assert isinstance(embedder, LocalEmbedder) and embedder._model is None
    await runtime.warm_up()
    assert embedder._model is not None
