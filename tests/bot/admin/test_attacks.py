"""Attacks on the console over real HTTP, on the real app (`bot run`'s, with Postgres and
Redis) and a real `bot run` process: odd values everywhere are a 4xx that stores nothing
(never a 500), uploads racing on one uri, HTML injection through every stored field,
login redirects, paths and methods that try to skip the login, CSRF variants, the read-only
role, peers that claim a proxy's headers, and secrets in pages, headers and logs."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
from yarl import URL

from bot.messages import Conversation, Filtered, Message, Reply, Source
from bot.protocols import Generated
from bot.transcript import Transcript
from tests.bot.admin.test_app import ADMIN, MARKDOWN, READER, _bearer, _csrf, _login, _upload
from tests.conftest import subprocess_env
from tests.fakes.bot_server import Server
from tests.fakes.processes import BotProcess

#: HTML that runs script wherever it is not escaped, quoting out of any attribute first.
PAYLOAD = "\"'><script>alert(1)</script><img src=x onerror=alert(2)>"
TRACES = "http://jaeger.test:16686/trace/{trace_id}"


async def _server(server_factory: Callable[..., Any], **overrides: Any) -> Server:
    settings = {"admin_token": ADMIN, "admin_readonly_token": READER,
                "admin_upload_max_bytes": 64 * 1024, **overrides}
    server: Server = await server_factory(workers=0, **settings)
    return server


async def _raw(url: str, method: str, target: str, headers: str = "", *,
               local: str = "127.0.0.1") -> tuple[int, str, bytes]:
    """(status, Location, body) of one request from the address `local`, sent byte for byte
    (no client normalizes the target; header values go as UTF-8)."""
    parts = URL(url)
    assert parts.host is not None and parts.port is not None
    reader, writer = await asyncio.open_connection(parts.host, parts.port,
                                                   local_addr=(local, 0))
    writer.write(f"{method} {target} HTTP/1.1\r\nHost: {parts.host}:{parts.port}\r\n{headers}"
                 "Connection: close\r\nContent-Length: 0\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    location = next((line.split(":", 1)[1].strip() for line in lines[1:]
                     if line.lower().startswith("location:")), "")
    return int(lines[0].split()[1]), location, body


async def _count(server: Server, table: str) -> int:
    count: int = await server.rt.pool.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
    return count


def _cursor(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


NUL = "%00"

#: Requests of a reader whose values no page accepts: (target, expected status).
ODD_READS: list[tuple[str, int]] = [
    *((f"/admin/conversations?{name}=a{NUL}b", 400)
      for name in ("platform", "channel", "user", "q", "tag")),
    *((f"/admin/api/conversations?{name}=a{NUL}b", 400) for name in ("user", "q")),
    # times whose UTC is outside what a datetime holds (year 0, year 10000)
    ("/admin/conversations?since=0001-01-01T00:00:00%2B14:00", 400),
    ("/admin/conversations?since=9999-12-31T23:00:00-05:00", 400),
    ("/admin/api/conversations?until=9999-12-31T23:00:00-05:00", 400),
    ("/admin/conversations?until=9999-12-31", 400),
    ("/admin/conversations?since=0000-01-01", 400),
    ("/admin/conversations?min_latency_ms=%C2%B2", 400),  # "²" is a digit to str.isdigit
    ("/admin/conversations?after=" + _cursor([0, "a\u0000b"]), 400),
    ("/admin/api/conversations?after=" + _cursor([0, "a\u0000b"]), 400),
    ("/admin/api/conversations?after=" + _cursor([2**62, "x"]), 400),
    ("/admin/api/conversations?limit=ten", 400),
    ("/admin/?days=" + "9" * 5000, 400),
    (f"/admin/conversations/a{NUL}b", 404),
    ("/admin/documents/99999999999999999999", 404),
    ("/admin/documents/9223372036854775808", 404),  # one more than a bigint holds
    ("/admin/documents/" + "9" * 5000, 404),
    ("/admin/api/documents/99999999999999999999", 404),
    (f"/admin/documents/by-uri?uri=a{NUL}b", 404),
    # odd but fine: web-search syntax never fails, far dates are just empty
    ("/admin/conversations?q=%26%7C!(%27%3A*", 200),
    ("/admin/conversations?q=%F0%9F%98%80&user=%E2%80%AE", 200),
    ("/admin/conversations?since=0001-01-01&until=0001-01-01", 200),
    ("/admin/conversations?since=9999-12-31", 200),
    ("/admin/api/conversations?limit=-1", 200),
]


async def test_odd_values_in_reads_are_a_4xx_never_a_500(server_factory: Callable[..., Any]
                                                         ) -> None:
    server = await _server(server_factory)
    wrong = []
    async with aiohttp.ClientSession(headers=_bearer(READER)) as http:
        for target, expected in ODD_READS:
            async with http.get(URL(server.url + target, encoded=True),
                                allow_redirects=False) as response:
                if response.status != expected:
                    wrong.append((target[:80], response.status, (await response.text())[:100]))
    assert wrong == []


async def test_odd_values_in_admin_actions_are_a_4xx_and_change_nothing(
        server_factory: Callable[..., Any]) -> None:
    server = await _server(server_factory)
    wrong = []
    async with aiohttp.ClientSession(headers=_bearer(ADMIN)) as http:
        for dead_letter in ("abc", "\x00", "1-1,2-2", "99999999999999999999-0", "+", "-",
                            "(1-0", "\u0661-\u0660"):
            async with http.post(server.url + "/admin/dead-letters/retry",
                                 data={"id": dead_letter}, allow_redirects=False) as response:
                if response.status != 400:
                    wrong.append(("retry", dead_letter, response.status))
        for method, target, status in (
                ("POST", f"/admin/conversations/a{NUL}b/review", 404),
                ("POST", "/admin/documents/99999999999999999999/forget", 404),
                ("DELETE", "/admin/api/documents/99999999999999999999", 404),
                ("DELETE", "/admin/api/documents/" + "9" * 5000, 404)):
            async with http.request(method, URL(server.url + target, encoded=True),
                                    data={"tags": "x"}, allow_redirects=False) as response:
                if response.status != status:
                    wrong.append((method, target[:60], response.status))
    assert wrong == []
    assert await _count(server, "admin_audit") == 0


def _multipart(*parts: str | bytes, boundary: str = "b0undary") -> tuple[bytes, dict[str, str]]:
    body = b"".join(p.encode() if isinstance(p, str) else p for p in parts)
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _file_part(data: bytes, filename: str = "a.md", name: str = "file") -> bytes:
    return (f'--b0undary\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: text/markdown\r\n\r\n').encode() + \
        data + b"\r\n"


def _text_part(name: str, value: bytes) -> bytes:
    return (f'--b0undary\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            ).encode() + value + b"\r\n"


END = "--b0undary--\r\n"

#: Uploads refused: (what, body and headers, status, words of the error).
BAD_UPLOADS = [
    ("NUL in the uri", _multipart(_text_part("uri", b"kb:a\x00b"), _file_part(MARKDOWN), END),
     400, "NUL"),
    ("uri beyond the index", _multipart(_text_part("uri", os.urandom(1800).hex().encode()),
                                        _file_part(MARKDOWN), END), 400, "uri"),
    ("uri part of 100 kB", _multipart(_text_part("uri", b"u" * 100_000), _file_part(MARKDOWN),
                                      END), 400, "uri"),
    ("uri not UTF-8", _multipart(_text_part("uri", b"kb:\xff\xfe"), _file_part(MARKDOWN), END),
     400, "malformed"),
    ("file name of 10 kB", _multipart(_file_part(MARKDOWN, "a" * 10_000 + ".md"), END),
     400, "malformed"),
    ("empty file", _multipart(_file_part(b""), END), 400, "empty"),
    ("two files", _multipart(_file_part(MARKDOWN, "one.md"),
                             _file_part(MARKDOWN + b"more\n", "two.md"), END), 400, "one"),
    ("no closing boundary", _multipart(_file_part(MARKDOWN, "a.md")[:-2]), 400, "malformed"),
    ("a boundary it never sends", _multipart(_file_part(MARKDOWN), END, boundary="other"),
     400, "malformed"),
    ("no file part", _multipart(_text_part("uri", b"kb:a"), END), 400, "file"),
    ("a JSON body", (b'{"file": "# x"}', {"Content-Type": "application/json"}), 400,
     "multipart"),
    ("a PDF named .md", _multipart(_file_part(
        (Path(__file__).parents[2] / "fixtures" / "corpus" /
         "python-try-and-with-statements.pdf").read_bytes(), "notes.md"), END),
     400, "not a text file"),
]


async def test_bad_uploads_are_a_clear_4xx_and_store_nothing(
        server_factory: Callable[..., Any]) -> None:
    server = await _server(server_factory, admin_upload_max_bytes=1024 * 1024)
    wrong = []
    async with aiohttp.ClientSession(headers=_bearer(ADMIN)) as http:
        for what, (body, headers), status, words in BAD_UPLOADS:
            async with http.post(server.url + "/admin/api/documents", data=body,
                                 headers=headers) as response:
                text = await response.text()
                if response.status != status or words not in text:
                    wrong.append((what, response.status, text[:150]))
    assert wrong == []
    assert await _count(server, "documents") == 0
    assert await _count(server, "admin_audit") == 0


async def test_the_uri_part_counts_after_the_file_and_file_names_stay_names(
        server_factory: Callable[..., Any]) -> None:
    server = await _server(server_factory)
    async with aiohttp.ClientSession(headers=_bearer(ADMIN)) as http:
        # curl -F file=@kettle.md -F uri=kb:kettle sends the uri after the file
        body, headers = _multipart(_file_part(MARKDOWN, "kettle.md"),
                                   _text_part("uri", b"kb:kettle"), END)
        async with http.post(server.url + "/admin/api/documents", data=body,
                             headers=headers) as response:
            assert response.status == 201, await response.text()
            assert (await response.json())["document"]["uri"] == "kb:kettle"
        body, headers = _multipart(_file_part(MARKDOWN, "../../etc/passwd"), END)
        async with http.post(server.url + "/admin/api/documents", data=body,
                             headers=headers) as response:
            assert response.status == 201
            assert (await response.json())["document"]["uri"] == "upload:passwd"


async def test_uploads_of_one_uri_at_once_keep_versions_and_chunks_consistent(
        server_factory: Callable[..., Any]) -> None:
    one = await _server(server_factory)
    other = await _server(server_factory)  # another process on the same database
    first = b"# Kettle\n\n" + b"Descale the kettle with vinegar. " * 120
    second = b"# Toaster\n\n" + b"Empty the crumb tray of the toaster. " * 120
    third = b"# Mixer\n\nClean the whisks.\n"

    async def upload(http: aiohttp.ClientSession, server: Server, data: bytes,
                     uri: str = "kb:same") -> int:
        async with http.post(server.url + "/admin/api/documents",
                             data=_upload(data, "same.md", uri=uri)) as response:
            return response.status

    async def stored() -> tuple[int, set[str]]:
        version = await one.rt.pool.fetchval(
            "SELECT version FROM documents WHERE source_uri = 'kb:same'")
        texts = await one.rt.pool.fetch(
            "SELECT c.text FROM chunks c JOIN documents d ON d.id = c.document_id "
            "WHERE d.source_uri = 'kb:same'")
        return version, {next((w for w in ("kettle", "toaster") if w in r["text"]), "other")
                         for r in texts}

    async with aiohttp.ClientSession(headers=_bearer(ADMIN)) as http:
        for server in (one, other):  # load each one's embedder first: the race is in storing
            assert await upload(http, server, third, "kb:warm-up") == 201
        for n, servers in enumerate(((one, one), (one, other))):
            assert await upload(http, one, third) == 201  # stored: neither of the two
            assert list(await asyncio.gather(upload(http, servers[0], first),
                                             upload(http, servers[1], second))) == [201, 201]
            version, kinds = await stored()
            # two changes, two versions; the chunks of one of them, not of both
            assert (version, len(kinds)) == (3 * n + 3, 1), servers
        assert list(await asyncio.gather(
            *(upload(http, s, first) for s in (one, other, one)))) == [201] * 3
        version, kinds = await stored()
        assert (version, kinds) in ((6, {"kettle"}), (7, {"kettle"}))
    assert await _count(one, "admin_audit") == 11


def _stored_injection(pool_conv: Conversation) -> tuple[Message, Reply, Generated]:
    message = Message(id="m" + PAYLOAD, conversation=pool_conv, user="user" + PAYLOAD,
                      text="text" + PAYLOAD)
    reply = Reply(message_id=message.id, conversation=pool_conv, text="reply" + PAYLOAD,
                  sources=(Source("javascript:alert(3)", "title" + PAYLOAD, 0.5,
                                  section="section" + PAYLOAD),))
    generated = Generated(text=reply.text, model="model" + PAYLOAD, tokens_in=1, tokens_out=2,
                          error="error" + PAYLOAD, trace_id="trace" + PAYLOAD)
    return message, reply, generated


class _Markup(HTMLParser):
    """Elements that run script, event handler attributes, and every URL of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.active: list[object] = []
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "img", "iframe", "object", "embed", "base", "meta"):
            if not ((tag == "meta" and ("charset", "utf-8") in attrs)
                    or ("name", "viewport") in attrs):
                self.active.append((tag, attrs))
        for name, value in attrs:
            if name.startswith("on") or (name == "style" and "url(" in (value or "")):
                self.active.append((tag, name, value))
            if name in ("href", "src", "action", "formaction", "xlink:href"):
                self.urls.append(value or "")


async def test_stored_and_reflected_html_is_escaped_and_links_stay_in_the_console(
        server_factory: Callable[..., Any]) -> None:
    server = await _server(server_factory, otel_traces_url_template=TRACES)
    pool = server.rt.pool
    conv = Conversation("webhook" + PAYLOAD, "channel" + PAYLOAD, "ws" + PAYLOAD,
                        thread="thread" + PAYLOAD)
    message, reply, generated = _stored_injection(conv)
    verdicts: list[dict[str, object]] = [
        {"action": "block" + PAYLOAD, "rail": "rail" + PAYLOAD, "reason": "why" + PAYLOAD,
         "score": 0.5, "message": ""},
        {"action": "block", "rail": "topic" + PAYLOAD, "reason": "", "score": None,
         "message": ""}]
    await Transcript(pool).record(
        message, reply, generated, 10, verdicts,
        filtered=(Filtered("javascript:alert(4)" + PAYLOAD, "reason" + PAYLOAD, 0.9, 5),),
        stage_ms={"stage" + PAYLOAD: 5})
    await pool.execute(
        "INSERT INTO action_runs (call_id, message_id, action, via, platform, channel, "
        "user_id, args, status, trace_id, duration_ms, error) VALUES ('c1', $1, $2, 'tool', "
        "'webhook', 'c', 'u', $3::jsonb, $4, 't', 1, $5)", message.id, "action" + PAYLOAD,
        json.dumps({"key" + PAYLOAD: "value" + PAYLOAD}), "ok" + PAYLOAD, "boom" + PAYLOAD)
    await pool.execute("UPDATE messages SET feedback = -1 WHERE direction = 'out'")
    await server.rt.redis.xadd(server.rt.inbox.dlq, {
        "m": message.to_json(), "error": "dead" + PAYLOAD, "entry_id": "1-1", "attempts": "3"})
    await server.rt.redis.xadd(server.rt.inbox.dlq, {
        "m": "not json" + PAYLOAD, "error": "", "entry_id": "1-2", "attempts": "1"})
    page_html = (b"<html><head><title>" + PAYLOAD.encode() + b"</title></head><body><h1>"
                 + PAYLOAD.encode() + b"</h1><p>The kettle descales in vinegar.</p></body>"
                 b"</html>")
    found = []
    async with aiohttp.ClientSession(headers=_bearer(ADMIN)) as http:
        async with http.post(server.url + "/admin/api/documents", data=_upload(
                page_html, "page" + PAYLOAD + ".html", "text/html",
                uri="javascript:alert(5)//" + PAYLOAD)) as response:
            assert response.status == 201, await response.text()
            document_id = (await response.json())["document"]["id"]
        q = quote(PAYLOAD)
        targets = [
            "/admin/?fresh=1", "/admin/conversations",
            "/admin/conversations?" + "&".join(f"{k}={q}" for k in (
                "platform", "channel", "user", "q", "tag")),
            "/admin/conversations/" + quote(conv.key, safe=""),
            "/admin/documents", f"/admin/documents/{document_id}", "/admin/dead-letters",
            f"/admin/documents?notice={q}", f"/admin/dead-letters?notice={q}",
            f"/admin/login?next=/admin/{q}", f"/admin/conversations?feedback={q}",
            f"/admin/conversations?since={q}", f"/admin/conversations/{q}"]
        for target in targets:
            async with http.get(URL(server.url + target, encoded=True),
                                allow_redirects=False) as response:
                body = await response.text()
                kind = response.headers["Content-Type"].split(";")[0]
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                if kind != "text/html":
                    assert kind in ("text/plain", "application/json"), target
                    continue
                markup = _Markup()
                markup.feed(body)
                elsewhere = [u for u in markup.urls
                             if not u.startswith(("/admin/", "?", TRACES.split("{")[0]))]
                if markup.active or elsewhere or response.status >= 500:
                    found.append((target, response.status, markup.active, elsewhere))
        async with http.get(server.url + "/admin/conversations/" + quote(conv.key, safe="")
                            ) as response:
            page = await response.text()
    assert found == []
    # what was stored is on the page, escaped: the test looked at the right page
    assert "title&#34;&#39;&gt;&lt;script&gt;" in page
    assert "/admin/documents/by-uri?uri=javascript%3Aalert%283%29" in page


async def test_a_link_from_elsewhere_cannot_put_a_notice_on_a_page(
        server_factory: Callable[..., Any]) -> None:
    server = await _server(server_factory)
    lure = "Your session expired: log in again at https://evil.example/admin"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await _login(http, server.url, ADMIN)
        for path in ("/admin/documents", "/admin/dead-letters"):
            for query in ({"notice": lure}, {"notice": lure, "sig": "x" * 43}):
                async with http.get(server.url + path, params=query) as response:
                    assert lure not in await response.text()
        # what an action did is still shown after it
        async with http.get(server.url + "/admin/dead-letters") as response:
            csrf = _csrf(await response.text())
        async with http.post(server.url + "/admin/dead-letters/retry",
                             data={"id": "1-0", "csrf": csrf}) as response:
            assert "requeued 0; not found: 1-0" in await response.text()
        async with http.post(server.url + "/admin/documents",
                             data=_upload(MARKDOWN, "kettle.md", csrf=csrf)) as response:
            assert "upload:kettle.md: version 1" in await response.text()


#: `next` values of the login form, none of which may lead out of the console.
NEXTS = ["//evil.example", "/\\evil.example", "https://evil.example", "https:evil.example",
         "%2F%2Fevil.example", "/%2F/evil.example", " //evil.example/admin/",
         "\x01//evil.example/admin/", "javascript:alert(1)//admin/", "\\\\evil.example",
         "/admin@evil.example", "/admin/..//evil.example", "/admin/%2e%2e//evil.example",
         "/admin/%2E./%2e%2E/evil", "/admin/../../etc", "/admin/%0d%0aSet-Cookie:x=1",
         "/admin/\x00"]


async def test_the_login_never_redirects_out_of_the_console(server_factory: Callable[..., Any]
                                                            ) -> None:
    server = await _server(server_factory)
    left = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for target in NEXTS:
            async with http.get(server.url + "/admin/login", params={"next": target}) as r:
                page = await r.text()
            shown = re.search(r'name="next" value="([^"]*)"', page)
            token = re.search(r'name="login_csrf" value="([^"]+)"', page)
            assert shown and token
            async with http.post(server.url + "/admin/login", allow_redirects=False, data={
                    "login_csrf": token.group(1), "token": ADMIN, "next": target}) as r:
                location = r.headers.get("Location", "")
                set_cookies = r.headers.getall("Set-Cookie", [])
            for where in (location, shown.group(1)):
                path = unquote(where)  # as a browser resolves it: "%2e%2e" is ".." too
                if not path.startswith("/admin/") or ".." in path.split("/") \
                        or "\\" in path or any(c in where for c in "\r\n"):
                    left.append((target, where))
            assert all(c.startswith("sb_admin=") for c in set_cookies)
    assert left == []


#: Paths and methods that try to reach a page without logging in.
SNEAKY = ["/admin/../admin/documents", "//admin/documents", "/ADMIN/documents",
          "/admin%2fdocuments", "/admin/login/../documents", "/admin/login/%2e%2e/documents",
          "/admin/login%2f..%2fdocuments", "/admin/static/../documents",
          "/admin/static/%2e%2e/documents", "/admin/./documents", "/admin/documents/",
          "/admin//documents", "/%61dmin/documents", "/admin/API/documents",
          "/admin/api//documents", "/admin/%2e%2e/admin/documents", "/admin/documents%00",
          "/admin\\documents", "/admin/login/", "/admin/documents;x", "/admin",
          "/admin/conversations/x/../../documents", "/admin/api/documents?x=/admin/login"]


async def test_no_path_or_method_reaches_a_page_without_a_login(
        server_factory: Callable[..., Any]) -> None:
    server = await _server(server_factory)
    async with aiohttp.ClientSession(headers=_bearer(ADMIN)) as http:
        await http.post(server.url + "/admin/api/documents", data=_upload(MARKDOWN, "k.md"))
    got_in = []
    for target in SNEAKY:
        for method in ("GET", "HEAD", "OPTIONS", "POST", "DELETE", "PUT"):
            for headers in ("", "Authorization: Bearer \r\n",
                            "Authorization: Basic " + base64.b64encode(
                                f"admin:{ADMIN}".encode()).decode() + "\r\n",
                            "Cookie: sb_admin=e30.x\r\n", "X-Forwarded-User: admin\r\n"):
                status, location, body = await _raw(server.url, method, target, headers)
                if status < 300 or status >= 500 or b"Kettle" in body or b"<table" in body \
                        or (location and not location.startswith("/admin/login")):
                    got_in.append((method, target, headers[:20], status, location))
    assert got_in == []
    assert await _count(server, "admin_audit") == 1  # the upload above, nothing else


async def test_forms_without_a_valid_csrf_token_or_from_elsewhere_are_refused(
        server_factory: Callable[..., Any]) -> None:
    server = await _server(server_factory)
    retry = server.url + "/admin/dead-letters/retry"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await _login(http, server.url, ADMIN)
        async with http.get(server.url + "/admin/documents") as response:
            csrf = _csrf(await response.text())
        good = {"id": "1-0", "csrf": csrf}
        refused = []
        for what, kwargs in (
                ("Origin: null", {"data": good, "headers": {"Origin": "null"}}),
                ("another site", {"data": good, "headers": {"Origin": "http://evil.example"}}),
                ("another port", {"data": good, "headers": {"Origin": "http://127.0.0.1:1"}}),
                ("X-Forwarded-Host from a client", {"data": good, "headers": {
                    "Origin": "http://evil.example", "X-Forwarded-Host": "evil.example"}}),
                ("two origins", {"data": good, "headers": [("Origin", server.url),
                                                           ("Origin", "http://evil.example")]}),
                ("Sec-Fetch-Site", {"data": good, "headers": {"Sec-Fetch-Site": "cross-site"}}),
                ("text/plain", {"data": f"id=1-0&csrf={csrf}",
                                "headers": {"Content-Type": "text/plain"}}),
                ("JSON", {"data": json.dumps(good),
                          "headers": {"Content-Type": "application/json"}}),
                ("token in the query", {"data": {"id": "1-0"}, "params": {"csrf": csrf}}),
                ("token as a header", {"data": {"id": "1-0"},
                                       "headers": {"X-CSRF-Token": csrf}}),
                ("no token", {"data": {"id": "1-0"}}),
                ("a wrong token first", {"data": [("csrf", "x" * len(csrf)), ("csrf", csrf),
                                                  ("id", "1-0")]})):
            async with http.post(retry, allow_redirects=False, **kwargs) as response:
                if response.status != 403:
                    refused.append((what, response.status))
        # a multipart form: the token after the file is too late
        form = aiohttp.FormData()
        form.add_field("file", MARKDOWN, filename="late.md", content_type="text/markdown")
        form.add_field("csrf", csrf)
        async with http.post(server.url + "/admin/documents", data=form,
                             allow_redirects=False) as response:
            if response.status != 403:
                refused.append(("token after the file", response.status))
        async with http.delete(server.url + "/admin/api/documents/1", headers={
                "X-CSRF-Token": csrf, "Origin": "http://evil.example"}) as response:
            if response.status != 403:
                refused.append(("API from another site", response.status))
        async with http.post(retry, data=good, allow_redirects=False) as response:
            assert response.status == 303  # the same form with its token passes
    assert refused == []
    assert await server.rt.pool.fetchval(
        "SELECT count(*) FROM admin_audit WHERE action <> 'login'") == 1


async def test_a_read_only_session_changes_nothing(server_factory: Callable[..., Any]) -> None:
    server = await _server(server_factory)
    async with aiohttp.ClientSession(headers=_bearer(ADMIN)) as http:
        async with http.post(server.url + "/admin/api/documents",
                             data=_upload(MARKDOWN, "k.md")) as response:
            document_id = (await response.json())["document"]["id"]
    conv = Conversation("webhook", "ops")
    message, reply, generated = _stored_injection(conv)
    await Transcript(server.rt.pool).record(message, reply, generated, 10, [])
    await server.rt.redis.xadd(server.rt.inbox.dlq, {"m": message.to_json(), "error": "x",
                                                     "entry_id": "1-1", "attempts": "3"})
    (letter,) = await server.rt.inbox.dead_letters()
    allowed = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await _login(http, server.url, READER)
        async with http.get(server.url + "/admin/documents") as response:
            csrf = _csrf(await response.text())
        for method, path, kwargs in (
                ("POST", "/admin/dead-letters/retry", {"data": {"all": "1", "csrf": csrf}}),
                ("POST", "/admin/dead-letters/retry", {"data": {"id": letter.id,
                                                                "csrf": csrf}}),
                ("POST", f"/admin/documents/{document_id}/forget", {"data": {"csrf": csrf}}),
                ("POST", f"/admin/conversations/{quote(conv.key, safe='')}/review",
                 {"data": {"csrf": csrf, "tags": "x", "reviewed": "1"}}),
                ("POST", "/admin/documents", {"data": _upload(MARKDOWN, "r.md", csrf=csrf)}),
                ("POST", "/admin/api/documents", {"data": _upload(MARKDOWN, "r.md"),
                                                  "headers": {"X-CSRF-Token": csrf}}),
                ("DELETE", f"/admin/api/documents/{document_id}",
                 {"headers": {"X-CSRF-Token": csrf}})):
            async with http.request(method, server.url + path, allow_redirects=False,
                                    **kwargs) as response:
                if response.status != 403:
                    allowed.append((method, path, response.status))
        async with http.post(server.url + "/admin/logout", data={"csrf": csrf},
                             allow_redirects=False) as response:
            assert response.status == 303  # logging out is not a change to the bot
    assert allowed == []
    assert await server.rt.inbox.dead_letter_count() == 1
    assert await _count(server, "conversation_reviews") == 0
    assert await server.rt.pool.fetchval(
        "SELECT count(*) FROM documents WHERE deleted_at IS NULL") == 1
    assert await server.rt.pool.fetchval(
        "SELECT array_agg(action ORDER BY id) FROM admin_audit") == [
        "document.upload", "login", "logout"]


async def _from(url: str, address: str, method: str, path: str, headers: dict[str, str]
                ) -> tuple[int, list[str]]:
    """(status, Set-Cookie headers) of a request from the local address `address`."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as http, http.request(
            method, url + path, headers=headers, allow_redirects=False) as response:
        return response.status, response.headers.getall("Set-Cookie", [])


async def test_only_the_trusted_proxy_may_name_a_user_or_https(
        server_factory: Callable[..., Any]) -> None:
    server = await _server(server_factory, admin_trusted_user_header="X-Auth-User",
                           admin_trusted_proxies="127.0.0.2", admin_users="boss")
    api = "/admin/api/documents"
    forged = {"X-Forwarded-For": "127.0.0.2", "X-Real-IP": "127.0.0.2",
              "Forwarded": "for=127.0.0.2"}
    assert (await _from(server.url, "127.0.0.1", "GET", api,
                        {"X-Auth-User": "boss", **forged}))[0] == 401
    assert (await _from(server.url, "127.0.0.2", "GET", api, {"X-Auth-User": "boss"}))[0] == 200
    # two values are ambiguous: refused rather than picking one
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as http, http.get(
            server.url + api, headers=[("X-Auth-User", "reader"), ("X-Auth-User", "boss")]
    ) as response:
        assert response.status == 401
    # the proxy's other users are read-only, also those whose names fold to an admin's in
    # Unicode ("\u017f" is a long s, "\u212a" the Kelvin sign); the case of ASCII letters
    # does not count
    for user, refusal in (("reader", b"admin role"), ("bo\u017fs", b"admin role"),
                          ("\u212aoss", b"admin role"), ("BOSS", b"X-CSRF-Token")):
        got, _, body = await _raw(server.url, "DELETE", api + "/1",
                                  f"X-Auth-User: {user}\r\n", local="127.0.0.2")
        assert got == 403 and refusal in body, user
    # the session cookie is Secure only when the trusted proxy says the browser uses HTTPS
    for address, secure in (("127.0.0.1", False), ("127.0.0.2", True)):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(
                local_addr=(address, 0)), cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(server.url + "/admin/login") as response:
                token = _login_token(await response.text())
            async with http.post(server.url + "/admin/login", allow_redirects=False,
                                 headers={"X-Forwarded-Proto": "https"},
                                 data={"login_csrf": token, "token": ADMIN}) as response:
                (cookie,) = response.headers.getall("Set-Cookie")
        flags = {f.strip().lower() for f in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/admin"} <= flags
        assert ("secure" in flags) is secure, address


def _login_token(page: str) -> str:
    found = re.search(r'name="login_csrf" value="([^"]+)"', page)
    assert found
    return found.group(1)


async def test_a_rotated_token_ends_sessions_on_every_process(
        server_factory: Callable[..., Any]) -> None:
    before = await _server(server_factory, admin_session_secret="shared-session-secret")
    after = await _server(server_factory, admin_session_secret="shared-session-secret",
                          admin_token="rotated-admin-token-0123456789")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        await _login(http, before.url, ADMIN)
        cookie = next(c.value for c in http.cookie_jar if c.key == "sb_admin")
    for server, status in ((before, 200), (after, 401)):
        async with aiohttp.ClientSession() as http, http.get(
                server.url + "/admin/api/documents",
                headers={"Cookie": f"sb_admin={cookie}"}) as response:
            assert response.status == status


async def test_no_token_or_session_reaches_a_page_a_header_or_the_log(
        env_settings: dict[str, str], processes: list[BotProcess], tmp_path: Path) -> None:
    secret = "session-secret-0123456789"
    env = subprocess_env(env_settings, ADMIN_TOKEN=ADMIN, ADMIN_READONLY_TOKEN=READER,
                         ADMIN_SESSION_SECRET=secret, BOT_LOG_LEVEL="DEBUG")
    bot = BotProcess(env, tmp_path / "bot.log", "--workers", "0")
    processes.append(bot)
    await bot.ready()
    seen: list[str] = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(bot.url + "/admin/login") as response:
            token = _login_token(await response.text())
        async with http.post(bot.url + "/admin/login", data={
                "login_csrf": token, "token": READER + "-typo"}) as response:
            seen.append(await response.text())
        await _login(http, bot.url, ADMIN)
        cookies = [c.value for c in http.cookie_jar]
        for path in ("/admin/", "/admin/documents", "/admin/dead-letters",
                     "/admin/conversations", "/admin/documents/99999999999999999999",
                     "/admin/conversations?q=%00"):
            async with http.get(bot.url + path) as response:
                seen += [await response.text(), str(response.headers)]
    async with aiohttp.ClientSession(headers=_bearer(READER)) as http, http.get(
            bot.url + "/admin/api/documents") as response:
        seen += [await response.text(), str(response.headers)]
    log = bot.log.read_text()
    for value in (ADMIN, READER, secret, *cookies):
        assert value not in log
        assert not any(value in text for text in seen)
    assert "internal error" not in "".join(seen)
