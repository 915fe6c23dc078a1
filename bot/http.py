"""The aiohttp application: adapter routes, health endpoints, and an error boundary.

- `GET /health/live`: 200 while the process serves requests.
- `GET /health/ready`: 200 when Postgres and Redis answer and no migration is pending, else 503;
  the body names each check.
- `GET /metrics`: Prometheus metrics (bot/metrics.py).
Bodies above `BOT_MAX_BODY_BYTES` are refused with 413 while being read. An unexpected error
becomes a JSON 500 with a trace id that is also in the log; no traceback reaches the client.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot import tracing
from bot.inbox import GROUP
from bot.log import get_logger
from bot.metrics import (
    CONTENT_TYPE_LATEST,
    DEAD_LETTER_BACKLOG,
    INBOX_BACKLOG,
    INBOX_LAG,
    INBOX_PENDING,
    REGISTRY,
    generate_latest,
)

log = get_logger("bot.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PendingMigrations = Callable[[asyncpg.Connection], Awaitable[list[int]]]


@web.middleware
async def error_boundary(request: web.Request, handler: Handler) -> web.StreamResponse:
    if tracing.enabled() and not request.path.startswith(("/health/", "/metrics")):
        route = request.match_info.route.resource
        name = f"{request.method} {route.canonical if route is not None else request.path}"
        with tracing.span(name, "server", {"http.request.method": request.method,
                                           "http.route": name.split(" ", 1)[1]}) as span:
            response = await _guarded(request, handler)
            tracing.set_attributes(span, {"http.response.status_code": response.status})
            return response
    return await _guarded(request, handler)


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 413:
            return web.json_response({"error": "request body too large"}, status=413)
        raise
    except Exception:
        trace_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error", path=request.path, trace_id=trace_id)
        return web.json_response({"error": "internal error", "trace_id": trace_id}, status=500)


class Health:
    """Liveness, readiness and metrics handlers.

    Args:
        inbox_keys: (inbox stream, dead-letter stream) whose lengths `/metrics` reports.
        pending_migrations: the versions of the migrations not yet applied, read on a
            connection (the composition root passes the migration runner's); None skips the
            check.
        needs_postgres: False for an ingress-only process (`bot run --workers 0`), which
            stores messages in Redis only: readiness then leaves Postgres out, so a database
            outage does not take the webhooks out of the load balancer.
    """

    def __init__(self, pool: asyncpg.Pool, redis: Redis,
                 inbox_keys: tuple[str, str] | None = None,
                 pending_migrations: PendingMigrations | None = None, *,
                 needs_postgres: bool = True) -> None:
        self._pool = pool
        self._needs_postgres = needs_postgres
        self._redis = redis
        self._pending_migrations = pending_migrations
        self._inbox_keys = inbox_keys

    async def metrics(self, _request: web.Request) -> web.Response:
        """Prometheus text format; the inbox gauges are read from Redis now (skipped if it is
        down, so a scrape never fails)."""
        if self._inbox_keys is not None:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.xlen(self._inbox_keys[0])
                    pipe.xlen(self._inbox_keys[1])
                    pipe.xinfo_groups(self._inbox_keys[0])
                    backlog, dead, groups = await pipe.execute()
                INBOX_BACKLOG.set(backlog)
                DEAD_LETTER_BACKLOG.set(dead)
                for group in groups:
                    if group["name"] in (GROUP, GROUP.encode()):
                        INBOX_PENDING.set(group["pending"])
                        # Redis 7 reports the lag; None when it cannot tell (after XDEL of
                        # entries not yet read, https://redis.io/docs/latest/commands/xinfo-groups/)
                        if group.get("lag") is not None:
                            INBOX_LAG.set(group["lag"])
            except (RedisError, OSError):
                pass
        return web.Response(body=generate_latest(REGISTRY),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def live(self, _request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(self, _request: web.Request) -> web.Response:
        checks: dict[str, str] = {}
        if self._needs_postgres:
            checks.update(await self._postgres())
        try:
            await self._redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unavailable: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def _postgres(self) -> dict[str, str]:
        try:
            async with self._pool.acquire(timeout=2) as conn:
                await conn.fetchval("SELECT 1")
                pending = (await self._pending_migrations(conn)
                           if self._pending_migrations is not None else [])
        except Exception as exc:
            return {"postgres": f"unavailable: {type(exc).__name__}", "migrations": "unknown"}
        return {"postgres": "ok", "migrations": "ok" if not pending else f"pending: {pending}"}


def build_app(routes: Sequence[web.RouteDef], health: Health, *, max_body_bytes: int
              ) -> web.Application:
    """The server application with adapter `routes` mounted."""
    app = web.Application(client_max_size=max_body_bytes, middlewares=[error_boundary])
    app.add_routes([web.get("/health/live", health.live), web.get("/health/ready", health.ready),
                    web.get("/metrics", health.metrics), *routes])
    return app
