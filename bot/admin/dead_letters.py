"""Dead letters in the console: `GET /dead-letters` lists them (oldest first, with the error
and attempts), `POST /dead-letters/retry` puts one (`id`) or all (`all=1`) back on the inbox
with the code of `bot dlq retry` (`Inbox.retry_dead_letters`); admin only."""

from __future__ import annotations

import re

from aiohttp import web

from bot.admin.app import admin_form, deps, notice_of, notice_url, record, render

SHOWN = 500
#: A Redis stream entry id: milliseconds and sequence number, each an unsigned 64-bit integer.
_ENTRY_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


def routes() -> list[web.RouteDef]:
    return [web.get("/dead-letters", dead_letters_page),
            web.post("/dead-letters/retry", retry)]


async def dead_letters_page(request: web.Request) -> web.Response:
    inbox = deps(request).inbox
    letters = await inbox.dead_letters(SHOWN)
    return render(request, "dead_letters.html", title="Dead letters", letters=letters,
                  total=await inbox.dead_letter_count(), notice=notice_of(request))


async def retry(request: web.Request) -> web.Response:
    principal, form = await admin_form(request)
    everything = form.get("all") == "1"
    one = str(form.get("id", "")).strip()
    if not everything and not one:
        raise web.HTTPBadRequest(text="name a dead letter (id) or all=1")
    if not everything and not _is_entry_id(one):
        raise web.HTTPBadRequest(text="id: a dead letter's id, such as 1718000000000-0")
    requeued, missing = await deps(request).inbox.retry_dead_letters(None if everything
                                                                     else [one])
    await record(request, principal, "dead_letter.retry", "all" if everything else one,
                 {"requeued": requeued, "missing": missing})
    notice = f"requeued {requeued}" + (f"; not found: {', '.join(missing)}" if missing else "")
    raise web.HTTPSeeOther(notice_url(request, "/dead-letters", notice))


def _is_entry_id(value: str) -> bool:
    """`value` is an entry id Redis accepts (others are an error there, not a miss)."""
    found = _ENTRY_ID.fullmatch(value)
    return found is not None and all(int(n) < 2**64 for n in found.groups())
