"""The console over HTTP, on the real app (`bot run`'s) and a real `bot admin` process: who
gets in, who may change what, CSRF, the documents API, uploads' limits."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes.bot_server import Server
from tests.fakes.processes import bot_command, free_port

ADMIN = "admin-token-0123456789"
READER = "reader-token-0123456789"
MARKDOWN = b"# Kettle\n\nThe kettle descales in vinegar for twelve minutes.\n"


async def _server(server_factory: Callable[..., Any], **overrides: Any) -> Server:
    settings = {"admin_token": ADMIN, "admin_readonly_token": READER,
                "admin_upload_max_bytes": 4096, **overrides}
    server: Server = await server_factory(workers=0, **settings)
    return server


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _upload(data: bytes, filename: str, content_type: str = "text/markdown",
            **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    form.add_field("file", data, filename=filename, content_type=content_type)
    return form


async def test_console_is_off_without_auth_settings(server_factory: Callable[..., Any]
                                                    ) -> None:
    server: Server = await server_factory(workers=0)
    async with aiohttp.ClientSession() as http:
        for path in ("/admin/", "/admin/api/documents", "/admin/login"):
            async with http.get(server.url + path, allow_redirects=False) as response:
                assert response.status == 404, path


async def test_unauthenticated_pages_redirect_to_login_and_the_api_answers_401(
        server_factory: Callable[..., Any]) -> None:
    server = await _server(server_factory)
    async with aiohttp.ClientSession() as http:
        async with http.get(server.url + "/admin/conversations?platform=slack",
                            allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"].startswith("/admin/login?next=")
        for method, path in (("GET", "/admin/api/documents"),
                             ("POST", "/admin/api/documents"),
                             ("DELETE", "/admin/api/documents/1"),
                             ("GET", "/admin/api/conversations")):
            async with http.request(method, server.url + path) as response:
                assert response.status == 401, (method, path)
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(server.url + "/admin/api/documents",
                            headers=_bearer("wrong-token-0123456789")) as response:
            assert response.status == 401
        async with http.post(server.url + "/admin/dead-letters/retry",
                             data={"all": "1"}, allow_redirects=False) as response:
            assert response.status == 401


async def test_documents_api_uploads_versions_lists_and_forgets(
        server_factory: Callable[..., Any]) -> None:
    server = await _server(server_factory)
    async with aiohttp.ClientSession() as http:
        url = server.url + "/admin/api/documents"
        async with http.post(url, data=_upload(MARKDOWN, "kettle.md"),
                             headers=_bearer(ADMIN)) as response:
            assert response.status == 201, await response.text()
            first = await response.json()
        document = first["document"]
        assert (document["uri"], document["version"], document["deleted_at"]) == \
            ("upload:kettle.md", 1, None)
        assert first["chunks_added"] == document["chunks"] >= 1
        changed = MARKDOWN + b"\nRinse it twice afterwards.\n"
        async with http.post(url, data=_upload(changed, "kettle.md"),
                             headers=_bearer(ADMIN)) as response:
            second = await response.json()
        assert second["document"]["id"] == document["id"]
        assert second["document"]["version"] == 2
        async with http.get(url, headers=_bearer(READER)) as response:
            listed = (await response.json())["documents"]
        assert [d["uri"] for d in listed] == ["upload:kettle.md"]
        async with http.delete(f"{url}/{document['id']}", headers=_bearer(READER)) as response:
            assert response.status == 403  # read-only
        async with http.delete(f"{url}/{document['id']}", headers=_bearer(ADMIN)) as response:
            assert response.status == 200 and await response.json() == {"forgotten": True}
        async with http.delete(f"{url}/{document['id']}", headers=_bearer(ADMIN)) as response:
            assert response.status == 404  # already forgotten
        async with http.get(url, headers=_bearer(ADMIN)) as response:
            assert (await response.json())["documents"] == []
        async with http.get(url + "?deleted=1", headers=_bearer(ADMIN)) as response:
            (gone,) = (await response.json())["documents"]
        assert gone["deleted_at"] is not None
    rows = await server.rt.pool.fetch(
        "SELECT actor, action, target FROM admin_audit ORDER BY id")
    assert [(r["actor"], r["action"], r["target"]) for r in rows] == [
        ("admin-token", "document.upload", "upload:kettle.md"),
        ("admin-token", "document.upload", "upload:kettle.md"),
        ("admin-token", "document.forget", "upload:kettle.md")]


@pytest.mark.parametrize(("data", "filename", "content_type", "status", "error"), [
    (b"x" * 5000, "big.md", "text/markdown", 413, "ADMIN_UPLOAD_MAX_BYTES"),
    (b"MZ\x90\x00binary", "tool.exe", "application/octet-stream", 400, "unsupported"),
    (b"\x00\x01\x02\x03" * 64, "notes.txt", "text/plain", 400, "not a text file"),
    (b"%PDF-1.4 broken", "broken.pdf", "application/pdf", 400, "cannot read"),
])
async def test_uploads_that_cannot_be_ingested_get_a_clear_4xx_and_store_nothing(
        server_factory: Callable[..., Any], data: bytes, filename: str, content_type: str,
        status: int, error: str) -> None:
    server = await _server(server_factory)
    async with aiohttp.ClientSession() as http, http.post(
            server.url + "/admin/api/documents", headers=_bearer(ADMIN),
            data=_upload(data, filename, content_type)) as response:
        assert response.status == status
        assert error in (await response.json())["error"]
    assert await server.rt.pool.fetchval("SELECT count(*) FROM documents") == 0


async def _login(http: aiohttp.ClientSession, url: str, token: str) -> None:
    async with http.get(url + "/admin/login") as response:
        page = await response.text()
    login_csrf = re.search(r'name="login_csrf" value="([^"]+)"', page)
    assert login_csrf
    async with http.post(url + "/admin/login", allow_redirects=False,
                         data={"login_csrf": login_csrf.group(1), "token": token,
                               "next": "/admin/documents"}) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/admin/documents"


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found
    return found.group(1)


async def test_form_posts_need_the_csrf_token_and_the_admin_role(
        server_factory: Callable[..., Any]) -> None:
    server = await _server(server_factory)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await _login(http, server.url, ADMIN)
        async with http.get(server.url + "/admin/documents") as response:
            csrf = _csrf(await response.text())
        upload = server.url + "/admin/documents"
        for fields in ({}, {"csrf": "0" * len(csrf)}):  # none, or a wrong one
            async with http.post(upload, data=_upload(MARKDOWN, "kettle.md", **fields),
                                 allow_redirects=False) as response:
                assert response.status == 403
        async with http.post(upload, data=_upload(MARKDOWN, "kettle.md", csrf=csrf),
                             allow_redirects=False) as response:
            assert response.status == 303
        retry = server.url + "/admin/dead-letters/retry"
        async with http.post(retry, data={"all": "1"}) as response:
            assert response.status == 403  # no CSRF token
        async with http.post(retry, data={"all": "1", "csrf": csrf},
                             allow_redirects=False) as response:
            assert response.status == 303
        # the API from a browser session needs the token as a header
        async with http.delete(server.url + "/admin/api/documents/1") as response:
            assert response.status == 403
    assert await server.rt.pool.fetchval("SELECT count(*) FROM documents") == 1

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await _login(http, server.url, READER)
        async with http.get(server.url + "/admin/documents") as response:
            page = await response.text()
        assert 'aria-label="Upload"' not in page and "Forget</button>" not in page
        csrf = _csrf(page)  # the log-out form's
        async with http.post(server.url + "/admin/dead-letters/retry",
                             data={"all": "1", "csrf": csrf}) as response:
            assert response.status == 403
        async with http.post(server.url + "/admin/documents",
                             data=_upload(MARKDOWN, "other.md", csrf=csrf)) as response:
            assert response.status == 403
        async with http.post(server.url + "/admin/documents/1/forget",
                             data={"csrf": csrf}) as response:
            assert response.status == 403
    assert await server.rt.pool.fetchval(
        "SELECT count(*) FROM documents WHERE deleted_at IS NULL") == 1


def test_admin_tokens_shorter_than_16_characters_are_refused() -> None:
    from bot.config import load_settings
    from bot.errors import ConfigError

    for name in ("admin_token", "admin_readonly_token"):
        with pytest.raises(ConfigError, match=f"{name.upper()}: .*at least 16 characters"):
            load_settings(_env_file=None, **{name: "short-token"})


async def test_pages_mask_configured_secrets_in_stored_errors(
        server_factory: Callable[..., Any]) -> None:
    """A dead letter's error quoting a setting's secret (a platform token in an exception's
    text) shows it masked."""
    from bot.messages import Conversation, Message

    secret = "correcthorsebatterystaple"  # plain words: no entropy rule would catch it
    server = await _server(server_factory, webhook_secret=secret)
    inbox = server.rt.inbox
    await inbox.enqueue(Message("webhook:support:d1", Conversation("webhook", "c1"), "u1",
                                "hello"))
    (delivery,) = await inbox.read("test-consumer", 1, 0)
    await inbox.dead_letter(delivery, f"401 from the API with key {secret}")
    async with aiohttp.ClientSession(headers=_bearer(READER)) as http, http.get(
            server.url + "/admin/dead-letters") as response:
        page = await response.text()
    assert "401 from the API with key" in page
    assert secret not in page


async def test_bad_filters_and_cursors_are_400_not_500(server_factory: Callable[..., Any]
                                                      ) -> None:
    server = await _server(server_factory)
    async with aiohttp.ClientSession(headers=_bearer(READER)) as http:
        for query in ("since=yesterday", "feedback=maybe", "min_latency_ms=-5",
                      "after=not-a-cursor"):
            async with http.get(server.url + "/admin/conversations?" + query) as response:
                assert response.status == 400, query
            async with http.get(server.url + "/admin/api/conversations?" + query) as response:
                assert response.status == 400, query
        async with http.get(server.url + "/admin/conversations/nope") as response:
            assert response.status == 404
        async with http.get(server.url + "/admin/?days=many") as response:
            assert response.status == 400


async def test_bot_admin_serves_the_console_to_loopback_without_login(
        env_settings: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "admin.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(bot_command("admin", "--no-browser", "--port", str(port)),
                                env={**os.environ, **env_settings}, stdout=sink, stderr=sink)
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                assert proc.poll() is None, log.read_text()
                try:
                    async with http.get(url + "/admin/", allow_redirects=False) as response:
                        status, page = response.status, await response.text()
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.2)
            else:
                pytest.fail("bot admin never answered")
            assert status == 200 and "local (admin)" in page
            # a name that is not loopback (DNS rebinding) is refused
            async with http.get(url + "/admin/", headers={"Host": "evil.example"},
                                allow_redirects=False) as response:
                assert response.status in (303, 401, 403)
        assert f"admin console: {url}/admin/" in log.read_text()
    finally:
        proc.terminate()
        assert proc.wait(20) == 0

