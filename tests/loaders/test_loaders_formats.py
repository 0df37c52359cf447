"""Per-format loading: JSON/JSONL options, PDF failure modes, the registry, sniffing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from parallelrag.documents import Document
from parallelrag.errors import LoaderError
from parallelrag.loaders import LOADERS, Skip, load_file, load_source, loader_for, register_loader

sys.path.insert(0, str(Path(__file__).parent))
from test_loaders_corpus import make_pdf


def _docs(result: list[Document] | Skip) -> list[Document]:
    assert isinstance(result, list), result
    return result


def test_json_without_text_field_is_one_pretty_document(tmp_path: Path) -> None:
    p = tmp_path / "cfg.json"
    p.write_text('{"b": [1, 2], "name": "ünï"}')
    (doc,) = _docs(load_file(p))
    assert doc.text == json.dumps({"b": [1, 2], "name": "ünï"}, indent=2, ensure_ascii=False)
    assert doc.source == str(p) and doc.metadata["mime"] == "application/json"
    assert doc.metadata["title"] == "cfg"


def test_json_single_object_with_text_field_and_dotted_paths(tmp_path: Path) -> None:
    p = tmp_path / "one.json"
    p.write_text('{"meta.title": "literal key", "items": [{"text": "first"}, {"text": "second"}], "x": 1}')
    (doc,) = _docs(load_file(p, text_field="items.1.text"))
    assert doc.text == "second" and doc.source == str(p) and doc.metadata["x"] == 1
    (doc,) = _docs(load_file(p, text_field="meta.title"))  # an exact key with a dot wins
    assert doc.text == "literal key"


def test_json_list_of_strings_text_and_numbers(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text('[{"t": ["a", "b"]}, {"t": 42}, {"t": {"nested": 1}}, {"t": "  "}, "bare"]')
    docs = _docs(load_file(p, text_field="t"))
    assert [(d.source, d.text) for d in docs] == [(f"{p}#0", "a\nb"), (f"{p}#1", "42")]


def test_json_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": ')
    skip = load_file(bad)
    assert isinstance(skip, Skip) and skip.reason.startswith("invalid JSON")
    none = tmp_path / "none.json"
    none.write_text('[{"a": "x"}]')
    assert load_file(none, text_field="text") == Skip(str(none), "no records with text field 'text'")
    badl = tmp_path / "bad.jsonl"
    badl.write_text('{"text": "ok"}\n{oops\n')
    skip = load_file(badl, text_field="text")
    assert isinstance(skip, Skip) and skip.reason.startswith("invalid JSON on line 2")


def test_jsonl_without_text_field_is_one_document_per_record(tmp_path: Path) -> None:
    p = tmp_path / "s.ndjson"
    p.write_text('{"a": 1}\r\n{"b": "two"}\r\n')
    docs = _docs(load_file(p))
    assert [d.text for d in docs] == ['{\n  "a": 1\n}', '{\n  "b": "two"\n}']
    assert [d.source for d in docs] == [f"{p}#0", f"{p}#1"]
    assert docs[1].metadata["line"] == 2 and docs[1].metadata["mime"] == "application/x-ndjson"


def test_pdf_without_pypdf_is_a_reported_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "m.pdf"
    p.write_bytes(make_pdf(["hello"]))
    monkeypatch.setitem(sys.modules, "pypdf", None)  # import pypdf → ImportError
    skip = load_file(p)
    assert isinstance(skip, Skip) and skip.reason.startswith("pypdf not installed")


def test_pdf_damaged_and_textless(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    skip = load_file(bad)
    assert isinstance(skip, Skip) and skip.reason.startswith("invalid PDF")
    blank = tmp_path / "blank.pdf"
    blank.write_bytes(make_pdf([""]))
    assert load_file(blank) == Skip(str(blank), "empty")


def test_pdf_pages_and_offsets(tmp_path: Path) -> None:
    p = tmp_path / "three.pdf"
    p.write_bytes(make_pdf(["alpha page", "beta page", "gamma page"]))
    (doc,) = _docs(load_file(p))
    assert doc.metadata["pages"] == 3 and doc.metadata["title"] == "three"
    starts = doc.metadata["page_starts"]
    assert [doc.text[s:].split("\n")[0] for s in starts] == ["alpha page", "beta page", "gamma page"]


def test_unknown_suffix_is_sniffed(tmp_path: Path) -> None:
    code = tmp_path / "script.py"
    code.write_text("print('hi')\n")
    (doc,) = _docs(load_file(code))
    assert doc.text == "print('hi')\n" and doc.metadata["mime"] == "text/plain"
    noext = tmp_path / "README"
    noext.write_text("read me")
    assert _docs(load_file(noext))[0].text == "read me"
    blob = tmp_path / "x.bin"
    blob.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(64))
    assert load_file(blob) == Skip(str(blob), "binary")


def test_missing_and_directory(tmp_path: Path) -> None:
    assert load_file(tmp_path / "nope.txt") == Skip(str(tmp_path / "nope.txt"), "not found")
    assert load_file(tmp_path) == Skip(str(tmp_path), "not a regular file")


def test_register_custom_loader_and_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("parallelrag.loaders.core.LOADERS", dict(LOADERS))
    from parallelrag.loaders import core

    def load_org(path: Path, data: bytes, /, **options: Any) -> list[Document]:
        return [Document(data.decode().upper(), metadata={"mime": "text/org", "opts": options})]

    def load_fail(path: Path, data: bytes, /, **options: Any) -> list[Document]:
        raise LoaderError("custom reason")

    def load_crash(path: Path, data: bytes, /, **options: Any) -> list[Document]:
        raise ValueError("boom")

    register_loader("org", load_org)
    register_loader([".fail"], load_fail)
    register_loader(".tar.crash", load_crash)
    assert core.LOADERS[".org"] is load_org
    org = tmp_path / "n.org"
    org.write_text("* heading")
    (doc,) = _docs(load_file(org, text_field="f"))
    assert doc.text == "* HEADING" and doc.metadata["mime"] == "text/org"
    assert doc.metadata["opts"] == {"text_field": "f"} and doc.source == str(org)
    fail = tmp_path / "x.fail"
    fail.write_text("x")
    # a loader's LoaderError is a failure to load the file, unless it says otherwise
    assert load_file(fail) == Skip(str(fail), "custom reason", failed=True)
    crash = tmp_path / "x.TAR.crash"
    crash.write_text("x")
    assert loader_for(crash) is load_crash
    assert load_file(crash) == Skip(str(crash), "loader error: ValueError: boom", failed=True)


def test_load_source_hash_and_max_bytes(tmp_path: Path) -> None:
    p = tmp_path / "a.md"
    p.write_text("# T\n\nbody\n")
    r = load_source(p)
    assert r.ok and r.content_hash is not None and len(r.content_hash) == 64
    r = load_source(p, max_bytes=3)
    assert not r.ok and r.skip == Skip(str(p), "too large (10 bytes > max_bytes 3)")
    assert r.content_hash is None
    empty = tmp_path / "e.txt"
    empty.write_bytes(b"")
    r = load_source(empty)
    assert r.skip == Skip(str(empty), "empty")
    assert r.content_hash == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
