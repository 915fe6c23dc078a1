"""The HTTP server bounds how long a request may take to arrive and how many connections one
peer may hold (issue 12, finding 6: slowloris), while honest requests go through."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.fakes.bot_server import envelope


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def _closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bytes | None:
    """What the server sent before closing, or None if it kept the connection open."""
    try:
        async with asyncio.timeout(within_s):
            return await reader.read()
    except TimeoutError:
        return None


async def test_unfinished_headers_are_cut_off(server_factory: Callable[..., Any]) -> None:
    srv = await server_factory(workers=0, bot_http_header_timeout_s=1.0)
    slow = [await _open(srv.url) for _ in range(5)]
    for _, writer in slow:
        writer.write(b"POST /webhooks/support HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
    silent_reader, silent_writer = await _open(srv.url)  # sends nothing at all
    results = await asyncio.gather(*(_closed_by_server(r, 10) for r, _ in slow),
                                   _closed_by_server(silent_reader, 10))
    assert all(result is not None for result in results), results
    for _, writer in [*slow, (None, silent_writer)]:
        writer.close()
    status, _ = await srv.post(envelope(id="honest"))  # the server still serves
    assert status == 202


async def test_an_unfinished_body_gets_408(server_factory: Callable[..., Any]) -> None:
    srv = await server_factory(workers=0, bot_http_body_timeout_s=1.0)
    reader, writer = await _open(srv.url)
    writer.write(b"POST /webhooks/support HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 100\r\n\r\n{\"id\":")
    await writer.drain()
    response = await _closed_by_server(reader, 10)
    writer.close()
    assert response is not None and response.startswith(b"HTTP/1.1 408"), response
    assert await srv.rt.inbox.backlog() == 0


async def test_an_unfinished_upload_to_a_streaming_route_is_cut_off(
        server_factory: Callable[..., Any]) -> None:
    """The console's upload reads its own body (larger than BOT_MAX_BODY_BYTES): the guard
    does not read it first, but still closes a connection whose body stops arriving."""
    token = "admin-token-0123456789"
    srv = await server_factory(workers=0, bot_http_body_timeout_s=1.0, admin_token=token,
                               bot_max_body_bytes=1024)
    reader, writer = await _open(srv.url)
    writer.write(b"POST /admin/api/documents HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: Bearer " + token.encode() + b"\r\n"
                 b"Content-Type: multipart/form-data; boundary=b\r\n"
                 b"Content-Length: 100000\r\n\r\n--b\r\n"
                 b'Content-Disposition: form-data; name="file"; filename="a.md"\r\n\r\n# A')
    await writer.drain()
    assert await _closed_by_server(reader, 10) is not None
    writer.close()
    # an honest upload larger than BOT_MAX_BODY_BYTES goes through the same route
    form = aiohttp.FormData()
    form.add_field("file", b"# Notes\n\n" + b"The pump runs at night. " * 200,
                   filename="notes.md", content_type="text/markdown")
    async with aiohttp.ClientSession() as http, http.post(
            srv.url + "/admin/api/documents", data=form,
            headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 201, await response.text()


async def test_connections_per_peer_are_bounded(server_factory: Callable[..., Any]) -> None:
    srv = await server_factory(workers=0, bot_http_max_connections_per_peer=4)
    conns = [await _open(srv.url) for _ in range(10)]
    results = await asyncio.gather(*(_closed_by_server(r, 2) for r, _ in conns))
    still_open = sum(1 for result in results if result is None)
    assert still_open == 4, results
    for _, writer in conns:
        writer.close()
        await writer.wait_closed()
    for _ in range(50):  # until the server has seen the closes
        try:
            status, _ = await srv.post(envelope(id="after-the-flood"))
            break
        except aiohttp.ServerDisconnectedError:
            await asyncio.sleep(0.1)
    assert status == 202


async def test_the_server_header_names_no_version(server_factory: Callable[..., Any]) -> None:
    srv = await server_factory(workers=0)
    async with aiohttp.ClientSession() as session, session.get(srv.url + "/health/live") as r:
        assert r.headers["Server"] == "Switchboard"
