"""ChatTransport against a real loopback HTTP server that is slow, streams slowly, hangs up,
answers errors and garbage: each failure must come out as the `openai` SDK's error type (which
the router's retry policy and the worker read), and a slow but live answer must come through."""

from __future__ import annotations

import asyncio
import contextlib
import json
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable

import openai
import pytest
from aiohttp import web

from bot.llm.failures import is_retryable, retry_after_s
from bot.llm.transport import ChatTransport

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COMPLETION = {"choices": [{"message": {"role": "assistant", "content": "hi"}}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/v1"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_sends_the_body_and_key_and_returns_the_json(serve: Callable[[Handler],
                                                                           Awaitable[str]]
                                                           ) -> None:
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.Response:
        seen["auth"] = request.headers["Authorization"]
        seen["body"] = await request.json()
        return web.json_response(COMPLETION)

    transport = ChatTransport(await serve(handler), "sk-test", timeout_s=5)
    try:
        assert await transport.complete({"model": "m", "messages": []}) == COMPLETION
    finally:
        await transport.aclose()
    assert seen == {"auth": "Bearer sk-test", "body": {"model": "m", "messages": []}}


async def _answering_after(serve: Callable[[Handler], Awaitable[str]], delay_s: float,
                           timeout_s: float) -> ChatTransport:
    """A transport to a model that answers after `delay_s` seconds."""
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(delay_s)
        return web.json_response(COMPLETION)

    return ChatTransport(await serve(handler), "k", timeout_s=timeout_s)


async def test_a_model_slower_than_every_client_default_still_answers(
        serve: Callable[[Handler], Awaitable[str]]) -> None:
    # 6 s: longer than redis-py's 5 s socket timeout; the transport waits timeout_s (8 s)
    transport = await _answering_after(serve, 6, timeout_s=8)
    try:
        assert (await transport.complete({}))["usage"]["completion_tokens"] == 1
    finally:
        await transport.aclose()


async def test_no_answer_within_timeout_is_the_sdks_timeout_error(
        serve: Callable[[Handler], Awaitable[str]]) -> None:
    transport = await _answering_after(serve, 1.5, timeout_s=0.5)
    try:
        with pytest.raises(openai.APITimeoutError) as caught:
            await transport.complete({})
    finally:
        await transport.aclose()
    assert is_retryable(caught.value)


async def test_a_server_that_hangs_up_mid_body_is_a_connection_error(
        serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "1000",
                                               "Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"choices": [')
        assert request.transport is not None
        request.transport.close()
        return response

    transport = ChatTransport(await serve(handler), "k", timeout_s=5)
    try:
        with pytest.raises(openai.APIConnectionError) as caught:
            await transport.complete({})
    finally:
        await transport.aclose()
    assert is_retryable(caught.value)


async def test_nobody_listening_is_a_connection_error() -> None:
    transport = ChatTransport("http://127.0.0.1:9/v1", "k", timeout_s=2)
    try:
        with pytest.raises(openai.APIConnectionError):
            await transport.complete({})
    finally:
        await transport.aclose()


@pytest.mark.parametrize(("status", "error", "retryable"), [
    (429, openai.RateLimitError, True), (503, openai.InternalServerError, True),
    (400, openai.BadRequestError, False), (401, openai.AuthenticationError, False),
    (418, openai.APIStatusError, False)])
async def test_error_statuses_are_the_sdks_error_types(
        serve: Callable[[Handler], Awaitable[str]], status: int,
        error: type[openai.APIStatusError], retryable: bool) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "the prompt was: secret"}},
                                 status=status, headers={"Retry-After": "7"})

    transport = ChatTransport(await serve(handler), "k", timeout_s=5)
    try:
        with pytest.raises(error) as caught:
            await transport.complete({})
    finally:
        await transport.aclose()
    assert type(caught.value) is error
    assert caught.value.status_code == status
    assert is_retryable(caught.value) is retryable
    assert retry_after_s(caught.value) == 7.0
    assert "secret" not in str(caught.value)  # the message names the status, not the body


async def test_a_body_that_is_not_a_json_object_is_a_validation_error(
        serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="<html>gateway</html>", content_type="text/html")

    transport = ChatTransport(await serve(handler), "k", timeout_s=5)
    try:
        with pytest.raises(openai.APIResponseValidationError):
            await transport.complete({})
    finally:
        await transport.aclose()


def _sse(*events: str) -> bytes:
    return "".join(f"{e}\r\n\r\n" for e in events).encode()


async def test_a_slow_stream_yields_each_chunk_until_done(
        serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": keep-alive comment\r\n\r\n")
        for word in ("one", "two"):
            await asyncio.sleep(0.6)  # each gap under timeout_s, the whole over it
            await response.write(_sse("data: " + json.dumps(
                {"choices": [{"delta": {"content": word}}]})))
        # one event's data over two lines (SSE joins them with a newline)
        await response.write(b'data: {"usage":\r\ndata: {"prompt_tokens": 1}}\r\n\r\n')
        await response.write(_sse("data: [DONE]", 'data: {"after": "done"}'))
        return response

    transport = ChatTransport(await serve(handler), "k", timeout_s=1.0)
    try:
        chunks = [c async for c in transport.stream({})]
    finally:
        await transport.aclose()
    assert chunks == [{"choices": [{"delta": {"content": "one"}}]},
                      {"choices": [{"delta": {"content": "two"}}]},
                      {"usage": {"prompt_tokens": 1}}]


async def test_a_stream_that_stalls_or_reports_an_error_raises(
        serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def stalls(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_sse('data: {"choices": []}'))
        await asyncio.sleep(1.5)
        return response

    async def reports(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_sse('data: {"error": {"message": "overloaded"}}'))
        return response

    stalled = ChatTransport(await serve(stalls), "k", timeout_s=0.5)
    failed = ChatTransport(await serve(reports), "k", timeout_s=5)
    try:
        with pytest.raises(openai.APITimeoutError):
            _ = [c async for c in stalled.stream({})]
        with pytest.raises(openai.APIError, match="overloaded"):
            _ = [c async for c in failed.stream({})]
    finally:
        await stalled.aclose()
        await failed.aclose()


def test_the_environments_proxy_is_read_once_for_the_endpoint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert ChatTransport(None, "k", 5).proxy == "http://proxy.internal:3128"
    assert ChatTransport("http://127.0.0.1:8080/v1", "k", 5).proxy is None
    monkeypatch.delenv("HTTPS_PROXY")
    assert ChatTransport(None, "k", 5).proxy is None


ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def _https_proxy(monkeypatch: pytest.MonkeyPatch, handler: ConnectionHandler,
                       credentials: str = "") -> AsyncIterator[None]:
    """A loopback proxy served by `handler`, named by HTTPS_PROXY for the test."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    for name in ("https_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY",
                       f"http://{credentials}127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def test_a_proxy_that_never_answers_connect_is_a_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    done = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # the CONNECT request, never answered
        await done.wait()
        writer.close()

    async with _https_proxy(monkeypatch, hold):
        transport = ChatTransport("https://llm.example.invalid/v1", "k", timeout_s=0.5)
        try:
            with pytest.raises(openai.APITimeoutError) as caught:
                await asyncio.wait_for(transport.complete({}), 10)
        finally:
            await transport.aclose()
            done.set()
            await asyncio.sleep(0.05)
    assert is_retryable(caught.value)


async def test_proxy_credentials_are_sent_but_never_quoted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bytes] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    async with _https_proxy(monkeypatch, refuse, credentials="proxyuser:pr0xy-s3cret@"):
        transport = ChatTransport("https://llm.example.invalid/v1", "sk-key", timeout_s=5)
        try:
            with pytest.raises(openai.APIConnectionError) as caught:
                await transport.complete({})
        finally:
            await transport.aclose()
    assert b"Proxy-Authorization: Basic " in seen[0]
    told = "".join(traceback.format_exception(caught.value))
    assert "pr0xy-s3cret" not in told and "sk-key" not in told


async def test_a_stream_with_null_errors_and_bare_cr_line_ends_reads_as_the_sdk_does(
        serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ("A", "B"):
            chunk = json.dumps({"choices": [{"delta": {"content": word}}], "error": None})
            await response.write(f"data: {chunk}\r".encode())
            await response.write(b"\r")  # a lone CR ends the line, another the event
        await response.write(b"data: [DONE]\r\r")
        return response

    transport = ChatTransport(await serve(handler), "k", timeout_s=5)
    try:
        chunks = [c async for c in transport.stream({})]
    finally:
        await transport.aclose()
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["A", "B"]


async def test_a_stream_event_that_is_not_json_is_an_error(
        serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: <html>\n\n")
        return response

    transport = ChatTransport(await serve(handler), "k", timeout_s=5)
    try:
        with pytest.raises(openai.APIError, match="not JSON"):
            _ = [c async for c in transport.stream({})]
    finally:
        await transport.aclose()


def test_no_proxy_entries_may_name_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "vllm:8000")
    assert ChatTransport("http://vllm:8000/v1", "k", 5).proxy is None
    assert ChatTransport("http://vllm:9000/v1", "k", 5).proxy == "http://proxy.internal:3128"
