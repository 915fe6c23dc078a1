"""Logging in and out of the console with a token (ADMIN_TOKEN or ADMIN_READONLY_TOKEN).

`GET /login` shows the form (with its double-submit CSRF token, `AdminAuth.login_csrf`);
`POST /login` checks that token and the admin token, sets the session cookie and goes on to
`next` (a same-site path only); a wrong token is the form again with 401. `POST /logout`
(CSRF-checked) ends the session. Each login, failed login and logout is an audit row.
"""

from __future__ import annotations

from aiohttp import web

from bot.admin.app import PREFIX, auth_of, deps, record, render
from bot.admin.audit import record as audit_record
from bot.admin.auth import Principal, Role, safe_next


def routes() -> list[web.RouteDef]:
    return [web.get("/login", login_page), web.post("/login", login),
            web.post("/logout", logout)]


def _form(request: web.Request, *, next_path: str, error: str = "",
          status: int = 200) -> web.Response:
    auth = auth_of(request)
    nonce, token = auth.login_csrf(request)
    response = render(request, "login.html", status=status, title="Log in", error=error,
                      login_csrf=token, next=next_path)
    auth.set_login_cookie(response, request, nonce)
    return response


async def login_page(request: web.Request) -> web.Response:
    return _form(request, next_path=safe_next(request.query.get("next"), PREFIX))


async def login(request: web.Request) -> web.Response:
    auth = auth_of(request)
    form = await request.post()
    next_path = safe_next(str(form.get("next", "")), PREFIX)
    token = form.get("login_csrf")
    if not auth.check_login_csrf(request, token if isinstance(token, str) else None):
        return _form(request, next_path=next_path, status=403,
                     error="The form expired or came from elsewhere: log in again.")
    principal = auth.login(str(form.get("token", "")))
    if principal is None:
        # who tried is unknown; the row keeps the address (never the token typed)
        await audit_record(deps(request).pool, Principal("anonymous", Role.READ, "session", ""),
                           "login.failed", remote_addr=request.remote)
        return _form(request, next_path=next_path, status=401,
                     error="That token is not ADMIN_TOKEN or ADMIN_READONLY_TOKEN.")
    await record(request, principal, "login")
    response = web.HTTPSeeOther(next_path)
    auth.set_session(response, request, principal)
    raise response


async def logout(request: web.Request) -> web.Response:
    principal: Principal | None = request.get("principal")
    form = await request.post()
    token = form.get("csrf")
    if principal is None or not auth_of(request).check_csrf(
            principal, token if isinstance(token, str) else None):
        raise web.HTTPForbidden(text="the form's CSRF token is missing or wrong")
    await record(request, principal, "logout")
    response = web.HTTPSeeOther(f"{PREFIX}/login")
    auth_of(request).clear_session(response)
    raise response
