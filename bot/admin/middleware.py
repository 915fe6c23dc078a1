"""The console's gate: `admin_middleware` authenticates every request under the console's
prefix with `AdminAuth` (bot/admin/auth.py), refuses cross-origin changes and adds the
security headers; `require_admin` is the admin-role check of a handler."""

from __future__ import annotations

import warnings
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from bot.admin.auth import (
    PRINCIPAL_KEY,
    REALM,
    SECURITY_HEADERS,
    UNSAFE_METHODS,
    AdminAuth,
    Principal,
    safe_next,
)


def add_security_headers(response: web.StreamResponse) -> None:
    """Add SECURITY_HEADERS (a handler that prepares its own streaming response calls this
    before `prepare`; the middleware adds them to every other response)."""
    if not response.prepared:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)


def _set_principal(request: web.Request, principal: Principal) -> None:
    # the console's handlers read request["principal"]; aiohttp suggests RequestKey objects
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", web.NotAppKeyWarning)
        request[PRINCIPAL_KEY] = principal


def admin_middleware(auth: AdminAuth, *, prefix: str = "/admin") -> Middleware:
    """Authentication of requests under `prefix` (others pass untouched): the login form and
    static files pass without a principal, an authenticated request gets
    `request["principal"]`, others get 401 JSON with `WWW-Authenticate` under `prefix/api/`,
    a 303 to the login form for GETs, else 401. Unsafe requests of a non-bearer principal
    from another origin get 403. Every response carries SECURITY_HEADERS."""
    api = f"{prefix}/api"
    login = f"{prefix}/login"
    static = f"{prefix}/static/"

    def public(path: str) -> bool:
        return ".." not in path.split("/") and (path == login or path.startswith(static))

    def unauthenticated(request: web.Request) -> web.StreamResponse:
        headers = {"WWW-Authenticate": REALM}
        if request.path == api or request.path.startswith(api + "/"):
            return web.json_response({"error": "authentication required"}, status=401,
                                     headers=headers)
        if request.method in ("GET", "HEAD"):
            target = safe_next(request.rel_url.raw_path_qs, prefix)
            raise web.HTTPSeeOther(f"{login}?{urlencode({'next': target})}")
        return web.Response(status=401, text="authentication required", headers=headers)

    async def guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        principal = auth.authenticate(request)
        if principal is not None:
            _set_principal(request, principal)
        elif not public(request.path):
            return unauthenticated(request)
        if request.method in UNSAFE_METHODS and (principal is None or principal.via != "bearer") \
                and not auth.same_origin(request):
            raise web.HTTPForbidden(text="cross-origin request refused")
        return await handler(request)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != prefix and not request.path.startswith(prefix + "/"):
            return await handler(request)
        try:
            response = await guarded(request, handler)
        except web.HTTPException as exc:
            add_security_headers(exc)
            raise
        add_security_headers(response)
        return response

    return middleware


def require_admin(request: web.Request) -> Principal:
    """The request's principal when it has the admin role; else 403 (401 without one)."""
    principal = request.get(PRINCIPAL_KEY)
    if not isinstance(principal, Principal):
        raise web.HTTPUnauthorized(text="authentication required",
                                   headers={"WWW-Authenticate": REALM})
    if not principal.is_admin:
        raise web.HTTPForbidden(text="this needs the admin role; you are signed in read-only")
    return principal
