"""Long-running modes: `bot run` (HTTP server + workers) and `bot worker` (workers only).

SIGTERM or SIGINT stops taking requests, lets workers finish the message in hand, and exits 0.
"""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from bot import errortracking, tracing
from bot.config import Settings
from bot.errors import ServiceUnavailable
from bot.http import Health, build_app
from bot.httpguard import ConnectionGuard, GuardedRunner, install
from bot.log import get_logger
from bot.runtime import Runtime

log = get_logger("bot.server")


def server_app(rt: Runtime, *, platforms: bool = True, workers: int = 1) -> web.Application:
    """The HTTP app of `bot run`: health, the generic webhook (with WEBHOOK_SECRET) and every
    enabled platform's routes; with `platforms=False` (`bot worker`) health and metrics only.
    With no `workers` (ingress only) readiness needs Redis only: the ingress stores messages
    there and never touches Postgres."""
    routes: list[web.RouteDef] = []
    for platform in rt.platforms if platforms else ():
        routes.extend(platform.routes())
    s = rt.settings
    health = Health(rt.pool, rt.redis, (rt.inbox.stream, rt.inbox.dlq),
                    pending_migrations=rt.pending_migrations, needs_postgres=workers > 0)
    app = build_app(routes, health, max_body_bytes=s.bot_max_body_bytes)
    if platforms:
        mount_admin(app, rt)
    install(app, ConnectionGuard(header_timeout_s=s.bot_http_header_timeout_s,
                                 body_timeout_s=s.bot_http_body_timeout_s,
                                 max_per_peer=s.bot_http_max_connections_per_peer))
    return app


def mount_admin(app: web.Application, rt: Runtime, *, local: bool = False) -> bool:
    """Serve the admin console under /admin when its auth is configured (ADMIN_TOKEN,
    ADMIN_READONLY_TOKEN or ADMIN_TRUSTED_USER_HEADER), or `local` (`bot admin`: loopback
    peers only, no login). False, and a log line, when it stays off."""
    from bot.admin.app import PREFIX, AdminDeps, admin_app
    from bot.admin.auth import AdminAuth

    s = rt.settings
    auth = AdminAuth.from_settings(s, local=local)
    if not auth.configured:
        log.info("admin console off: set ADMIN_TOKEN (or see docs/admin.md) to serve it")
        return False
    app.add_subapp(PREFIX, admin_app(AdminDeps(
        rt.pool, rt.inbox, rt.store, rt.ingestor, s.admin_upload_max_bytes,
        s.otel_traces_url_template, tuple(s.secret_values())), auth))
    return True


async def serve(settings: Settings, *, workers: int, host: str, port: int, http: bool) -> int:
    """Run until SIGTERM/SIGINT. Returns the process exit code (0).

    `http`: serve the platforms' routes on host:port and start the platforms (`bot run`);
    else workers only, with health and metrics on host:port unless `port` is 0 (`bot worker`).
    """
    tracing.start("run" if http else "worker")
    errortracking.start(settings)
    try:
        return await _serve(settings, workers=workers, host=host, port=port, http=http)
    finally:
        # each bounded: an absent collector or Sentry costs at most 2 s
        await asyncio.gather(asyncio.to_thread(tracing.stop),
                             asyncio.to_thread(errortracking.stop))


async def _serve(settings: Settings, *, workers: int, host: str, port: int, http: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Runtime(settings) as rt:
        site_runner: web.AppRunner | None = None
        if http or port:
            site_runner = GuardedRunner(server_app(rt, platforms=http, workers=workers),
                                        access_log=None, handle_signals=False)
            await site_runner.setup()
            site = web.TCPSite(site_runner, host, port)
            try:
                await site.start()
            except OSError as exc:  # the port is taken, or the address is not ours
                await site_runner.cleanup()
                setting = "BOT_HTTP_PORT" if http else "BOT_METRICS_PORT"
                raise ServiceUnavailable(f"{setting}: cannot listen on {host}:{port} "
                                         f"({exc.strerror or type(exc).__name__})") from None
            log.info("listening", url=f"http://{host}:{port}", workers=workers,
                     platforms=[p.name for p in rt.platforms] if http else [])
        rt.start_workers(workers)
        # the model loads on its own thread meanwhile; an ingress-only process never embeds
        warm = asyncio.create_task(rt.warm_up()) if workers else None
        if http:
            await rt.start_platforms()  # never blocks: connections are made in the background
        if not http:
            log.info("workers started", workers=workers)
        await stop.wait()
        log.info("shutting down")
        if warm is not None and not warm.done():
            warm.cancel()
        if site_runner is not None:
            await site_runner.cleanup()  # no new requests
        await rt.stop_workers()  # finish the messages in hand; senders still open
        await rt.stop_platforms()
    return 0
