"""Sources beyond local files: http(s) URLs, and embeddings from an OpenAI-compatible endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from bot.config import Settings
from bot.runtime import Runtime
from tests.conftest import CORPUS
from tests.fakes.openai_server import EMBEDDING_DIM, FakeOpenAI, LoopbackServer


class DocServer(LoopbackServer):
    async def _doc(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "huge":
            return web.Response(body=b"x" * 5000, content_type="text/plain")
        path = CORPUS / name
        if not path.exists():
            raise web.HTTPNotFound()
        types = {".html": "text/html; charset=utf-8", ".md": "text/markdown",
                 ".pdf": "application/pdf"}
        return web.Response(body=path.read_bytes(), headers={
            "Content-Type": types.get(path.suffix, "application/octet-stream")})

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/docs/{name}", self._doc)]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/docs/{name}"


@pytest.fixture
async def docs() -> AsyncIterator[DocServer]:
    server = await DocServer().start()
    yield server
    await server.stop()


async def test_urls_are_ingested_by_content_type(make_settings: Callable[..., Settings],
                                                 docs: DocServer) -> None:
    async with Runtime(make_settings(ingest_max_bytes=100_000)) as rt:
        urls = [docs.url("zlib-usage-example.html"), docs.url("python-try-and-with-statements.pdf"),
                docs.url("missing.html"), docs.url("huge")]
        report = await rt.ingestor().ingest(urls)
        assert report.documents == 3  # the two documents and the 5,000-byte text
        failures = dict(report.failures)
        assert "HTTP 404" in failures[urls[2]]
        async with Runtime(make_settings(ingest_max_bytes=1000)) as small:
            small_report = await small.ingestor().ingest([urls[3]])
            assert "larger than INGEST_MAX_BYTES" in dict(small_report.failures)[urls[3]]
        hits = await rt.knowledge_retriever().retrieve(
            "What buffer size does the zlib example define as CHUNK?", 3)
        assert hits[0].uri == urls[0] and hits[0].title == "zlib Usage Example"
        titles = {r["source_uri"]: r["title"] for r in await rt.pool.fetch(
            "SELECT source_uri, title FROM documents")}
        assert titles[urls[1]] == "Python Language Reference: the try and with statements"


async def test_openai_compatible_embeddings_backend(make_settings: Callable[..., Settings],
                                                    fake_llm: FakeOpenAI) -> None:
    settings = make_settings(embedding_backend="openai", embedding_base_url=fake_llm.base_url,
                             embedding_model="fake-embed", embedding_dim=EMBEDDING_DIM)
    async with Runtime(settings) as rt:
        assert await rt.pool.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
            "'chunks'::regclass AND attname = 'embedding'") == f"vector({EMBEDDING_DIM})"
        report = await rt.ingestor().ingest([str(CORPUS / "platformdirs-readme.md")])
        assert report.chunks_added > 0 and fake_llm.embedding_requests
        assert {r["model"] for r in fake_llm.embedding_requests} == {"fake-embed"}
        hits = await rt.knowledge_retriever().retrieve("user_pictures_dir user_videos_dir", 1)
        assert "user_pictures_dir" in hits[0].text
        norm = await rt.pool.fetchval("SELECT vector_norm(embedding) FROM chunks LIMIT 1")
        assert norm == pytest.approx(1.0, abs=1e-5)  # normalized before storing
