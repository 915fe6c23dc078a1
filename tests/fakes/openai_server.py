"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: `POST /v1/chat/completions`
records each request body and answers with a completion whose text is produced by `answer`
(default: "ANSWER to: <last user message> [1]"). `delay_s` slows every answer down.

Also: `"stream": true` answers as server-sent events (one chunk per word, a usage chunk when
`stream_options.include_usage`, then `[DONE]`); a request with `tools` is answered with a tool
call whose arguments come from `tool_arguments`, or, with `tool_calls`, with the calls that
function returns for the request (none, or `tool_choice` "none": a normal answer);
`fail_next(status, ...)` makes the next requests fail with that status (and optional
Retry-After) before answering normally."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Self

from aiohttp import web

EMBEDDING_DIM = 64


def hashed_embedding(text: str) -> list[float]:
    """A deterministic bag-of-words vector of EMBEDDING_DIM floats (not normalized): texts that
    share words point the same way."""
    vector = [0.0] * EMBEDDING_DIM
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % EMBEDDING_DIM] += 1.0
    return vector


def default_answer(request: dict[str, Any]) -> str:
    last_user = next(m["content"] for m in reversed(request["messages"]) if m["role"] == "user")
    return f"ANSWER to: {last_user} [1]"


class ToolScript:
    """A model that calls tools on cue, for `FakeOpenAI(answer=script.answer,
    tool_calls=script.tool_calls)`: the (name, arguments) calls queued on `plan` are made for
    the next request that offers tools; once tool results are in, it answers
    "Model says: <result> | <result>", and `plain_answer` when no tool ran."""

    def __init__(self, plain_answer: str = "Model answer") -> None:
        self.plan: list[tuple[str, Any]] = []
        self.plain_answer = plain_answer

    def tool_calls(self, body: dict[str, Any]) -> list[tuple[str, Any]]:
        if body["messages"][-1]["role"] == "tool":
            return []  # results are in: answer
        calls = list(self.plan)
        self.plan.clear()
        return calls

    def answer(self, body: dict[str, Any]) -> str:
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        return "Model says: " + " | ".join(results) if results else self.plain_answer


class LoopbackServer:
    """An aiohttp app served on 127.0.0.1 at a free port; subclasses add routes."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.port = 0

    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def start(self) -> Self:
        app = web.Application()
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class FakeOpenAI(LoopbackServer):
    def __init__(self, answer: Callable[[dict[str, Any]], str] = default_answer,
                 delay_s: float = 0.0,
                 tool_arguments: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 chunk_delay_s: float = 0.0,
                 tool_calls: Callable[[dict[str, Any]], list[tuple[str, Any]]] | None = None
                 ) -> None:
        self.answer = answer
        self.tool_calls = tool_calls
        self.chunk_delay_s = chunk_delay_s  # between streamed chunks
        self.delay_s = delay_s
        self.tool_arguments = tool_arguments
        self.faults: deque[tuple[int, dict[str, str]]] = deque()
        self.failed = 0  # requests answered with an injected fault
        self.requests: list[dict[str, Any]] = []
        self.embedding_requests: list[dict[str, Any]] = []
        self.models = ["gpt-4o-mini"]  # what GET /v1/models lists
        self.refused_key: str | None = None  # an API key GET /v1/models answers 401 to
        self.received = asyncio.Event()
        self._released = asyncio.Event()
        super().__init__()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.received.set()
        if self.delay_s:
            try:  # stop() releases requests still waiting, so shutdown is quick
                await asyncio.wait_for(self._released.wait(), self.delay_s)
            except TimeoutError:
                pass
        if self.faults:
            status, headers = self.faults.popleft()
            self.failed += 1
            return web.Response(status=status, headers=headers, content_type="application/json",
                                text=json.dumps({"error": {"message": f"injected {status}",
                                                           "type": "fake", "code": status}}))
        if body.get("tool_choice") == "none":
            pass  # OpenAI: the model answers and calls no tool
        elif body.get("tools") and self.tool_calls is not None:
            calls = self.tool_calls(body)
            if calls:
                return self._tool_calls(body, calls)
        elif body.get("tools") and self.tool_arguments is not None:
            return self._tool_call(body)
        text = self.answer(body)
        if body.get("stream"):
            return await self._stream(request, body, text)
        return web.Response(content_type="application/json", text=json.dumps({
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}))

    def fail_next(self, status: int, count: int = 1, retry_after: str | None = None) -> None:
        """Answer the next `count` chat requests with HTTP `status` (and `Retry-After`)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        self.faults.extend([(status, headers)] * count)

    async def _stream(self, request: web.Request, body: dict[str, Any], text: str
                      ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model", "fake")}
        words = re.findall(r"\S+\s*", text) or [""]
        for index, word in enumerate(words):
            delta = {"role": "assistant", "content": word} if index == 0 else {"content": word}
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(f"data: {json.dumps(final)}\n\n".encode())
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {**base, "choices": [], "usage": {
                "prompt_tokens": 11, "completion_tokens": len(words), "total_tokens": 11}}
            await response.write(f"data: {json.dumps(usage)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _tool_call(self, body: dict[str, Any]) -> web.Response:
        assert self.tool_arguments is not None
        name = body["tools"][0]["function"]["name"]
        arguments = json.dumps(self.tool_arguments(body))
        return web.Response(content_type="application/json", text=json.dumps({
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "tool_calls": [{
                    "id": f"call_{len(self.requests)}", "type": "function",
                    "function": {"name": name, "arguments": arguments}}]}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}))

    def _tool_calls(self, body: dict[str, Any], calls: list[tuple[str, Any]]) -> web.Response:
        """Answer with these (name, arguments) calls; arguments given as a str are sent as
        they are (for malformed JSON), others JSON-encoded."""
        n = len(self.requests)
        tool_calls = [{"id": f"call_{n}_{i}", "type": "function",
                       "function": {"name": name, "arguments": args if isinstance(args, str)
                                    else json.dumps(args)}}
                      for i, (name, args) in enumerate(calls)]
        return web.Response(content_type="application/json", text=json.dumps({
            "id": f"chatcmpl-{n}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None, "tool_calls": tool_calls}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}))

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self._chat),
                web.post("/v1/embeddings", self._embeddings),
                web.get("/v1/models", self._models)]

    async def _models(self, request: web.Request) -> web.Response:
        """`GET /v1/models` (https://platform.openai.com/docs/api-reference/models/list);
        401 when `refused_key` is the request's bearer token."""
        if self.refused_key and request.headers.get("Authorization") == \
                f"Bearer {self.refused_key}":
            return web.json_response({"error": {"message": "Incorrect API key provided",
                                                "type": "invalid_request_error",
                                                "code": "invalid_api_key"}}, status=401)
        return web.json_response({"object": "list", "data": [
            {"id": model, "object": "model", "created": 0, "owned_by": "fake"}
            for model in self.models]})

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.embedding_requests.append(body)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": hashed_embedding(t)}
                for i, t in enumerate(texts)]
        return web.Response(content_type="application/json", text=json.dumps({
            "object": "list", "data": data, "model": body.get("model", "fake"),
            "usage": {"prompt_tokens": 1, "total_tokens": 1}}))

    async def stop(self) -> None:
        self._released.set()
        await super().stop()


class CallbackRecorder(LoopbackServer):
    """A real HTTP server that records webhook callbacks (raw body and headers)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.calls: list[tuple[bytes, dict[str, str]]] = []
        self.arrival_s: list[float] = []  # time.perf_counter() of each call
        self.arrived = asyncio.Condition()
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self.arrived:
            self.arrival_s.append(time.perf_counter())
            self.calls.append((body, dict(request.headers)))
            self.arrived.notify_all()
        return web.Response(status=self.status)

    async def wait_for(self, count: int, timeout_s: float = 30.0) -> None:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.calls) >= count),
                                   timeout_s)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/callback", self._handle)]
