"""Loaders on the real corpus: titles, heading paths, pages; clear errors on bad input."""

from __future__ import annotations

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
