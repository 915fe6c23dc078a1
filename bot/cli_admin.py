"""`bot admin`: the admin console on this machine (127.0.0.1), opened in a browser.

Without ADMIN_TOKEN / ADMIN_READONLY_TOKEN / ADMIN_TRUSTED_USER_HEADER there is no login:
the console answers loopback peers only, as an admin. With one of them set it asks for the
token as `bot run` does.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import webbrowser

from aiohttp import web

from bot.config import Settings
from bot.errors import ServiceUnavailable
from bot.http import error_boundary
from bot.runtime import Runtime


async def serve_admin(settings: Settings, *, port: int, open_browser: bool) -> int:
    """Serve the console on 127.0.0.1:`port` (0: a free port) until SIGINT/SIGTERM; exit 0."""
    from bot.admin.auth import AdminAuth
    from bot.server import mount_admin

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Runtime(settings) as rt:
        app = web.Application(client_max_size=settings.bot_max_body_bytes,
                              middlewares=[error_boundary])
        mount_admin(app, rt, local=not AdminAuth.from_settings(settings).configured)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ServiceUnavailable(f"--port: cannot listen on 127.0.0.1:{port} "
                                     f"({exc.strerror or type(exc).__name__})") from None
        bound = runner.addresses[0][1]
        url = f"http://127.0.0.1:{bound}/admin/"
        sys.stdout.write(f"admin console: {url}  (Ctrl-C stops it)\n")
        sys.stdout.flush()
        if open_browser:
            await asyncio.to_thread(webbrowser.open, url)
        await stop.wait()
        await runner.cleanup()
    return 0
