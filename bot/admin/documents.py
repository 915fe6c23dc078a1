"""The knowledge base in the console, and its HTTP API for scripts.

Pages: `GET /documents` (every document: version, chunks, last ingested, soft-deleted
state; an upload form), `GET /documents/{id}` (one document and its chunks), `GET
/documents/by-uri?uri=` (where a source link points), `POST /documents` (upload, admin),
`POST /documents/{id}/forget` (soft delete, admin).

API (bearer token or session; JSON):
- `GET /api/documents` -> 200 `{"documents": [DOCUMENT, ...]}` (`?deleted=1` includes the
  forgotten ones), DOCUMENT = `{"id", "uri", "title", "mime_type", "version", "chunks",
  "created_at", "updated_at", "deleted_at"}` (ISO 8601 times, `deleted_at` null when live).
- `GET /api/documents/{id}` -> 200 DOCUMENT, 404.
- `POST /api/documents` (multipart: `file`, optional `uri`; admin) -> 201 `{"document":
  DOCUMENT, "chunks_added", "chunks_unchanged", "chunks_removed"}`; 400 unreadable or of an
  unsupported type, 413 larger than ADMIN_UPLOAD_MAX_BYTES. The same `uri` again is a new
  version of that document; the default uri is `upload:FILENAME`. An empty file, a second
  `file` part, a `uri` longer than MAX_URI_BYTES or holding a NUL, and a malformed body are
  400. Uploads are stored one at a time per uri (`_ingest`).
- `DELETE /api/documents/{id}` (admin) -> 200 `{"forgotten": true}`, 404 when no live
  document has that id.
A change through the API by a browser session (not a bearer token) needs the page's CSRF token
in an `X-CSRF-Token` header (403 without).
Uploads are parsed by the loaders of `bot ingest` (Markdown, text, HTML, PDF, DOCX).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

import asyncpg
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from bot.admin.app import (
    PREFIX,
    admin_form,
    auth_of,
    deps,
    notice_of,
    notice_url,
    record,
    render,
)
from bot.admin.auth import Principal
from bot.admin.middleware import require_admin
from bot.errors import KnowledgeError
from bot.httpguard import streams_body

_DOCUMENTS = """
    SELECT d.id, d.source_uri AS uri, d.title, d.mime_type, d.version, d.created_at,
           d.updated_at, d.deleted_at,
           (SELECT count(*) FROM chunks c WHERE c.document_id = d.id) AS chunks
    FROM documents d"""
_CHUNKS = """SELECT ordinal, section, page, token_count, left(text, 400) AS text
             FROM chunks WHERE document_id = $1 ORDER BY ordinal LIMIT 500"""
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")
#: The longest `uri` of an upload, UTF-8 bytes (the unique index on documents.source_uri
#: takes at most ~2.7 kB).
MAX_URI_BYTES = 2048
_MAX_DOCUMENT_ID = 2**63 - 1  # documents.id is a bigint


def routes() -> list[web.RouteDef]:
    return [web.get("/documents", documents_page),
            web.get("/documents/by-uri", document_by_uri),
            web.get("/documents/{id:\\d+}", document_page),
            web.post("/documents", upload_form),
            web.post("/documents/{id:\\d+}/forget", forget_form),
            web.get("/api/documents", list_api),
            web.get("/api/documents/{id:\\d+}", get_api),
            web.post("/api/documents", upload_api),
            web.delete("/api/documents/{id:\\d+}", delete_api)]


def _json(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in dict(row).items()}


async def _list(pool: asyncpg.Pool, deleted: bool) -> list[asyncpg.Record]:
    where = "" if deleted else " WHERE d.deleted_at IS NULL"
    rows: list[asyncpg.Record] = await pool.fetch(
        _DOCUMENTS + where + " ORDER BY d.updated_at DESC, d.id DESC LIMIT 1000")
    return rows


async def _one(pool: asyncpg.Pool, document_id: int | None) -> asyncpg.Record | None:
    if document_id is None:
        return None
    row: asyncpg.Record | None = await pool.fetchrow(_DOCUMENTS + " WHERE d.id = $1",
                                                    document_id)
    return row


def _document_id(request: web.Request) -> int | None:
    """The route's document id, None when no document can have it (beyond a bigint)."""
    digits = request.match_info["id"]
    return int(digits) if len(digits) <= 19 and int(digits) <= _MAX_DOCUMENT_ID else None


async def documents_page(request: web.Request) -> web.Response:
    rows = await _list(deps(request).pool, deleted=True)
    return render(request, "documents.html", title="Knowledge base", documents=rows,
                  max_mib=deps(request).upload_max_bytes / 2**20,
                  notice=notice_of(request))


async def document_page(request: web.Request) -> web.Response:
    pool = deps(request).pool
    row = await _one(pool, _document_id(request))
    if row is None:
        raise web.HTTPNotFound(text="no such document")
    chunks = await pool.fetch(_CHUNKS, row["id"])
    return render(request, "document.html", title=row["title"], d=row, chunks=chunks)


async def document_by_uri(request: web.Request) -> web.Response:
    uri = request.query.get("uri", "")
    found = None if "\x00" in uri else await deps(request).pool.fetchval(
        "SELECT id FROM documents WHERE source_uri = $1", uri)
    if found is None:
        raise web.HTTPNotFound(text="no document has that source")
    raise web.HTTPSeeOther(f"{PREFIX}/documents/{found}")


async def list_api(request: web.Request) -> web.Response:
    rows = await _list(deps(request).pool, deleted=request.query.get("deleted") == "1")
    return web.json_response({"documents": [_json(r) for r in rows]})


async def get_api(request: web.Request) -> web.Response:
    row = await _one(deps(request).pool, _document_id(request))
    if row is None:
        return web.json_response({"error": "no such document"}, status=404)
    return web.json_response(_json(row))


class UploadError(Exception):
    """An upload refused: `status` (400, 403, 413) and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _receive(request: web.Request, principal: Principal, *, form: bool
                   ) -> tuple[str, str, str | None, bytes]:
    """(uri, file name, content type, bytes) of a multipart upload, read part by part within
    the size limit: one `file` part, an optional `uri` part (before or after it); a form's
    `csrf` part must come before the file and be valid."""
    if not request.content_type.startswith("multipart/"):
        raise UploadError(400, "send the file as multipart/form-data in a part named 'file'")
    try:
        return await _parts(request, principal, form=form)
    except (ValueError, HttpProcessingError) as exc:  # a malformed body or part header
        raise UploadError(400, f"malformed multipart body: {str(exc)[:200]}") from None


async def _parts(request: web.Request, principal: Principal, *, form: bool
                 ) -> tuple[str, str, str | None, bytes]:
    limit = deps(request).upload_max_bytes
    reader = await request.multipart()
    # a script with a bearer token needs no CSRF token; a browser session sends the header
    csrf_ok = not form and auth_of(request).check_csrf(
        principal, request.headers.get("X-CSRF-Token"))
    uri: str | None = None
    upload: tuple[str, str | None, bytes] | None = None
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "csrf":
            csrf_ok = auth_of(request).check_csrf(principal, await _field(part))
        elif part.name == "uri":
            uri = (await _field(part)).strip() or None
        elif part.name == "file":
            if not csrf_ok:
                raise UploadError(403, "the form's CSRF token is missing or wrong")
            if upload is not None:
                raise UploadError(400, "more than one part named 'file': upload one at a time")
            name = _UNSAFE_NAME.sub("_", PurePosixPath(part.filename or "").name)[:200]
            if not name.strip("._ "):
                raise UploadError(400, "the file part has no file name")
            data = bytearray()
            while block := await part.read_chunk(64 * 1024):
                data.extend(block)
                if len(data) > limit:
                    raise UploadError(413, f"larger than ADMIN_UPLOAD_MAX_BYTES={limit}")
            if not data:
                raise UploadError(400, f"{name}: the file is empty")
            upload = (name, part.headers.get("Content-Type"), bytes(data))
    if not csrf_ok:
        raise UploadError(403, "the form's CSRF token is missing or wrong")
    if upload is None:
        raise UploadError(400, "no part named 'file'")
    if uri is not None and (len(uri.encode()) > MAX_URI_BYTES or "\x00" in uri):
        raise UploadError(400, f"uri: at most {MAX_URI_BYTES} bytes, no NUL character")
    name, content_type, content = upload
    return uri or f"upload:{name}", name, content_type, content


async def _field(part: BodyPartReader) -> str:
    """A text part (`csrf`, `uri`) as UTF-8, at most MAX_URI_BYTES (else 400)."""
    data = bytearray()
    while block := await part.read_chunk(4096):
        data.extend(block)
        if len(data) > MAX_URI_BYTES:
            raise UploadError(400, f"{part.name}: at most {MAX_URI_BYTES} bytes")
    return data.decode()  # not UTF-8: UnicodeDecodeError, a ValueError (400)


async def _ingest(request: web.Request, principal: Principal, *, form: bool
                  ) -> tuple[dict[str, Any], asyncpg.Record]:
    """Receive and store an upload. Two uploads (or an upload and `bot ingest`) of one uri
    at once are stored one after the other (`ChunkStore.writing`), never mixed."""
    uri, filename, content_type, data = await _receive(request, principal, form=form)
    pool = deps(request).pool
    try:
        report = await deps(request).ingestor().ingest_upload(data, uri, filename,
                                                               content_type)
    except KnowledgeError as exc:
        raise UploadError(400, str(exc)) from None
    row = await pool.fetchrow(_DOCUMENTS + " WHERE d.source_uri = $1", uri)
    assert row is not None  # just stored
    summary = {"chunks_added": report.chunks_added, "chunks_unchanged": report.chunks_unchanged,
               "chunks_removed": report.chunks_removed}
    await record(request, principal, "document.upload", uri,
                 {"bytes": len(data), "mime_type": row["mime_type"], "version": row["version"],
                  **summary})
    return summary, row


@streams_body
async def upload_form(request: web.Request) -> web.Response:
    principal = require_admin(request)
    try:
        summary, row = await _ingest(request, principal, form=True)
    except UploadError as exc:
        if exc.status == 403:
            raise web.HTTPForbidden(text=str(exc)) from None
        rows = await _list(deps(request).pool, deleted=True)
        return render(request, "documents.html", status=exc.status, title="Knowledge base",
                      documents=rows, max_mib=deps(request).upload_max_bytes / 2**20,
                      notice="", error=str(exc))
    notice = (f"{row['uri']}: version {row['version']}, {summary['chunks_added']} chunks "
              f"added, {summary['chunks_unchanged']} unchanged")
    raise web.HTTPSeeOther(notice_url(request, "/documents", notice))


@streams_body
async def upload_api(request: web.Request) -> web.Response:
    principal = require_admin(request)
    try:
        summary, row = await _ingest(request, principal, form=False)
    except UploadError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)
    return web.json_response({"document": _json(row), **summary}, status=201)


async def _forget(request: web.Request, principal: Principal) -> bool:
    pool = deps(request).pool
    document_id = _document_id(request)
    uri = None if document_id is None else await pool.fetchval(
        "SELECT source_uri FROM documents WHERE id = $1", document_id)
    if uri is None or not await deps(request).store.forget(uri):
        return False
    await record(request, principal, "document.forget", uri)
    return True


async def forget_form(request: web.Request) -> web.Response:
    principal, _form = await admin_form(request)
    if not await _forget(request, principal):
        raise web.HTTPNotFound(text="no live document with that id")
    raise web.HTTPSeeOther(f"{PREFIX}/documents")


async def delete_api(request: web.Request) -> web.Response:
    principal = require_admin(request)
    if not auth_of(request).check_csrf(principal, request.headers.get("X-CSRF-Token")):
        return web.json_response({"error": "X-CSRF-Token missing or wrong"}, status=403)
    if not await _forget(request, principal):
        return web.json_response({"error": "no live document with that id"}, status=404)
    return web.json_response({"forgotten": True})
