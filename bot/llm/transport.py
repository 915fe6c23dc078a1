"""Chat completion requests over aiohttp, with the `openai` SDK's error types.

The router sends every chat request here instead of through the SDK client: the SDK (httpx,
its request options and response models) cost 1.1 ms of CPU per request against 0.2 ms for the
same POST over aiohttp, measured in one process against a loopback server, and a quarter of the
worker's profile samples on a model answer. The wire format is the OpenAI Chat Completions API
(https://platform.openai.com/docs/api-reference/chat/create): `POST <base_url>/chat/completions`
with a JSON body; with `"stream": true` the answer is server-sent events
(https://html.spec.whatwg.org/multipage/server-sent-events.html), `data: {chunk}` lines ending
with `data: [DONE]`.

Failures raise what the SDK raises for them, so the router's retry policy and the worker's
transient-error test read them the same way: `openai.APITimeoutError` (no byte for `timeout_s`),
`openai.APIConnectionError` (refused, reset, cut off mid-body), an `openai.APIStatusError`
subclass per HTTP status (`RateLimitError` for 429, `InternalServerError` for 5xx, ...; its
`response` carries the headers, so `Retry-After` is honoured), `openai.APIError` for an error
event inside a stream, and `openai.APIResponseValidationError` for a 2xx body that is not a JSON
object.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp
import httpx
import openai
import yarl

#: The SDK's exception class for each HTTP status (5xx: InternalServerError).
_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError, 401: openai.AuthenticationError,
    403: openai.PermissionDeniedError, 404: openai.NotFoundError, 409: openai.ConflictError,
    422: openai.UnprocessableEntityError, 429: openai.RateLimitError,
}


class ChatTransport:
    """POSTs chat requests to one OpenAI-compatible endpoint.

    Args:
        base_url: the endpoint's `/v1` URL (None: https://api.openai.com/v1).
        api_key: sent as `Authorization: Bearer <key>`; never logged.
        timeout_s: connecting (name lookup, proxy, TLS included), and each wait for the next
            bytes of the answer (as the SDK's timeout: a stream may take longer in all, as
            long as it keeps sending).
    """

    def __init__(self, base_url: str | None, api_key: str, timeout_s: float) -> None:
        self.url = (base_url or "https://api.openai.com/v1").rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}",
                         "Content-Type": "application/json", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=None, connect=timeout_s,
                                              sock_connect=timeout_s, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        #: the proxy for this URL from HTTPS_PROXY / HTTP_PROXY / NO_PROXY, read once: a
        # session with trust_env=True looks them up, and reads ~/.netrc, on a worker thread
        # for every request (4% of the worker's CPU on a model answer)
        self.proxy, self._proxy_auth = _env_proxy(self.url)

    def _http(self) -> aiohttp.ClientSession:
        # made on first use: a session belongs to the running event loop
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, proxy=self.proxy, proxy_auth=self._proxy_auth,
                connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True))
        return self._session

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """One non-streamed completion: the response's JSON object.

        Raises:
            openai.APIError: see the module docstring.
        """
        try:
            async with self._http().post(self.url, data=json.dumps(body),
                                         headers=self._headers) as response:
                raw = await response.read()
                if not 200 <= response.status < 300:  # (a 3xx aiohttp did not follow)
                    raise _status_error(self._request(), response, raw)
        except TimeoutError:
            raise openai.APITimeoutError(self._request()) from None
        except aiohttp.ClientError as exc:
            raise openai.APIConnectionError(request=self._request()) from exc
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise openai.APIResponseValidationError(
                _response(self._request(), response, raw), raw.decode(errors="replace")[:200],
                message="the completion is not a JSON object")
        return data

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """A streamed completion: each server-sent chunk's JSON object, until `[DONE]` (or the
        end of the body).

        Raises:
            openai.APIError: see the module docstring; a chunk holding `error` raises
                `openai.APIError` with it.
        """
        request = self._request
        try:
            async with self._http().post(self.url, data=json.dumps(body),
                                         headers=self._headers) as response:
                if not 200 <= response.status < 300:
                    raise _status_error(request(), response, await response.read())
                async for data in _events(response.content):
                    if data == "[DONE]":
                        return
                    if not data.strip():
                        continue  # an empty event (a keep-alive of some servers)
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise openai.APIError("a stream event is not JSON", request(),
                                              body=None) from None
                    if not isinstance(chunk, dict):
                        raise openai.APIError("a stream event is not a JSON object",
                                              request(), body=None)
                    if error := chunk.get("error"):  # (as the SDK: a null error is none)
                        message = error.get("message") if isinstance(error, dict) else None
                        raise openai.APIError(
                            message if isinstance(message, str) and message
                            else "error in the stream", request(), body=error)
                    yield chunk
        except TimeoutError:
            raise openai.APITimeoutError(request()) from None
        except aiohttp.ClientError as exc:
            raise openai.APIConnectionError(request=request()) from exc

    def _request(self) -> httpx.Request:
        """The request an SDK error names (built only for an error: it costs as much as the
        rest of a call's client-side bookkeeping)."""
        return httpx.Request("POST", self.url)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def _env_proxy(url: str) -> tuple[str | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for `url` (as curl and httpx read it: a `NO_PROXY`
    entry may carry a port), or None; its credentials apart, so that no error message, log
    line or trace span quotes them (aiohttp's errors quote the proxy URL)."""
    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or "") or urllib.request.proxy_bypass(
            parts.netloc):
        return None, None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy:
        return None, None
    parsed = yarl.URL(proxy)
    if parsed.user is None:
        return proxy, None
    return str(parsed.with_user(None)), aiohttp.BasicAuth(parsed.user, parsed.password or "")


async def _events(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The data of each server-sent event (its `data:` lines joined by newlines). Lines end
    with CRLF, LF or a lone CR, as the format allows."""
    data: list[str] = []
    pending = b""
    async for piece in content.iter_any():
        pending += piece
        # a CR at the very end may be the first half of a CRLF: keep it for the next piece
        cut = len(pending) - 1 if pending.endswith(b"\r") else len(pending)
        *lines, rest = _LINE_END.split(pending[:cut])
        pending = rest + pending[cut:]
        for line in lines:
            if (event := _line(line.decode("utf-8", errors="replace"), data)) is not None:
                yield event
    for line in _LINE_END.split(pending.rstrip(b"\r")) if pending else ():
        if (event := _line(line.decode("utf-8", errors="replace"), data)) is not None:
            yield event
    if data:
        yield "\n".join(data)


_LINE_END = re.compile(rb"\r\n|\r|\n")


def _line(line: str, data: list[str]) -> str | None:
    """Take one line of the stream into `data`; the finished event's data at a blank line."""
    if not line:
        if data:
            event = "\n".join(data)
            data.clear()
            return event
        return None
    if line.startswith("data:"):
        data.append(line[5:].removeprefix(" "))
    return None


def _response(request: httpx.Request, response: aiohttp.ClientResponse,
              raw: bytes) -> httpx.Response:
    return httpx.Response(response.status, headers=list(response.headers.items()),
                          content=raw, request=request)


def _status_error(request: httpx.Request, response: aiohttp.ClientResponse,
                  raw: bytes) -> openai.APIStatusError:
    """The SDK's error for an HTTP error answer; its message names the status only (bodies may
    echo the prompt)."""
    try:
        body: object = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")
    if isinstance(body, dict) and "error" in body:
        body = body["error"]
    status = response.status
    cls = _STATUS_ERRORS.get(status, openai.InternalServerError if status >= 500
                             else openai.APIStatusError)
    return cls(f"Error code: {status}", response=_response(request, response, raw), body=body)
