"""Loaders on the real corpus: titles, heading paths, pages; clear errors on bad input."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bot.errors import KnowledgeError
from knowledge.loaders import expand_sources, load_file, mime_for, parse
from tests.conftest import CORPUS


def test_markdown_sections_follow_headings() -> None:
    doc = load_file(str(CORPUS / "platformdirs-readme.md"))
    assert doc.title == "platformdirs"
    titles = [s.title for s in doc.sections]
    assert "platformdirs > Quick start" in titles
    quick = next(s for s in doc.sections if s.title == "platformdirs > Quick start")
    assert "user_log_dir" in quick.text
    # a '#' inside a fenced code block is not a heading
    assert not any(t.endswith("> Linux)") for t in titles)


def test_html_title_and_text_without_scripts() -> None:
    doc = load_file(str(CORPUS / "zlib-usage-example.html"))
    assert doc.title == "zlib Usage Example"
    text = "\n".join(s.text for s in doc.sections)
    assert "#define CHUNK 16384" in text
    assert "<" not in text.split("#include")[0]  # tags are gone


def test_pdf_sections_come_from_the_outline_with_pages() -> None:
    doc = load_file(str(CORPUS / "python-try-and-with-statements.pdf"))
    assert doc.title == "Python Language Reference: the try and with statements"
    finally_sections = [s for s in doc.sections if s.title.endswith('"finally" clause')]
    assert finally_sections and finally_sections[0].page == 2
    assert "finally" in finally_sections[0].text
    assert doc.sections[-1].title == 'The "with" statement' and doc.sections[-1].page == 3


def test_docx_headings_become_section_paths() -> None:
    doc = load_file(str(CORPUS / "python-import-statement.docx"))
    assert doc.title == "Python Language Reference: the import statement"
    assert [s.title for s in doc.sections] == [
        'The "import" statement', 'The "import" statement > Future statements']
    assert all(s.page is None for s in doc.sections)


def test_expand_sources_finds_supported_files_recursively(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.md").write_text("# A\ntext")
    (tmp_path / "b.txt").write_text("plain")
    (tmp_path / "c.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "d.md").write_text("# D")
    found = expand_sources([str(tmp_path), "https://example.org/page"])
    assert found == [str(tmp_path / "b.txt"), str(tmp_path / "sub" / "a.md"),
                     "https://example.org/page"]


def test_unsupported_and_missing_sources_are_clear_errors(tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG")
    with pytest.raises(KnowledgeError, match="unsupported file type"):
        expand_sources([str(png)])
    with pytest.raises(KnowledgeError, match="no such file"):
        expand_sources([str(tmp_path / "missing.md")])


def test_corrupt_pdf_is_a_knowledge_error() -> None:
    with pytest.raises(KnowledgeError, match="cannot read as application/pdf"):
        parse(b"%PDF-1.4 this is not a pdf", "broken.pdf", "application/pdf")


def test_mime_prefers_content_type_over_suffix() -> None:
    assert mime_for("https://x.org/doc", "text/markdown; charset=utf-8") == "text/markdown"
    assert mime_for("https://x.org/file.pdf", None) == "application/pdf"
    assert mime_for("https://x.org/", "application/octet-stream") == "text/html"


def test_markdown_with_form_feeds_keeps_text_under_its_heading() -> None:
    data = "# Title\n\nintro \x0c still intro\n\n## Part\n\npart text\u2028same line\n".encode()
    doc = parse(data, "ff.md", "text/markdown")
    assert [(s.title, s.text.strip()) for s in doc.sections] == [
        ("Title", "intro \x0c still intro"), ("Title > Part", "part text\u2028same line")]


def test_utf16_text_has_no_nul_characters() -> None:
    doc = parse("héllo wörld".encode("utf-16"), "notes.txt", "text/plain")
    assert "\x00" not in doc.sections[0].text and "\x00" not in doc.title
    assert doc.sections[0].text == "héllo wörld"  # decoded by its byte-order mark


def _noise(size: int, *, seed: int = 11, nul: bool = True) -> bytes:
    data = random.Random(seed).randbytes(size)
    return data if nul else data.replace(b"\x00", b"\x01")


@pytest.mark.parametrize(("name", "mime"), [("noise.txt", "text/plain"),
                                            ("noise.md", "text/markdown"),
                                            ("noise.html", "text/html")])
@pytest.mark.parametrize("nul", [True, False])
def test_random_bytes_in_a_text_type_are_not_a_text_file(name: str, mime: str,
                                                         nul: bool) -> None:
    # finding 11: 30 KB of random bytes named .txt used to ingest as 101 chunks
    with pytest.raises(KnowledgeError, match=rf"^{name}: not a text file \("):
        parse(_noise(30 * 1024, nul=nul), name, mime)


def test_text_in_legacy_encodings_and_utf16_is_still_text() -> None:
    latin1 = ("Café crème, naïve façade. " * 200).encode("latin-1")
    assert "Café crème" in parse(latin1, "menu.txt", "text/plain").sections[0].text
    cyrillic = ("Привет, мир. " * 200).encode("cp1251")  # mostly bytes >= 0x80, no controls
    assert parse(cyrillic, "ru.txt", "text/plain").sections
    utf16 = "# Notes\n\nhéllo wörld\n".encode("utf-16")
    doc = parse(utf16, "notes.md", "text/markdown")
    assert doc.title == "Notes" and doc.sections[0].text.strip() == "héllo wörld"
    ansi_log = b"\x1b[32mok\x1b[0m step one\r\n\tindented\x0c\n" * 100
    assert parse(ansi_log, "build.txt", "text/plain").sections


def test_a_folder_without_supported_files_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    (other / ".hidden").mkdir(parents=True)
    (other / ".hidden" / "a.md").write_text("# hidden")
    (other / "picture.png").write_bytes(b"\x89PNG")
    for folder in (empty, other):
        with pytest.raises(KnowledgeError) as caught:
            expand_sources([str(folder)])
        assert str(caught.value) == (
            f"no supported files in {folder} "
            "(supported: .md .markdown .txt .text .rst .html .htm .pdf .docx)")
    # one empty folder among good sources is still reported, not silently skipped
    (tmp_path / "good.md").write_text("# Good")
    with pytest.raises(KnowledgeError, match="no supported files in"):
        expand_sources([str(tmp_path / "good.md"), str(empty)])


def _pdf_with_bad_startxref() -> bytes:
    """The corpus PDF with its startxref pointer off by 7 bytes: pypdf warns and recovers."""
    data = (CORPUS / "python-try-and-with-statements.pdf").read_bytes()
    found = re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", data)
    assert found
    return data[:found.start(1)] + str(int(found.group(1)) + 7).encode() + data[found.end(1):]


@contextmanager
def _root_records() -> Iterator[list[logging.LogRecord]]:
    """Records that reach the root logger's handlers (where `bot.log` writes to stderr)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root, handler = logging.getLogger(), Keep(logging.DEBUG)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_truncated_pdf_fails_once_with_pypdf_warnings_in_the_error() -> None:
    data = (CORPUS / "python-try-and-with-statements.pdf").read_bytes()
    with _root_records() as logged, pytest.raises(KnowledgeError) as caught:
        parse(data[:len(data) * 2 // 3], "cut.pdf", "application/pdf")
    message = str(caught.value)
    assert message.startswith("cut.pdf: cannot read as application/pdf: ")
    assert message.count("EOF marker not found") == 1
    assert logged == []


def test_recoverable_pdf_defects_are_document_warnings_not_log_lines() -> None:
    with _root_records() as logged:
        doc = parse(_pdf_with_bad_startxref(), "skewed.pdf", "application/pdf")
    assert doc.title == "Python Language Reference: the try and with statements"
    assert doc.warnings and any("startxref" in w for w in doc.warnings)
    assert len(doc.warnings) == len(set(doc.warnings))
    assert logged == []
    # pypdf's logging outside a parse still reaches the root logger, as before
    with _root_records() as logged:
        logging.getLogger("pypdf._reader").warning("outside a parse")
    assert [r.getMessage() for r in logged] == ["outside a parse"]
