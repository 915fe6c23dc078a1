"""Dead letters in the console: `GET /dead-letters` lists them (oldest first, with the error
and attempts), `POST /dead-letters/retry` puts one (`id`) or all (`all=1`) back on the inbox
with the code of `bot dlq retry` (`Inbox.retry_dead_letters`); admin only."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from bot.admin.app import PREFIX, admin_form, deps, record, render

SHOWN = 500


def routes() -> list[web.RouteDef]:
    return [web.get("/dead-letters", dead_letters_page),
            web.post("/dead-letters/retry", retry)]


async def dead_letters_page(request: web.Request) -> web.Response:
    inbox = deps(request).inbox
    letters = await inbox.dead_letters(SHOWN)
    return render(request, "dead_letters.html", title="Dead letters", letters=letters,
                  total=await inbox.dead_letter_count(), notice=request.query.get("notice", ""))


async def retry(request: web.Request) -> web.Response:
    principal, form = await admin_form(request)
    everything = form.get("all") == "1"
    one = str(form.get("id", "")).strip()
    if not everything and not one:
        raise web.HTTPBadRequest(text="name a dead letter (id) or all=1")
    requeued, missing = await deps(request).inbox.retry_dead_letters(None if everything
                                                                     else [one])
    await record(request, principal, "dead_letter.retry", "all" if everything else one,
                 {"requeued": requeued, "missing": missing})
    notice = f"requeued {requeued}" + (f"; not found: {', '.join(missing)}" if missing else "")
    raise web.HTTPSeeOther(f"{PREFIX}/dead-letters?{urlencode({'notice': notice})}")
