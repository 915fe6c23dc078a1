"""Load Markdown, text, HTML, PDF and DOCX into a title and a list of sections.

A section is the text under one heading (its title is the heading path, "Install > Linux"),
or one page of a PDF (titled by the PDF outline entry covering that page, when there is one).
Sources are files, folders (searched recursively for the supported suffixes) and http(s) URLs.
Markdown, text and HTML that are binary are refused (see `_binary_reason`); what pypdf logs
while it repairs a PDF becomes the document's `warnings` (or part of the error), not log lines.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import logging
import threading
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bot.errors import KnowledgeError
from knowledge.markdown import markdown_headings

SUFFIX_MIME = {
    ".md": "text/markdown", ".markdown": "text/markdown",
    ".txt": "text/plain", ".text": "text/plain", ".rst": "text/plain",
    ".html": "text/html", ".htm": "text/html",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
#: The supported suffixes, for messages: ".md .markdown .txt ...".
SUPPORTED = " ".join(SUFFIX_MIME)
_TEXT_TYPES = frozenset({"text/markdown", "text/plain", "text/html"})
#: C0 controls that text does not contain (tab, LF, VT, FF, CR and ESC do occur), and DEL.
_CONTROLS = bytes(b for b in range(32) if b not in b"\t\n\v\f\r\x1b") + b"\x7f"
_MAX_CONTROL_SHARE = 0.01
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),  # before UTF-16's
         (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_LE, "utf-16"), (codecs.BOM_BE, "utf-16")]
_MAX_WARNINGS = 5


@dataclass
class Section:
    """Text under one heading. `page` is 1-based for paged formats, else None."""

    title: str
    text: str
    page: int | None = None


@dataclass
class LoadedDocument:
    """A parsed source. `sha256` is the hex digest of the raw bytes; `warnings` are the
    distinct problems the parser worked around (at most 5, then "and N more")."""

    uri: str
    title: str
    mime_type: str
    sha256: str
    sections: list[Section] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def is_url(source: str) -> bool:
    return urlsplit(source).scheme in ("http", "https")


def expand_sources(sources: Iterable[str]) -> list[str]:
    """Turn files, folders and URLs into a sorted list of loadable sources (absolute paths or
    URLs). Hidden files and folders are skipped.

    Raises:
        KnowledgeError: a path does not exist or has an unsupported suffix, or a folder holds
            no supported file ("no supported files in DIR (supported: .md ...)").
    """
    out: list[str] = []
    for source in sources:
        if is_url(source):
            out.append(source)
            continue
        path = Path(source).expanduser().resolve()
        if path.is_dir():
            found = [str(child) for child in sorted(path.rglob("*"))
                     if child.is_file() and child.suffix.lower() in SUFFIX_MIME and not any(
                         part.startswith(".") for part in child.relative_to(path).parts)]
            if not found:
                raise KnowledgeError(f"no supported files in {path} (supported: {SUPPORTED})")
            out.extend(found)
        elif path.is_file():
            if path.suffix.lower() not in SUFFIX_MIME:
                raise KnowledgeError(f"{path}: unsupported file type {path.suffix!r} "
                                     f"(supported: {SUPPORTED})")
            out.append(str(path))
        else:
            raise KnowledgeError(f"{source}: no such file or folder")
    return list(dict.fromkeys(out))


def mime_for(uri: str, content_type: str | None = None) -> str:
    """The MIME type from an HTTP Content-Type, else from the suffix; text/html for bare URLs."""
    if content_type:
        base = content_type.split(";")[0].strip().lower()
        if base in SUFFIX_MIME.values():
            return base
        if base == "application/xhtml+xml":
            return "text/html"
    suffix = Path(urlsplit(uri).path).suffix.lower()
    if suffix in SUFFIX_MIME:
        return SUFFIX_MIME[suffix]
    if is_url(uri):
        return "text/html"
    raise KnowledgeError(f"{uri}: unsupported type {content_type or suffix!r}")


def parse(data: bytes, uri: str, mime_type: str) -> LoadedDocument:
    """Parse raw bytes of the given type.

    Raises:
        KnowledgeError: the bytes are not a readable document of that type ("URI: cannot
            read as TYPE: why (parser warnings)"), or a text type is binary ("URI: not a text
            file (why)").
    """
    fallback = Path(urlsplit(uri).path).stem or uri
    try:
        parser = _PARSERS[mime_type]
    except KeyError:
        raise KnowledgeError(f"{uri}: unsupported type {mime_type}") from None
    if mime_type in _TEXT_TYPES and (why := _binary_reason(data)):
        raise KnowledgeError(f"{uri}: not a text file ({why})")
    _install_warning_capture()
    warnings: list[str] = []
    token = _parse_warnings.set(warnings)
    try:
        title, sections = parser(data)
    except KnowledgeError:
        raise
    except Exception as exc:  # parsers raise many types on corrupt input
        noted = f" ({'; '.join(_summary(warnings))})" if warnings else ""
        raise KnowledgeError(f"{uri}: cannot read as {mime_type}: {exc}{noted}") from exc
    finally:
        _parse_warnings.reset(token)
    sections = [Section(s.title.replace("\x00", ""), s.text.replace("\x00", ""), s.page)
                for s in sections if s.text.strip()]  # Postgres text cannot hold NUL
    title = (title or fallback).replace("\x00", "").strip()[:300]
    return LoadedDocument(uri=uri, title=title, mime_type=mime_type,
                          sha256=hashlib.sha256(data).hexdigest(), sections=sections,
                          warnings=_summary(warnings))


def load_file(path: str) -> LoadedDocument:
    """Read and parse one file (blocking)."""
    data = Path(path).read_bytes()
    return parse(data, path, mime_for(path))


def _bom_encoding(data: bytes) -> str | None:
    return next((name for bom, name in _BOMS if data.startswith(bom)), None)


def _binary_reason(data: bytes) -> str | None:
    """Why `data` is not text, or None. Text decodes by its Unicode byte-order mark, or has no
    NUL byte and is UTF-8 or at most 1% C0 control bytes (Latin-1 or cp1251 text has none)."""
    for encoding in filter(None, (_bom_encoding(data), "utf-8")):
        if encoding == "utf-8" and b"\x00" in data:
            return "contains NUL bytes"
        try:
            data.decode(encoding)
            return None
        except UnicodeDecodeError:
            pass
    controls = len(data) - len(data.translate(None, _CONTROLS))
    if controls > len(data) * _MAX_CONTROL_SHARE:
        return f"not UTF-8, and {controls / len(data):.0%} of its bytes are control characters"
    return None


def _decode(data: bytes) -> str:
    try:
        return data.decode(_bom_encoding(data) or "utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# The warnings of the parse running in this context (asyncio.to_thread copies the context into
# its thread, so concurrent parses each have their own), or None outside a parse.
_parse_warnings: ContextVar[list[str] | None] = ContextVar("parse_warnings", default=None)
_capture_lock = threading.Lock()


class _WarningCapture(logging.Handler):
    """The handler of the `pypdf` logger, which no longer propagates: during a parse a record's
    message joins that parse's warnings (once); outside one, the record goes to the root
    logger's handlers, as propagation would have sent it."""

    def handle(self, record: logging.LogRecord) -> bool:
        sink = _parse_warnings.get()
        if sink is not None:
            if (message := record.getMessage().strip()) not in sink and len(sink) < 100:
                sink.append(message)
            return True
        for handler in logging.getLogger().handlers or filter(None, [logging.lastResort]):
            if record.levelno >= handler.level:
                handler.handle(record)
        return True


def _install_warning_capture() -> None:
    with _capture_lock:
        logger = logging.getLogger("pypdf")
        if not any(isinstance(h, _WarningCapture) for h in logger.handlers):
            logger.addHandler(_WarningCapture())
            logger.propagate = False


def _summary(warnings: list[str]) -> list[str]:
    if len(warnings) <= _MAX_WARNINGS:
        return list(warnings)
    return [*warnings[:_MAX_WARNINGS - 1], f"and {len(warnings) - _MAX_WARNINGS + 1} more"]


def _join(path: list[str]) -> str:
    return " > ".join(p for p in path if p)


def _parse_markdown(data: bytes) -> tuple[str, list[Section]]:
    text = _decode(data).replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")  # markdown-it numbers lines by \n only (not \f, \u2028...)
    headings = markdown_headings(lines)
    doc_title = next((h[3] for h in headings if h[2] == 1), "")
    sections: list[Section] = []
    first = headings[0][0] if headings else len(lines)
    if first > 0:
        sections.append(Section("", "\n".join(lines[:first])))
    stack: list[tuple[int, str]] = []
    for n, (_start, end, level, title) in enumerate(headings):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        stop = headings[n + 1][0] if n + 1 < len(headings) else len(lines)
        sections.append(Section(_join([t for _, t in stack]), "\n".join(lines[end:stop])))
    return doc_title, sections


def _parse_text(data: bytes) -> tuple[str, list[Section]]:
    return "", [Section("", _decode(data))]


_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_BLOCK_TAGS = {"p", "li", "pre", "blockquote", "dd", "dt", "td", "th", "tr", "div", "section",
               "article", "table", "ul", "ol", "dl", "br", "figcaption", "caption"}


def _parse_html(data: bytes) -> tuple[str, list[Section]]:
    from bs4 import BeautifulSoup, Tag
    from bs4.element import NavigableString, PreformattedString

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "nav", "footer", "template", "svg"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.title:
        soup.title.decompose()
    root = soup.body or soup
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []

    def flush() -> None:
        text = "\n".join(line for line in (b.strip() for b in buf) if line)
        if text:
            sections.append(Section(_join([t for _, t in stack]), text))
        buf.clear()

    for node in root.descendants:
        if isinstance(node, Tag):
            if node.name in _HEADINGS:
                flush()
                level = int(node.name[1])
                heading = node.get_text(" ", strip=True)
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, heading))
                if not title and level == 1:
                    title = heading
            elif node.name in _BLOCK_TAGS:
                buf.append("\n")
        elif (isinstance(node, NavigableString) and not isinstance(node, PreformattedString)
              and not any(p.name in _HEADINGS for p in node.parents)):
            buf.append(str(node))
    flush()
    return title, _normalize_whitespace(sections)


def _normalize_whitespace(sections: list[Section]) -> list[Section]:
    out = []
    for s in sections:
        paragraphs = [" ".join(p.split()) for p in s.text.split("\n")]
        out.append(Section(s.title, "\n".join(p for p in paragraphs if p), s.page))
    return out


def _parse_pdf(data: bytes) -> tuple[str, list[Section]]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    # outline entries per page, in outline order: (heading text, heading path)
    outline: dict[int, list[tuple[str, str]]] = {}

    def walk(items: list[object], path: list[str]) -> None:
        last: list[str] = path
        for item in items:
            if isinstance(item, list):
                walk(item, last)
                continue
            try:
                page = reader.get_destination_page_number(item)  # type: ignore[arg-type]
                name = str(item.title)  # type: ignore[attr-defined]
            except Exception:  # noqa: S112 - a broken outline entry is skipped
                continue
            last = [*path, name]
            if page is not None:
                outline.setdefault(page, []).append((name.strip(), _join(last)))

    try:
        walk(list(reader.outline), [])
    except Exception:  # noqa: S110 - documents without a readable outline have no headings
        pass
    sections: list[Section] = []
    current = ""
    for index, page in enumerate(reader.pages):
        # split the page where an outline heading starts a line; text before the first
        # heading continues the previous section
        entries = list(outline.get(index, []))
        buf: list[str] = []
        for line in (page.extract_text() or "").splitlines():
            if entries and line.strip() == entries[0][0]:
                if buf:
                    sections.append(Section(current, "\n".join(buf), page=index + 1))
                    buf = []
                current = entries.pop(0)[1]
            buf.append(line)
        for _name, path in entries:  # headings not found in the text still start the page
            current = path
        if buf:
            sections.append(Section(current, "\n".join(buf), page=index + 1))
    meta_title = (reader.metadata.title if reader.metadata else None) or ""
    if not meta_title:
        first = next((s.text for s in sections if s.text.strip()), "")
        meta_title = first.strip().splitlines()[0] if first.strip() else ""
    return str(meta_title), _normalize_whitespace(sections)


def _parse_docx(data: bytes) -> tuple[str, list[Section]]:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(io.BytesIO(data))
    title = document.core_properties.title or ""
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            sections.append(Section(_join([t for _, t in stack]), "\n".join(buf)))
            buf.clear()

    for child in document.element.body.iterchildren():
        if child.tag.endswith("}p"):
            para = Paragraph(child, document)
            style = (para.style.name if para.style is not None else "") or ""
            text = para.text.strip()
            if not text:
                continue
            if style == "Title" or style.startswith("Heading"):
                flush()
                level = 0 if style == "Title" else int("".join(c for c in style if c.isdigit())
                                                       or 1)
                if level <= 1 and not title:
                    title = text
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, text))
            else:
                buf.append(text)
        elif child.tag.endswith("}tbl"):
            table = Table(child, document)
            for row in table.rows:
                buf.append(" | ".join(cell.text.strip() for cell in row.cells))
    flush()
    return title, sections


_PARSERS = {
    "text/markdown": _parse_markdown,
    "text/plain": _parse_text,
    "text/html": _parse_html,
    "application/pdf": _parse_pdf,
    SUFFIX_MIME[".docx"]: _parse_docx,
}
