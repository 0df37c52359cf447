"""Chunk context (parallelrag.pipeline.context): title + heading path, stored beside the text."""

from __future__ import annotations

from pathlib import Path

import pytest

from parallelrag.documents import Chunk, Document
from parallelrag.embeddings import EmbeddingClient
from parallelrag.errors import ConfigError
from parallelrag.loaders import load_file
from parallelrag.pipeline import Index
from parallelrag.pipeline.context import (
    MAX_CONTEXT_CHARS,
    chunk_context,
    heading_path,
    markdown_outline,
)


def _ctx(doc: Document, offset: int) -> str:
    return chunk_context(doc, Chunk("x", offset, offset + 1, 0))


def test_heading_path_keeps_the_enclosing_headings_only() -> None:
    outline = [(0, 1, "Guide"), (10, 2, "Install"), (20, 3, "Linux"), (30, 2, "Use"),
               (40, 3, "CLI"), (50, 4, "Flags")]
    assert heading_path(outline, 0) == ["Guide"]
    assert heading_path(outline, 25) == ["Guide", "Install", "Linux"]
    assert heading_path(outline, 30) == ["Guide", "Use"]  # a chunk starting at a heading
    assert heading_path(outline, 55) == ["Guide", "Use", "CLI", "Flags"]
    assert heading_path([(5, 2, "Late")], 0) == []  # before the first heading


def test_title_is_dropped_when_the_top_heading_says_it() -> None:
    doc = Document("x" * 100, metadata={"title": "os.path — Common pathname manipulations — "
                                                 "Python 3.11 documentation"},
                   outline=[(0, 1, "os.path — Common pathname manipulations"), (50, 2, "Notes")])
    assert _ctx(doc, 60) == "os.path — Common pathname manipulations > Notes"
    other = Document("x" * 100, metadata={"title": "My Site"}, outline=[(0, 1, "Intro")])
    assert _ctx(other, 10) == "My Site > Intro"
    assert _ctx(Document("plain text"), 0) == ""
    assert _ctx(Document("plain", metadata={"title": "  T  "}), 0) == "T"


def test_markdown_headings_are_parsed_outside_code_fences() -> None:
    text = "# Guide\n\nintro\n\n```\n# not a heading\n```\n\n## Install ##\n\ntext\n### Linux\nmore"
    outline = markdown_outline(text)
    assert [(lv, t) for _, lv, t in outline] == [(1, "Guide"), (2, "Install"), (3, "Linux")]
    for off, _, t in outline:
        assert text[off:].lstrip("# ").startswith(t)
    doc = Document(text)
    assert _ctx(doc, len(text) - 2) == "Guide > Install > Linux"
    assert _ctx(doc, text.index("intro")) == "Guide"


def test_long_paths_keep_the_top_and_the_innermost_heading() -> None:
    outline = [(0, 1, "Top " + "t" * 90), (1, 2, "Middle " + "m" * 90), (2, 3, "Inner")]
    ctx = _ctx(Document("xxxx", outline=outline), 3)
    assert len(ctx) <= MAX_CONTEXT_CHARS
    assert ctx.startswith("Top ") and ctx.endswith("Inner") and "Middle" not in ctx


def test_html_loader_outline_points_at_the_heading_lines(tmp_path: Path) -> None:
    page = ("<html><head><title>Shelf — Docs</title></head><body><h1>Shelf</h1><p>About.</p>"
            "<h2>Storing <a class='headerlink' href='#s'>¶</a></h2><p>Put things away.</p>"
            "<h3>Fragile items</h3><p>Wrap them in paper.</p><h2>Finding</h2><p>Look.</p>"
            "</body></html>")
    (tmp_path / "p.html").write_text(page)
    docs = load_file(tmp_path / "p.html")
    assert isinstance(docs, list)
    doc = docs[0]
    assert [(lv, t) for _, lv, t in doc.outline] == [(1, "Shelf"), (2, "Storing"),
                                                    (3, "Fragile items"), (2, "Finding")]
    for off, lv, t in doc.outline:
        assert doc.text[off:].startswith("#" * lv + " " + t)
    wrap = doc.text.index("Wrap them")
    assert _ctx(doc, wrap) == "Shelf > Storing > Fragile items"
    assert _ctx(doc, doc.text.index("Look.")) == "Shelf > Finding"


@pytest.fixture(scope="module")
def wordllama() -> EmbeddingClient:
    return EmbeddingClient.local("wordllama")


def test_index_stores_context_and_keyword_search_finds_a_chunk_by_its_heading(
        tmp_path: Path, wordllama: EmbeddingClient) -> None:
    corpus = tmp_path / "c"
    corpus.mkdir()
    body = " ".join(f"Plain sentence number {i} about nothing in particular." for i in range(60))
    (corpus / "guide.md").write_text(f"# Zanzibar handbook\n\n## Quokka maintenance\n\n{body}\n")
    (corpus / "other.md").write_text(f"# Other\n\n{body}\n")
    with Index.open(tmp_path / "plain", embedder=wordllama) as plain:  # the default: off
        plain.ingest([corpus])
        assert all(h.context == "" for h in plain.search("plain sentence", k=5))
        assert all("quokka" in h.text.lower()
                   for h in plain.search("quokka", k=50, mode="keyword"))
    with pytest.raises(ConfigError, match="chunk_context"):
        Index.open(tmp_path / "plain", embedder=wordllama, chunk_context=True)
    with Index.open(tmp_path / "idx", embedder=wordllama, chunk_context=True) as index:
        index.ingest([corpus])
        hits = index.search("quokka", k=50, mode="keyword")
        assert hits, "the heading word is keyword-indexed with every chunk under it"
        texts = {h.source: h for h in hits}
        assert all("guide.md" in s for s in texts)
        deep = [h for h in hits if "quokka" not in h.text.lower()]
        assert deep, "chunks whose own text lacks the heading are found through their context"
        for h in deep:
            assert h.context == "Zanzibar handbook > Quokka maintenance"
            text = (corpus / "guide.md").read_text()
            assert text[h.start:h.end] == h.text  # offsets and text unchanged


def test_pdf_outline_entries_start_at_their_pages(tmp_path: Path) -> None:
    import io

    import pypdf

    from parallelrag.loaders.pdf import load_pdf

    w = pypdf.PdfWriter()
    for _ in range(3):
        w.add_blank_page(200, 200)
    ch1 = w.add_outline_item(title="Chapter 1", page_number=0)
    w.add_outline_item(title="Section 1.1", page_number=1, parent=ch1)
    w.add_outline_item(title="Chapter 2", page_number=2)
    buf = io.BytesIO()
    w.write(buf)
    doc = load_pdf(tmp_path / "x.pdf", buf.getvalue())[0]
    starts = doc.metadata["page_starts"]
    assert doc.outline == [(starts[0], 1, "Chapter 1"), (starts[1], 2, "Section 1.1"),
                           (starts[2], 1, "Chapter 2")]
    assert _ctx(doc, starts[1]) == "Chapter 1 > Section 1.1"
    plain = pypdf.PdfWriter()
    plain.add_blank_page(100, 100)
    buf2 = io.BytesIO()
    plain.write(buf2)
    assert load_pdf(tmp_path / "y.pdf", buf2.getvalue())[0].outline == []
