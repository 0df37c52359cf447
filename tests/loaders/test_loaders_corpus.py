"""A generated corpus of every loader type and every skip reason, walked and loaded end to end."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from parallelrag.loaders import LoadResult, Skip, iter_sources, load_path

MAX_BYTES = 10_000

HTML_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>The  Handbook &amp; Guide</title>
<style>body { color: red; } .secret { display: none }</style>
<script>var leaked = "SCRIPT_SHOULD_NOT_APPEAR";</script></head>
<body>
<h1>Handbook</h1>
<p>Caf&eacute; &lt;b&gt; &#8212; the &quot;bridge&quot; opens at 9&nbsp;am.</p>
<h2>Rules&para;</h2>
<ul><li>First rule</li><li>Second <em>rule</em></li></ul>
<noscript>NOSCRIPT_SHOULD_NOT_APPEAR</noscript>
<table><tr><th>Key</th><th>Value</th></tr><tr><td>color</td><td>teal</td></tr></table>
<pre>line one
    indented line</pre>
</body></html>
"""

CP1252_TEXT = (
    "Le café était très “agréable” — naïve façade, déjà vu.\n"
    "Prix : 5 € ou 3 £. Über die Straße, schöne Grüße.\n"
)


def make_pdf(pages: list[str], title: str | None = None) -> bytes:
    """A minimal, valid PDF with one line of Helvetica text per page (correct xref offsets)."""
    n = len(pages)
    objs: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(f'{4 + 2 * i} 0 R' for i in range(n))}] /Count {n} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
        objs.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objs.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    info = None
    if title is not None:
        objs.append(f"<< /Title ({title}) >>".encode("latin-1"))
        info = len(objs)
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for num, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % num + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    trailer = b"<< /Size %d /Root 1 0 R" % (len(objs) + 1)
    if info is not None:
        trailer += b" /Info %d 0 R" % info
    out += b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def undecodable_bytes() -> bytes:
    """Bytes with no NUL that are not UTF-8, not cp1252, and that no detector accepts."""
    rnd = random.Random(1234)
    return bytes(rnd.randrange(1, 256) for _ in range(3000))


def build_corpus(root: Path) -> None:
    def write(rel: str, data: bytes | str) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            p.write_text(data, encoding="utf-8")
        else:
            p.write_bytes(data)

    write("a.txt", "Alpha fact: the capital of Zorblax is Quux.\n")
    write("big.log", "x" * 20_000)
    rnd = random.Random(7)
    write("bin/blob.dat", bytes(rnd.randrange(256) for _ in range(4096)) + b"\x00\x00")
    write("bin/image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100))
    write("blank.md", "  \n\t\n   ")
    os.symlink("does-not-exist.txt", root / "broken.txt")
    write("data/records.json",
          '[{"id": 1, "title": "First", "body": {"text": "Record one says hello."}, "tags": ["a"]},'
          ' {"id": 2, "body": {}},'
          ' {"id": 3, "lang": "en", "body": {"text": "Record three has the fact."}}]')
    write("data/stream.jsonl",
          '{"body": {"text": "Line one text."}, "n": 1}\n\n'
          '{"body": {"text": "Line two text."}, "n": 2, "ok": true}\n')
    write("docs/guide.md", "# Guide Title\n\nThe guide explains setup.\r\n\r\n## Step\n\nDo it.\n")
    write("docs/manual.pdf", make_pdf(["Page one: the PDF fact is Marmalade.",
                                       "Page two: second page text."], title="Manual"))
    write("docs/nested/deep/notes.rst", "Deep Notes\n==========\n\nRST body text.\n")
    write("docs/page.html", HTML_PAGE)
    write("empty.txt", b"")
    write("legacy/bad.txt", undecodable_bytes())
    write("legacy/cp1252.txt", CP1252_TEXT.encode("cp1252"))
    (root / "loops").mkdir()
    os.symlink("..", root / "loops" / "up")  # points to root: an ancestor
    os.symlink(".", root / "loops" / "here")  # points to its own parent directory
    write(".hidden/secret.txt", "HIDDEN")
    write(".env", "API_KEY=sk-should-not-be-loaded")
    write("node_modules/pkg/index.txt", "node module text")
    write("docs/__pycache__/x.txt", "cache")


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    build_corpus(root)
    return root


def _summary(results: list[LoadResult], root: Path) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    for r in results:
        rel = os.path.relpath(r.path, root)
        if r.skip is not None:
            assert r.documents == []
            reason = r.skip.reason
            out.append((rel, "undecodable" if reason.startswith("undecodable") else reason))
        else:
            out.append((rel, [os.path.relpath(d.source, root) for d in r.documents]))
    return out


EXPECTED = [
    ("a.txt", ["a.txt"]),
    ("big.log", f"too large (20000 bytes > max_bytes {MAX_BYTES})"),
    ("bin/blob.dat", "binary"),
    ("bin/image.png", "binary"),
    ("blank.md", "empty"),
    ("broken.txt", "broken symlink"),
    ("data/records.json", ["data/records.json#0", "data/records.json#2"]),
    ("data/stream.jsonl", ["data/stream.jsonl#0", "data/stream.jsonl#1"]),
    ("docs/guide.md", ["docs/guide.md"]),
    ("docs/manual.pdf", ["docs/manual.pdf"]),
    ("docs/nested/deep/notes.rst", ["docs/nested/deep/notes.rst"]),
    ("docs/page.html", ["docs/page.html"]),
    ("empty.txt", "empty"),
    ("legacy/bad.txt", "undecodable"),
    ("legacy/cp1252.txt", ["legacy/cp1252.txt"]),
    ("loops/here", "symlink loop"),
    ("loops/up", "symlink loop"),
]


def test_corpus_exact_documents_and_skips(corpus: Path) -> None:
    skips: list[Skip] = []
    results = list(load_path([corpus], max_bytes=MAX_BYTES, text_field="body.text",
                             on_skip=skips.append))
    assert _summary(results, corpus) == EXPECTED
    assert [s.path for s in skips] == [r.path for r in results if r.skip]

    docs = {os.path.relpath(d.source, corpus): d for r in results for d in r.documents}
    assert docs["a.txt"].text == "Alpha fact: the capital of Zorblax is Quux.\n"
    assert docs["docs/guide.md"].text == "# Guide Title\n\nThe guide explains setup.\n\n## Step\n\nDo it.\n"
    assert docs["docs/guide.md"].metadata["title"] == "Guide Title"
    assert docs["docs/nested/deep/notes.rst"].metadata["title"] == "Deep Notes"
    assert docs["legacy/cp1252.txt"].text == CP1252_TEXT

    pdf = docs["docs/manual.pdf"]
    assert "Marmalade" in pdf.text and "second page text" in pdf.text
    assert pdf.metadata["pages"] == 2 and pdf.metadata["title"] == "Manual"
    assert pdf.metadata["mime"] == "application/pdf"
    second = pdf.metadata["page_starts"][1]
    assert pdf.text[second:].startswith("Page two")

    html = docs["docs/page.html"]
    assert html.metadata["title"] == "The Handbook & Guide"
    assert html.metadata["mime"] == "text/html"
    assert "SCRIPT_SHOULD_NOT_APPEAR" not in html.text and "color: red" not in html.text
    assert "NOSCRIPT" not in html.text
    assert html.text.startswith("# Handbook\n\nCafé <b> — the \"bridge\" opens at 9 am.\n\n## Rules\n\n")
    assert "- First rule\n- Second rule" in html.text
    assert "Key | Value\ncolor | teal" in html.text
    assert "line one\n    indented line" in html.text

    rec0 = docs["data/records.json#0"]
    assert rec0.text == "Record one says hello."
    assert rec0.metadata["id"] == 1 and rec0.metadata["title"] == "First"
    assert rec0.metadata["record"] == 0 and "tags" not in rec0.metadata and "body" not in rec0.metadata
    rec2 = docs["data/records.json#2"]
    assert rec2.metadata["lang"] == "en" and rec2.metadata["title"] == "records"
    line1 = docs["data/stream.jsonl#1"]
    assert line1.text == "Line two text."
    assert line1.metadata["line"] == 3 and line1.metadata["ok"] is True and line1.metadata["n"] == 2

    for rel, doc in docs.items():
        md = doc.metadata
        assert set(md) >= {"mime", "title", "bytes", "mtime"}, rel
        file_rel = rel.split("#")[0]
        assert md["bytes"] == (corpus / file_rel).stat().st_size
        assert md["mtime"] == (corpus / file_rel).stat().st_mtime

    for r in results:
        if r.path.endswith(("big.log", "broken.txt")) or "loops" in r.path:
            assert r.content_hash is None  # skipped before reading
        else:
            assert r.content_hash == hashlib.sha256(Path(r.path).read_bytes()).hexdigest()


def test_hidden_and_default_excludes_are_silent_and_can_be_disabled(corpus: Path) -> None:
    paths = [os.path.relpath(p, corpus) for p in iter_sources([corpus], max_bytes=None)]
    assert not any(p.startswith((".", "node_modules")) or "__pycache__" in p for p in paths)
    every = [os.path.relpath(p, corpus)
             for p in iter_sources([corpus], max_bytes=None, default_excludes=())]
    assert {".env", ".hidden/secret.txt", "node_modules/pkg/index.txt",
            "docs/__pycache__/x.txt"} <= set(every)


def test_workers_give_identical_ordered_results(corpus: Path) -> None:
    serial = list(load_path(corpus, max_bytes=MAX_BYTES, text_field="body.text"))
    threaded = list(load_path(corpus, max_bytes=MAX_BYTES, text_field="body.text", workers=3))
    assert _summary(threaded, corpus) == _summary(serial, corpus) == EXPECTED
    assert [r.content_hash for r in threaded] == [r.content_hash for r in serial]
    assert [[d.text for d in r.documents] for r in threaded] == \
        [[d.text for d in r.documents] for r in serial]


def test_walk_order_is_sorted_and_independent_of_creation_order(tmp_path: Path) -> None:
    names = ["b/z.txt", "b/a.txt", "a.txt", "B.txt", "a/c/d.txt", "a/b.txt", "a-b.txt", "c.md"]
    orders = []
    for k, seed in enumerate((1, 2, 3)):
        root = tmp_path / f"r{k}"
        shuffled = names[:]
        random.Random(seed).shuffle(shuffled)
        for n in shuffled:
            (root / n).parent.mkdir(parents=True, exist_ok=True)
            (root / n).write_text(n)
        orders.append([p.relative_to(root).as_posix() for p in iter_sources([root])])
    assert orders[0] == orders[1] == orders[2]
    # entries sorted by name at every level, depth first ("a" < "a-b.txt" < "a.txt")
    assert orders[0] == ["B.txt", "a/b.txt", "a/c/d.txt", "a-b.txt", "a.txt",
                         "b/a.txt", "b/z.txt", "c.md"]
