"""The admin console's authentication (bot/admin/auth.py): bearer tokens, login sessions,
trusted proxy users, local mode, roles, CSRF, cross-origin refusal and security headers.

A tiny aiohttp app mounts the middleware with a page, an API route and an admin form; an
outer test middleware lets a request claim another peer address (`X-Test-Peer`) or HTTPS
(`X-Test-Scheme`), as a proxied or remote connection would be seen.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import ClientResponse, DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from bot.admin import auth as auth_module
from bot.admin.auth import (
    SECURITY_HEADERS,
    AdminAuth,
    Principal,
    Role,
    safe_next,
)
from bot.admin.middleware import admin_middleware, require_admin
from bot.config import load_settings

ADMIN, READONLY = "admin-secret-token", "readonly-secret-token"
SECRET = b"s" * 32
AUTH = web.AppKey("auth", AdminAuth)
Client = TestClient[Any, Any]


def make_auth(**overrides: Any) -> AdminAuth:
    values: dict[str, Any] = {
        "admin_token": ADMIN, "readonly_token": READONLY, "trusted_user_header": None,
        "trusted_proxies": [], "admin_users": [], "session_secret": SECRET,
        "session_ttl_s": 3600}
    values.update(overrides)
    return AdminAuth(**values)


@web.middleware
async def as_peer(request: web.Request, handler: Handler) -> web.StreamResponse:
    if peer := request.headers.get("X-Test-Peer"):
        request = request.clone(remote=peer)
    if scheme := request.headers.get("X-Test-Scheme"):
        request = request.clone(scheme=scheme)
    return await handler(request)


def _principal(request: web.Request) -> Principal:
    principal: Principal = request["principal"]
    return principal


async def page(request: web.Request) -> web.Response:
    p = _principal(request)
    return web.Response(text=f"hello {p.name} ({p.role}, {p.via})")


async def api(request: web.Request) -> web.Response:
    p = _principal(request)
    return web.json_response({"name": p.name, "role": str(p.role), "via": p.via})


async def csrf(request: web.Request) -> web.Response:
    return web.Response(text=request.config_dict[AUTH].csrf_token(_principal(request)))


async def action(request: web.Request) -> web.Response:
    principal = require_admin(request)
    form = await request.post()
    token = form.get("csrf")
    if not request.config_dict[AUTH].check_csrf(principal, token if isinstance(token, str)
                                                else None):
        raise web.HTTPForbidden(text="bad CSRF token")
    return web.Response(text="done")


async def login_form(request: web.Request) -> web.Response:
    auth = request.config_dict[AUTH]
    nonce, token = auth.login_csrf(request)
    response = web.Response(text=f'<input name="csrf" value="{token}">',
                            content_type="text/html")
    auth.set_login_cookie(response, request, nonce)
    return response


async def login_post(request: web.Request) -> web.StreamResponse:
    auth = request.config_dict[AUTH]
    form = await request.post()
    token = form.get("csrf")
    if not auth.check_login_csrf(request, token if isinstance(token, str) else None):
        raise web.HTTPForbidden(text="bad login form token")
    principal = auth.login(str(form.get("token", "")))
    if principal is None:
        return web.Response(status=401, text="wrong token")
    response = web.HTTPSeeOther(safe_next(str(form.get("next", ""))))
    auth.set_session(response, request, principal)
    return response


async def static(request: web.Request) -> web.Response:
    return web.Response(text="body {}", content_type="text/css")


async def public(request: web.Request) -> web.Response:
    return web.Response(text="public")


def make_app(auth: AdminAuth) -> web.Application:
    app = web.Application(middlewares=[as_peer, admin_middleware(auth)])
    app[AUTH] = auth
    app.add_routes([
        web.get("/admin/page", page), web.get("/admin/api/x", api),
        web.get("/admin/csrf", csrf), web.post("/admin/action", action),
        web.get("/admin/login", login_form), web.post("/admin/login", login_post),
        web.get("/admin/static/app.css", static), web.get("/public", public)])
    return app


@asynccontextmanager
async def serve(auth: AdminAuth) -> AsyncIterator[Client]:
    # no cookie jar: each test sends exactly the cookies it means to
    client: Client
    async with TestServer(make_app(auth)) as server, \
            TestClient(server, cookie_jar=DummyCookieJar()) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(client: Client, token: str, **headers: str) -> ClientResponse:
    """Fill in the login form; the response (303 with the session cookie when right)."""
    form = await client.get("/admin/login", headers=headers)
    nonce = form.cookies["sb_admin_login"].value
    match = re.search(r'value="([^"]+)"', await form.text())
    assert match is not None
    return await client.post(
        "/admin/login", allow_redirects=False,
        data={"token": token, "csrf": match.group(1), "next": "/admin/page?x=1"},
        headers={"Cookie": f"sb_admin_login={nonce}", **headers})


async def session_cookie(client: Client, token: str, **headers: str) -> str:
    response = await login(client, token, **headers)
    assert response.status == 303, await response.text()
    return response.cookies["sb_admin"].value


def cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"sb_admin={value}"}


def mocked(path: str = "/admin/page", *, remote: str | None = None,
           headers: dict[str, str] | None = None) -> web.Request:
    request = make_mocked_request("GET", path, headers=headers or {})
    return request.clone(remote=remote) if remote else request


def cookie_of(auth: AdminAuth, principal: Principal) -> str:
    response = web.Response()
    auth.set_session(response, mocked(), principal)
    return response.cookies["sb_admin"].value


# -- unauthenticated ------------------------------------------------------------------------

async def test_an_unauthenticated_page_redirects_to_the_login_form_with_next() -> None:
    async with serve(make_auth()) as client:
        response = await client.get("/admin/page?a=1&b=2", allow_redirects=False)
        assert response.status == 303
        location = urlsplit(response.headers["Location"])
        assert location.path == "/admin/login"
        assert parse_qs(location.query) == {"next": ["/admin/page?a=1&b=2"]}
        posted = await client.post("/admin/action", data={"csrf": "x"})
        assert posted.status == 401


async def test_an_unauthenticated_api_call_gets_401_json_with_www_authenticate() -> None:
    async with serve(make_auth()) as client:
        response = await client.get("/admin/api/x")
        assert response.status == 401
        assert await response.json() == {"error": "authentication required"}
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="switchboard-admin"'


async def test_login_form_static_files_and_other_paths_pass_without_a_principal() -> None:
    async with serve(make_auth()) as client:
        assert (await client.get("/admin/login")).status == 200
        assert (await client.get("/admin/static/app.css")).status == 200
        outside = await client.get("/public")
        assert outside.status == 200
        assert "X-Frame-Options" not in outside.headers  # untouched
        sneaky = await client.get("/admin/static/../page", allow_redirects=False)
        assert sneaky.status in (303, 404)


def test_safe_next_keeps_only_console_paths() -> None:
    assert safe_next("/admin/conversations?platform=slack") == \
        "/admin/conversations?platform=slack"
    for bad in ("//evil.example/admin/", "https://evil.example/admin/", "/elsewhere",
                "/\\evil.example", "/admin\r\nX: y", None, ""):
        assert safe_next(bad) == "/admin/"


# -- bearer tokens --------------------------------------------------------------------------

async def test_bearer_tokens_give_their_roles_and_a_wrong_one_gets_401() -> None:
    async with serve(make_auth()) as client:
        admin = await client.get("/admin/api/x", headers=bearer(ADMIN))
        assert await admin.json() == {"name": "admin-token", "role": "admin", "via": "bearer"}
        read = await client.get("/admin/api/x", headers=bearer(READONLY))
        assert await read.json() == {"name": "readonly-token", "role": "read",
                                     "via": "bearer"}
        for wrong in (ADMIN + "x", ADMIN[:-1], "", "é"):
            assert (await client.get("/admin/api/x", headers=bearer(wrong))).status == 401
        assert (await client.get("/admin/api/x",
                                 headers={"Authorization": f"Basic {ADMIN}"})).status == 401


async def test_a_bearer_posts_without_csrf_token_but_read_only_cannot_post_admin_actions(
        ) -> None:
    async with serve(make_auth()) as client:
        admin = await client.post("/admin/action", headers=bearer(ADMIN), data={})
        assert (admin.status, await admin.text()) == (200, "done")
        read = await client.post("/admin/action", headers=bearer(READONLY), data={})
        assert read.status == 403
        assert "admin role" in await read.text()


# -- login sessions -------------------------------------------------------------------------

async def test_login_sets_a_strict_http_only_session_cookie_that_authenticates() -> None:
    async with serve(make_auth()) as client:
        response = await login(client, ADMIN)
        assert response.status == 303
        assert response.headers["Location"] == "/admin/page?x=1"
        morsel = response.cookies["sb_admin"]
        assert morsel["httponly"] is True
        assert morsel["samesite"] == "Strict"
        assert morsel["path"] == "/admin"
        assert morsel["max-age"] == "3600"
        assert not morsel["secure"]  # plain HTTP
        page = await client.get("/admin/page", headers=cookie(morsel.value))
        assert await page.text() == "hello admin-token (admin, session)"
        assert (await login(client, "nope")).status == 401


async def test_the_cookie_is_secure_under_https_from_a_trusted_proxy_only() -> None:
    https = {"X-Forwarded-Proto": "https"}
    async with serve(make_auth(trusted_proxies=["127.0.0.0/8"])) as client:
        assert (await login(client, ADMIN, **https)).cookies["sb_admin"]["secure"] is True
    async with serve(make_auth(trusted_proxies=["10.0.0.0/8"])) as client:
        assert not (await login(client, ADMIN, **https)).cookies["sb_admin"]["secure"]
        direct = await login(client, ADMIN, **{"X-Test-Scheme": "https"})
        assert direct.cookies["sb_admin"]["secure"] is True


async def test_the_login_form_needs_its_cookie_and_matching_token() -> None:
    async with serve(make_auth()) as client:
        form = await client.get("/admin/login")
        nonce = form.cookies["sb_admin_login"].value
        assert form.cookies["sb_admin_login"]["httponly"] is True
        match = re.search(r'value="([^"]+)"', await form.text())
        assert match is not None
        token = match.group(1)
        other_nonce = "A" * 43
        for headers, csrf_token in (({}, token),  # no cookie
                                    ({"Cookie": f"sb_admin_login={nonce}"}, ""),
                                    ({"Cookie": f"sb_admin_login={nonce}"}, token[:-1] + "x"),
                                    ({"Cookie": f"sb_admin_login={other_nonce}"}, token)):
            refused = await client.post("/admin/login", allow_redirects=False, headers=headers,
                                        data={"token": ADMIN, "csrf": csrf_token})
            assert refused.status == 403
            assert "sb_admin" not in refused.cookies
        accepted = await client.post("/admin/login", allow_redirects=False,
                                     headers={"Cookie": f"sb_admin_login={nonce}"},
                                     data={"token": ADMIN, "csrf": token})
        assert accepted.status == 303


def _forge(value: str, **changes: Any) -> str:
    payload, signature = value.rsplit(".", 1)
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{forged}.{signature}"


async def test_tampered_cookies_are_ignored() -> None:
    auth = make_auth()
    async with serve(auth) as client:
        value = await session_cookie(client, READONLY)
        assert (await client.get("/admin/api/x", headers=cookie(value))).status == 200
        payload, signature = value.rsplit(".", 1)
        flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
        resigned = cookie_of(make_auth(session_secret=b"o" * 32),
                             Principal("admin-token", Role.ADMIN, "session", "s1"))
        for bad in (_forge(value, r="admin"), _forge(value, e=int(time.time()) + 10**6),
                    f"{payload}.{flipped}", payload, resigned, "", "x.y.z", "!!!.???"):
            response = await client.get("/admin/api/x", headers=cookie(bad))
            assert response.status == 401, bad


async def test_expired_cookies_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = make_auth(session_ttl_s=60)
    async with serve(auth) as client:
        value = await session_cookie(client, ADMIN)
        monkeypatch.setattr(auth_module, "_now", lambda: time.time() + 59)
        assert (await client.get("/admin/api/x", headers=cookie(value))).status == 200
        monkeypatch.setattr(auth_module, "_now", lambda: time.time() + 61)
        assert (await client.get("/admin/api/x", headers=cookie(value))).status == 401


def test_rotating_a_token_ends_the_sessions_it_made() -> None:
    auth = make_auth()
    admin = cookie_of(auth, auth.login(ADMIN) or pytest.fail("login"))
    read = cookie_of(auth, auth.login(READONLY) or pytest.fail("login"))
    same = make_auth()  # another process with the same settings
    assert same.authenticate(mocked(headers=cookie(admin))) is not None
    assert same.authenticate(mocked(headers=cookie(read))) is not None
    rotated = make_auth(admin_token="a-new-admin-token")
    assert rotated.authenticate(mocked(headers=cookie(admin))) is None
    assert rotated.authenticate(mocked(headers=cookie(read))) is not None
    assert make_auth(readonly_token=None).authenticate(mocked(headers=cookie(read))) is None


def test_without_a_session_secret_it_is_derived_from_the_admin_token() -> None:
    one = make_auth(session_secret=None)
    value = cookie_of(one, one.login(ADMIN) or pytest.fail("login"))
    assert make_auth(session_secret=None).authenticate(mocked(headers=cookie(value))) \
        is not None
    assert make_auth(session_secret=None, admin_token="other").authenticate(
        mocked(headers=cookie(value))) is None
    # no admin token: random per process
    a, b = (make_auth(session_secret=None, admin_token=None) for _ in range(2))
    principal = a.login(READONLY) or pytest.fail("login")
    assert a.authenticate(mocked(headers=cookie(cookie_of(a, principal)))) is not None
    assert b.authenticate(mocked(headers=cookie(cookie_of(a, principal)))) is None


def test_logout_clears_the_cookie() -> None:
    response = web.Response()
    make_auth().clear_session(response)
    morsel = response.cookies["sb_admin"]
    assert (morsel.value, morsel["path"], str(morsel["max-age"])) == ("", "/admin", "0")


# -- trusted proxy users --------------------------------------------------------------------

async def test_the_trusted_header_counts_from_trusted_proxies_only() -> None:
    auth = make_auth(trusted_user_header="X-Forwarded-User",
                     trusted_proxies=["127.0.0.1", "10.1.0.0/16"], admin_users=[" Alice "])
    async with serve(auth) as client:
        async def who(user: str, peer: str = "") -> tuple[int, Any]:
            headers = {"X-Forwarded-User": user, **({"X-Test-Peer": peer} if peer else {})}
            response = await client.get("/admin/api/x", headers=headers)
            return response.status, await response.json()

        assert await who("alice") == (200, {"name": "alice", "role": "admin", "via": "proxy"})
        assert await who("bob") == (200, {"name": "bob", "role": "read", "via": "proxy"})
        assert (await who("alice", "10.1.2.3"))[1]["role"] == "admin"
        assert (await who("alice", "::ffff:10.1.2.3"))[1]["role"] == "admin"
        assert (await who("alice", "10.2.0.1"))[0] == 401  # a direct client forging it
        assert (await who("alice", "2001:db8::1"))[0] == 401
        assert (await who("   "))[0] == 401
        # a client's own header beside the proxy's: ambiguous, believed neither
        twice = CIMultiDict([("X-Forwarded-User", "bob"), ("X-Forwarded-User", "alice")])
        assert (await client.get("/admin/api/x", headers=twice)).status == 401


async def test_a_read_only_proxy_user_cannot_post_an_admin_action() -> None:
    auth = make_auth(trusted_user_header="X-Forwarded-User", trusted_proxies=["127.0.0.1"],
                     admin_users=["alice"])
    async with serve(auth) as client:
        for user, status in (("bob", 403), ("alice", 200)):
            headers = {"X-Forwarded-User": user}
            token = await (await client.get("/admin/csrf", headers=headers)).text()
            assert token
            response = await client.post("/admin/action", headers=headers,
                                         data={"csrf": token})
            assert response.status == status, user


def test_invalid_trusted_proxies_are_named() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.300"):
        make_auth(trusted_proxies=["10.0.0.0/8", "10.0.0.300"])


def test_from_settings_reads_the_admin_settings() -> None:
    settings = load_settings(
        _env_file=None, admin_token=ADMIN, admin_readonly_token=READONLY,
        admin_trusted_user_header="X-Forwarded-Email", admin_trusted_proxies="10.0.0.0/8, ",
        admin_users="ops@example.com, root@example.com", admin_session_secret="k" * 32,
        admin_session_ttl_s=120)
    auth = AdminAuth.from_settings(settings)
    assert auth.configured and auth.session_ttl_s == 120
    assert auth.authenticate(mocked(headers=bearer(READONLY))) == \
        Principal("readonly-token", Role.READ, "bearer", "")
    proxied = auth.authenticate(mocked(remote="10.9.9.9",
                                       headers={"X-Forwarded-Email": "root@example.com"}))
    assert proxied is not None and proxied.is_admin
    value = cookie_of(make_auth(session_secret=b"k" * 32),
                      Principal("admin-token", Role.ADMIN, "session", "s1"))
    assert auth.authenticate(mocked(headers=cookie(value))) is not None
    bare = load_settings(_env_file=None, admin_token=None, admin_readonly_token=None,
                         admin_trusted_user_header=None)
    assert not AdminAuth.from_settings(bare).configured
    assert AdminAuth.from_settings(bare, local=True).configured


# -- CSRF and cross-origin requests ---------------------------------------------------------

async def test_form_posts_need_the_sessions_csrf_token() -> None:
    async with serve(make_auth()) as client:
        value = await session_cookie(client, ADMIN)
        token = await (await client.get("/admin/csrf", headers=cookie(value))).text()
        other = await session_cookie(client, ADMIN)  # another login: another session id
        other_token = await (await client.get("/admin/csrf", headers=cookie(other))).text()
        assert token and other_token and token != other_token
        for data in ({}, {"csrf": ""}, {"csrf": token[:-1]}, {"csrf": other_token}):
            response = await client.post("/admin/action", headers=cookie(value), data=data)
            assert response.status == 403, data
        accepted = await client.post("/admin/action", headers=cookie(value),
                                     data={"csrf": token})
        assert (accepted.status, await accepted.text()) == (200, "done")


async def test_cross_origin_posts_are_refused() -> None:
    async with serve(make_auth()) as client:
        value = await session_cookie(client, ADMIN)
        token = await (await client.get("/admin/csrf", headers=cookie(value))).text()
        own = f"http://{client.host}:{client.port}"
        for headers, status in (({"Origin": "http://evil.example"}, 403),
                                ({"Origin": "null"}, 403),
                                ({"Origin": f"https://evil.example:{client.port}"}, 403),
                                ({"Sec-Fetch-Site": "cross-site"}, 403),
                                ({"Origin": own}, 200),
                                ({"Sec-Fetch-Site": "same-origin"}, 200)):
            response = await client.post("/admin/action", data={"csrf": token},
                                         headers={**cookie(value), **headers})
            assert response.status == status, headers
        # the login form too (login CSRF)
        evil = await client.post("/admin/login", headers={"Origin": "http://evil.example"},
                                 data={"token": ADMIN})
        assert evil.status == 403
        # a bearer carries no ambient credential: its origin does not matter
        scripted = await client.post("/admin/action", data={},
                                     headers={**bearer(ADMIN), "Origin": "http://other"})
        assert scripted.status == 200


async def test_a_read_only_session_cannot_post_an_admin_action() -> None:
    async with serve(make_auth()) as client:
        value = await session_cookie(client, READONLY)
        token = await (await client.get("/admin/csrf", headers=cookie(value))).text()
        response = await client.post("/admin/action", headers=cookie(value),
                                     data={"csrf": token})
        assert response.status == 403
        assert "admin role" in await response.text()


def test_csrf_tokens_of_principals() -> None:
    auth = make_auth()
    scripted = Principal("admin-token", Role.ADMIN, "bearer", "")
    assert auth.csrf_token(scripted) == "" and auth.check_csrf(scripted, None)
    user = Principal("bob", Role.READ, "proxy", "proxy-1")
    assert auth.check_csrf(user, auth.csrf_token(user))
    assert not auth.check_csrf(user, None)
    assert not auth.check_csrf(user, "")
    assert not auth.check_csrf(user, "ü")
    assert not auth.check_csrf(Principal("x", Role.READ, "session", ""), "")
    assert not make_auth(session_secret=b"o" * 32).check_csrf(user, auth.csrf_token(user))


# -- local mode -----------------------------------------------------------------------------

async def test_local_mode_admits_loopback_peers_only() -> None:
    auth = make_auth(admin_token=None, readonly_token=None, session_secret=None, local=True)
    assert auth.configured
    async with serve(auth) as client:
        local = await client.get("/admin/api/x")
        assert await local.json() == {"name": "local", "role": "admin", "via": "local"}
        assert (await client.get("/admin/api/x", headers={"Host": "localhost:8080"})).status \
            == 200
        assert (await client.get("/admin/api/x",
                                 headers={"X-Test-Peer": "192.0.2.7"})).status == 401
        # DNS rebinding: another site's name pointed at 127.0.0.1
        assert (await client.get("/admin/api/x",
                                 headers={"Host": "evil.example"})).status == 401
        token = await (await client.get("/admin/csrf")).text()
        assert (await client.post("/admin/action", data={})).status == 403
        assert (await client.post("/admin/action", data={"csrf": token})).status == 200
    off = make_auth(admin_token=None, readonly_token=None)
    assert not off.configured
    assert off.authenticate(mocked(remote="127.0.0.1")) is None


# -- headers --------------------------------------------------------------------------------

async def test_every_console_response_carries_the_security_headers() -> None:
    async with serve(make_auth()) as client:
        responses = [await client.get("/admin/page", headers=bearer(ADMIN)),
                     await client.get("/admin/page", allow_redirects=False),
                     await client.get("/admin/api/x"),
                     await client.get("/admin/login"),
                     await client.get("/admin/static/app.css"),
                     await client.post("/admin/action", headers=bearer(READONLY)),
                     await client.get("/admin/nothing-here", headers=bearer(ADMIN))]
        assert [r.status for r in responses] == [200, 303, 401, 200, 200, 403, 404]
        for response in responses:
            for name, value in SECURITY_HEADERS.items():
                assert response.headers.get(name) == value, (response.url, name)
    assert SECURITY_HEADERS["Content-Security-Policy"] == (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "frame-ancestors 'none'")
