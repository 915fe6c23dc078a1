"""Console pages: the overview, the conversation list and one conversation (with its review).

Routes (under /admin): `GET /` overview; `GET /conversations` the filtered list (query
parameters: `ConversationFilter.from_query`, `after` the keyset cursor); `GET
/conversations/{id}` one conversation; `POST /conversations/{id}/review` tags and reviewed
(admin); `GET /api/conversations` the list as JSON for scripts; `GET /audit` the newest admin
actions.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import date, datetime
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from bot.admin import audit, charts, reviews
from bot.admin.app import (
    OVERVIEW_CACHE,
    OVERVIEW_TTL_S,
    PREFIX,
    admin_form,
    deps,
    principal_of,
    record,
    render,
)
from bot.admin.conversation import get_conversation
from bot.admin.overview import overview as load_overview
from bot.admin.queries import ConversationFilter, list_conversations

PAGE_ROWS = 50


def routes() -> list[web.RouteDef]:
    return [web.get("/conversations", conversations),
            web.get("/conversations/{id}", conversation),
            web.post("/conversations/{id}/review", review),
            web.get("/api/conversations", conversations_api),
            web.get("/audit", audit_page)]


def list_url(**query: str) -> str:
    """The conversation list filtered by `query` (ConversationFilter's URL parameters)."""
    return f"{PREFIX}/conversations?{urlencode(query)}"


def _filter(request: web.Request) -> ConversationFilter:
    try:
        return ConversationFilter.from_query(request.query)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"bad filter: {exc}") from None


async def conversations(request: web.Request) -> web.Response:
    flt = _filter(request)
    try:
        page = await list_conversations(deps(request).pool, flt, limit=PAGE_ROWS,
                                        cursor=request.query.get("after") or None)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"bad page cursor: {exc}") from None
    query = flt.to_query()
    next_url = list_url(**query, after=page.next_cursor) if page.next_cursor else None
    return render(request, "conversations.html", title="Conversations", page=page,
                  query=query, next_url=next_url, first_url=list_url(**query),
                  paged="after" in request.query)


async def conversations_api(request: web.Request) -> web.Response:
    flt = _filter(request)
    try:
        limit = min(max(int(request.query.get("limit", PAGE_ROWS)), 1), 500)
        page = await list_conversations(deps(request).pool, flt, limit=limit,
                                        cursor=request.query.get("after") or None)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"conversations": [_jsonable(asdict(r)) for r in page.rows],
                              "next_cursor": page.next_cursor})


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime | date) else v for k, v in row.items()}


async def conversation(request: web.Request) -> web.Response:
    detail = await get_conversation(deps(request).pool, request.match_info["id"])
    if detail is None:
        raise web.HTTPNotFound(text="no such conversation")
    template = deps(request).traces_url_template
    return render(request, "conversation.html", title=f"Conversation {detail.id}", c=detail,
                  trace_url=(lambda trace_id: template.replace("{trace_id}",
                                                               quote(trace_id, safe="")))
                  if template else None)


async def review(request: web.Request) -> web.Response:
    principal, form = await admin_form(request)
    conversation_id = request.match_info["id"]
    tags = [t for t in str(form.get("tags", "")).replace(",", " ").split() if t]
    reviewed = form.get("reviewed") == "1"
    try:
        found = await reviews.set_review(deps(request).pool, conversation_id, tags=tags,
                                         reviewed=reviewed, by=principal.name)
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"bad tags: {exc}") from None
    if not found:
        raise web.HTTPNotFound(text="no such conversation")
    await record(request, principal, "conversation.review", conversation_id,
                 {"tags": tags, "reviewed": reviewed})
    raise web.HTTPSeeOther(f"{PREFIX}/conversations/{_quote(conversation_id)}")


async def audit_page(request: web.Request) -> web.Response:
    """The newest 500 admin actions (logins, uploads, forgets, retries, reviews)."""
    rows = await audit.recent(deps(request).pool, 500)
    return render(request, "audit.html", title="Audit", rows=rows)


def _quote(value: str) -> str:
    return quote(value, safe="")


async def overview(request: web.Request) -> web.Response:
    try:
        days = min(max(int(request.query.get("days", "14")), 1), 366)
    except ValueError:
        raise web.HTTPBadRequest(text="days: a whole number of days") from None
    cache = request.config_dict[OVERVIEW_CACHE]
    now = time.monotonic()
    # an admin may ask for fresh figures; others get the cached ones (0.5 s at 1M rows)
    fresh = "fresh" in request.query and principal_of(request).is_admin
    if days in cache and now - cache[days][0] < OVERVIEW_TTL_S and not fresh:
        data = cache[days][1]
    else:
        data = await load_overview(deps(request).pool, days=days)
        cache[days] = (now, data)
    dead = await deps(request).inbox.dead_letter_count()
    return render(request, "overview.html", title="Overview", o=data, days=days,
                  dead_letters=dead, charts=_charts(data))


def _day(day: date, **query: str) -> str:
    return list_url(since=day.isoformat(), until=day.isoformat(), **query)


def _charts(o: Any) -> dict[str, Any]:
    """The overview's SVG charts; every bar links to the conversations behind it."""
    platforms = sorted({p.platform for p in o.per_platform})
    by_day: dict[date, dict[str, Any]] = {}
    for p in o.per_platform:
        by_day.setdefault(p.day, {})[p.platform] = p
    days = [d.day for d in o.per_day]
    def per_platform(figure: str) -> list[charts.Column]:
        return [charts.Column(d.strftime("%m-%d"), [
            charts.Segment(p, getattr(by_day.get(d, {}).get(p), figure, 0), _day(d, platform=p))
            for p in platforms]) for d in days]

    messages, conversations, users = (per_platform(f)
                                      for f in ("messages", "conversations", "users"))
    answered = [charts.Column(s.day.strftime("%m-%d"), [
        charts.Segment("from the knowledge base", s.from_knowledge, _day(s.day)),
        charts.Segment("not in the knowledge base", s.not_in_knowledge, _day(s.day)),
        charts.Segment("by an action", s.by_action, _day(s.day, action="1")),
        charts.Segment("model error", s.errors, _day(s.day, error="1"))]) for s in o.per_day]
    latency = [charts.Column(s.day.strftime("%m-%d"), [
        charts.Segment("p50 ms", round(s.latency_p50_ms or 0), _day(s.day)),
        charts.Segment("p95 ms", round(s.latency_p95_ms or 0),
                       _day(s.day, min_latency_ms=str(round(s.latency_p95_ms or 0))))],
        stacked=False) for s in o.per_day]
    feedback = [charts.Column(s.day.strftime("%m-%d"), [
        charts.Segment("up", s.feedback_up, _day(s.day, feedback="up")),
        charts.Segment("down", s.feedback_down, _day(s.day, feedback="down"))])
        for s in o.per_day]
    blocked = [charts.Column(s.day.strftime("%m-%d"), [
        charts.Segment("blocked", s.blocked, _day(s.day, blocked="1"))]) for s in o.per_day]
    rails = [charts.Column(rail, [charts.Segment("blocks", count, list_url(
        blocked="1", since=o.since.isoformat(), until=o.until.isoformat()))])
        for rail, count in sorted(o.blocks_by_rail.items(), key=lambda kv: -kv[1])]
    return {"messages": charts.bars(messages, "Messages per day by platform"),
            "conversations": charts.bars(conversations,
                                         "Conversations with messages per day by platform"),
            "users": charts.bars(users, "Unique users per day by platform"),
            "answered": charts.bars(answered, "Replies per day: where the answer came from"),
            "latency": charts.bars(latency, "Answer latency per day (ms)"),
            "feedback": charts.bars(feedback, "Feedback per day"),
            "blocked": charts.bars(blocked, "Replies with a rail block per day"),
            "rails": charts.bars(rails, "Rail blocks by rail") if rails else None}
