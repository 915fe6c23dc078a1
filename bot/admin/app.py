"""The admin console's aiohttp application, mounted under `/admin` (docs/admin.md).

Pages are server-rendered (Jinja2, autoescaped); charts are inline SVG; nothing is loaded
from elsewhere, so the console works offline. Every form that changes something carries a
CSRF token and needs the admin role; every such change is an `admin_audit` row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import asyncpg
import jinja2
from aiohttp import web
from multidict import MultiDictProxy

from bot.admin import audit
from bot.admin.auth import AdminAuth, Principal
from bot.admin.middleware import admin_middleware, require_admin
from bot.inbox import Inbox
from bot.log import SecretRedactor
from bot.protocols import DocumentForgetter, DocumentUploads

PREFIX = "/admin"


@dataclass(frozen=True)
class AdminDeps:
    """What the console reads and changes.

    Args:
        ingestor: the runtime's ingestor (called on the first upload: it loads the embedder).
        upload_max_bytes: the largest upload accepted (ADMIN_UPLOAD_MAX_BYTES); larger: 413.
        traces_url_template: OTEL_TRACES_URL_TEMPLATE, "{trace_id}" replaced, or None.
    """

    pool: asyncpg.Pool
    inbox: Inbox
    store: DocumentForgetter
    ingestor: Callable[[], DocumentUploads]
    upload_max_bytes: int
    traces_url_template: str | None = None
    #: the settings' secret values: masked wherever a page shows a stored error text
    secrets: tuple[str, ...] = ()


DEPS = web.AppKey("admin_deps", AdminDeps)
AUTH = web.AppKey("admin_auth", AdminAuth)
TEMPLATES = web.AppKey("admin_templates", jinja2.Environment)
#: The overview by its number of days: (monotonic time computed, the figures). It reads a
#: range of the transcript (0.5 s at a million rows), so it is recomputed at most every
#: OVERVIEW_TTL_S.
OVERVIEW_CACHE = web.AppKey("admin_overview_cache", dict[int, tuple[float, Any]])
OVERVIEW_TTL_S = 30.0


def deps(request: web.Request) -> AdminDeps:
    return request.config_dict[DEPS]


def auth_of(request: web.Request) -> AdminAuth:
    return request.config_dict[AUTH]


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request["principal"]
    return principal


def render(request: web.Request, template: str, *, status: int = 200,
           **context: Any) -> web.Response:
    """The page `template` rendered with `context`, the principal and its CSRF token."""
    principal: Principal | None = request.get("principal")
    context.setdefault("title", "")
    html = request.config_dict[TEMPLATES].get_template(template).render(
        principal=principal, prefix=PREFIX, path=request.path,
        csrf=auth_of(request).csrf_token(principal) if principal is not None else "",
        **context)
    return web.Response(text=html, content_type="text/html", status=status)


def notice_url(request: web.Request, path: str, notice: str) -> str:
    """`path` showing `notice` (what an action did), signed: a link from elsewhere cannot put
    words of its own in the console's mouth ("session expired, log in at ...")."""
    signature = auth_of(request).sign("notice", notice)
    return f"{PREFIX}{path}?{urlencode({'notice': notice, 'sig': signature})}"


def notice_of(request: web.Request) -> str:
    """The request's notice (from `notice_url`), "" when absent or not signed by us."""
    notice = request.query.get("notice", "")
    signed = auth_of(request).check_signature("notice", notice, request.query.get("sig"))
    return notice if signed else ""


async def admin_form(request: web.Request) -> tuple[Principal, MultiDictProxy[Any]]:
    """The posted form of an admin action: the admin role and a valid CSRF token, else 403."""
    principal = require_admin(request)
    form = await request.post()
    token = form.get("csrf")
    if not auth_of(request).check_csrf(principal, token if isinstance(token, str) else None):
        raise web.HTTPForbidden(text="the form's CSRF token is missing or wrong: reload the "
                                     "page and try again")
    return principal, form


async def record(request: web.Request, principal: Principal, action: str,
                 target: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """One `admin_audit` row for an admin action of this request."""
    await audit.record(deps(request).pool, principal, action, target, detail,
                       remote_addr=request.remote)


def _environment(secrets: tuple[str, ...]) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("bot.admin", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M:%S") if value else ""
    # error texts (exceptions, platform answers) may quote a secret or an address
    masker = SecretRedactor(secrets)
    env.filters["redact"] = lambda text: masker.redact(audit.redact_text(text))
    return env


def admin_app(admin_deps: AdminDeps, auth: AdminAuth) -> web.Application:
    """The console as a sub-application: mount with `app.add_subapp(PREFIX, admin_app(...))`."""
    from bot.admin import dead_letters, documents, login, pages

    app = web.Application(middlewares=[admin_middleware(auth, prefix=PREFIX)])
    app[DEPS] = admin_deps
    app[AUTH] = auth
    app[TEMPLATES] = _environment(admin_deps.secrets)
    app[OVERVIEW_CACHE] = {}
    app.add_routes([
        web.get("", pages.overview), web.get("/", pages.overview),
        *login.routes(), *pages.routes(), *documents.routes(), *dead_letters.routes(),
    ])
    return app
