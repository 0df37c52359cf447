"""Issue 14: what goes into an index (Documents, pairs, generators; one document per file
whatever its path's spelling), what its report counts, and the settings it remembers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from parallelrag import EmbeddingClient
from parallelrag.documents import Document
from parallelrag.errors import ConfigError
from parallelrag.pipeline import Index, IngestProgress
from parallelrag.sim import SimServer
from parallelrag.splitters import RecursiveSplitter

FACT = "The lighthouse keeper's secret code is AZURE-PELICAN-42."


@pytest.fixture(scope="module")
def wordllama() -> EmbeddingClient:
    return EmbeddingClient.local("wordllama")


def _corpus(root: Path, n: int = 4) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"doc{i}.txt").write_text(f"Document number {i} talks about topic{i}. " * 30)
    (root / "sub").mkdir()
    (root / "sub" / "fact.md").write_text(f"# Facts\n\n{FACT}\n")
    return root


def test_ingest_documents_pairs_and_mixed_generator_with_upsert_and_remove(
    tmp_path: Path, wordllama: EmbeddingClient
) -> None:
    corpus = _corpus(tmp_path / "corpus", 2)
    index = Index.open(tmp_path / "idx", embedder=wordllama)

    def mixed() -> Iterator[Any]:
        yield Document("Zebras have black and white stripes.", id="zebra",
                       metadata={"lang": "en"})
        yield ("Der Igel schläft im Winter.", {"id": "igel", "lang": "de"})
        yield corpus
        yield Document("A note with only a source.", source="notes/n1")

    r = index.ingest(mixed())
    assert r.ok, r.failed
    assert r.added == 3 + 3  # zebra, igel, n1 and the corpus's three files
    keys = {d.source for d in index.store.documents()}
    assert {"zebra", "igel", "notes/n1"} <= keys
    hit = index.search("stripes", k=1, mode="keyword")[0]
    assert hit.source == "zebra" and hit.metadata["id"] == "zebra"
    assert [h.source for h in index.search("Winter", k=3, where={"lang": "de"})] == ["igel"]
    # a single Document, unchanged: skipped without embedding anything
    again = index.ingest(Document("Zebras have black and white stripes.", id="zebra",
                                  metadata={"lang": "en"}))
    assert again.unchanged == 1 and again.texts_sent == 0 and again.embedded == 0
    # upsert: the same id with new text replaces the document
    up = index.ingest([Document("Zebras are African equines.", id="zebra")])
    assert up.updated == 1 and up.added == 0
    texts = [h.text for h in index.search("zebra equines stripes", k=5, mode="keyword")
             if h.source == "zebra"]
    assert texts == ["Zebras are African equines."]
    # remove by id, and a file by any spelling of its path
    assert index.remove("zebra") is True
    assert index.remove("zebra") is False
    assert not [h for h in index.search("equines", k=5, mode="keyword") if h.source == "zebra"]
    assert index.remove(str(corpus / "x" / ".." / "doc0.txt")) is True
    assert len(index.store.documents()) == 5 - 1
    index.close()


def test_a_generator_is_streamed_not_collected(tmp_path: Path,
                                               wordllama: EmbeddingClient) -> None:
    index = Index.open(tmp_path / "idx", embedder=wordllama)
    written: list[int] = []
    seen_at_end: list[int] = []

    def on_progress(p: IngestProgress) -> None:
        written.append(p.documents_done)

    def gen(n: int) -> Iterator[tuple[str, dict[str, Any]]]:
        for i in range(n):
            if i == n - 1:
                seen_at_end.append(max(written, default=0))
            yield (f"record {i} " + "words and more words " * 20, {"id": f"r{i}"})

    r = index.ingest(gen(1500), progress=on_progress)
    assert r.added == 1500 and r.ok
    # documents were written while the generator was still being read
    assert seen_at_end and seen_at_end[0] > 0
    index.close()


def test_same_file_by_any_spelling_or_cwd_is_one_document(
    tmp_path: Path, wordllama: EmbeddingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: `ingest corpus` then `ingest /abs/corpus` doubled every document."""
    proj = tmp_path / "proj"
    corpus = _corpus(proj / "corpus")
    (proj / "x").mkdir()
    monkeypatch.chdir(proj)
    index = Index.open(proj / ".idx", embedder=wordllama)
    first = index.ingest("corpus")
    assert first.added == 5
    for spelling in (str(corpus), "x/../corpus", "./corpus/"):
        r = index.ingest(spelling)
        assert (r.added, r.updated, r.unchanged) == (0, 0, 5), spelling
    monkeypatch.chdir(proj / "x")
    assert index.ingest("../corpus").unchanged == 5
    assert len(index.store.documents()) == 5
    hits = index.search("AZURE-PELICAN-42", k=5)
    assert len({(h.source, h.start) for h in hits}) == len(hits)
    fact = [h for h in hits if "AZURE" in h.text]
    assert len(fact) == 1 and fact[0].source == "corpus/sub/fact.md"
    # the path as given when the document was written (unchanged files are not rewritten)
    assert fact[0].metadata["path"] == str(Path("corpus") / "sub" / "fact.md")
    # one file named twice in one call is one document
    r = index.ingest([corpus / "doc0.txt", proj / "x" / ".." / "corpus" / "doc0.txt"])
    assert r.unchanged == 1 and any("duplicate" in why for _, why in r.skipped)
    # --prune removes what is gone, whatever spelling it was ingested under
    (corpus / "doc1.txt").unlink()
    pruned = index.ingest(str(corpus), prune=True)
    assert pruned.removed == 1
    assert len(index.store.documents()) == 4
    index.close()


def test_an_index_that_moves_with_its_corpus_keeps_working(
    tmp_path: Path, wordllama: EmbeddingClient
) -> None:
    proj = tmp_path / "proj"
    corpus = _corpus(proj / "corpus")
    index = Index.open(proj / ".idx", embedder=wordllama)
    assert index.ingest(corpus).added == 5
    index.close()
    shutil.move(str(proj), str(tmp_path / "moved"))
    moved = Index.open(tmp_path / "moved" / ".idx")
    r = moved.ingest(tmp_path / "moved" / "corpus", prune=True)
    assert (r.added, r.updated, r.unchanged, r.removed) == (0, 0, 5, 0)
    assert len(moved.store.documents()) == 5
    moved.close()


def test_report_counts_decoding_replacements_and_vectors_written(
    tmp_path: Path, wordllama: EmbeddingClient
) -> None:
    """Issue 14: a UTF-8 file with a bad byte was dropped; `embedded` counted texts sent."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    good = "Größe und Gewicht, naïve café. " * 40
    (corpus / "damaged.txt").write_bytes(good.encode() + b"\xff" + good.encode())
    (corpus / "clean.md").write_text("# Same title\n\n" + "clean text " * 50)
    index = Index.open(tmp_path / "idx", embedder=wordllama)
    r = index.ingest(corpus)
    assert r.added == 2 and not r.skipped
    assert (r.decode_replaced_files, r.decode_replacements) == (1, 1)
    assert r.embedded == r.chunks  # all vectors new
    # the same texts (and titles) again under a new key: every vector is reused, none embedded
    (corpus / "copy.md").write_text("# Same title\n\n" + "clean text " * 50)
    r2 = index.ingest(corpus)
    assert r2.added == 1 and r2.chunks > 0
    assert r2.embedded == 0 and r2.texts_sent == 0 and r2.cache_hits >= r2.chunks
    index.close()


def test_embedded_is_zero_when_nothing_was_written(
    tmp_path: Path, make_sim: Callable[..., SimServer]
) -> None:
    srv = make_sim(api_key="sk-right")
    corpus = _corpus(tmp_path / "c", 3)
    emb = EmbeddingClient.from_url(f"openai://m?base_url={srv.url}&dimensions=16",
                                   api_key="sk-wrong")  # every request fails with 401
    index = Index.open(tmp_path / "idx", embedder=emb)
    r = index.ingest(corpus)
    assert r.failed and r.chunks == 0 and srv.stats()["requests"] > 0
    assert r.embedded == 0
    index.close()


def test_saved_splitter_and_embedder_options_are_used_on_a_plain_reopen(
    tmp_path: Path, make_sim: Callable[..., SimServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: `--chunk-size 500` then plain ingest re-split everything; the batch size was
    lost, so the next plain ingest sent more inputs than the provider allows."""
    srv = make_sim(max_inputs=4)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    corpus = _corpus(tmp_path / "c", 12)
    spec = f"openai://m?base_url={srv.url}&dimensions=16&batch_size=4"
    index = Index.open(tmp_path / "idx", embedder=spec, splitter=RecursiveSplitter(500, 50))
    r = index.ingest(corpus)
    assert r.ok, r.failed
    stats = index.stats()
    assert stats["splitter"]["chunk_size"] == 500 and stats["splitter"]["chunk_overlap"] == 50
    assert stats["splitter"]["type"] == "RecursiveSplitter"
    index.close()
    plain = Index.open(tmp_path / "idx")
    assert plain.splitter.chunk_size == 500
    assert "batch_size=4" in plain.embedder.spec
    assert plain.ingest(corpus).unchanged == 13
    (corpus / "new.txt").write_text("fresh words in a fresh file " * 200)
    r2 = plain.ingest(corpus)
    assert r2.ok and r2.added == 1, r2.failed
    with pytest.raises(ConfigError, match="chunk_size: 500 -> 800"):
        Index.open(tmp_path / "idx", splitter=RecursiveSplitter(800, 50))
    with pytest.raises(ConfigError, match="dimensions"):
        Index.open(tmp_path / "idx", embedder=f"openai://m?base_url={srv.url}&dimensions=8")
    plain.close()


def test_read_only_open_of_a_missing_index_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "with-typo"
    with pytest.raises(ConfigError, match=str(missing)):
        Index.open(missing, create=False)
    assert not missing.exists()


def test_cwd_does_not_matter_for_a_relative_index_path(
    tmp_path: Path, wordllama: EmbeddingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = _corpus(tmp_path / "corpus", 1)
    monkeypatch.chdir(tmp_path)
    index = Index.open(".idx", embedder=wordllama)
    assert index.ingest("corpus").added == 2
    index.close()
    monkeypatch.chdir(corpus)
    again = Index.open(os.path.join("..", ".idx"))
    assert again.ingest(".").unchanged == 2
    again.close()


def test_an_index_from_before_file_keys_is_upgraded_without_duplicates(
    tmp_path: Path, wordllama: EmbeddingClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documents stored under the path as given (older indexes) are replaced, not doubled."""
    from parallelrag.store.base import embed_text

    corpus = _corpus(tmp_path / "corpus", 2)
    monkeypatch.chdir(tmp_path)
    index = Index.open(tmp_path / "idx", embedder=wordllama)
    legacy = []
    for f in sorted(corpus.rglob("*.*")):
        text = f.read_text()
        chunks = index.splitter.split_text(text)
        vecs = wordllama.embed_many([embed_text(c) for c in chunks])
        legacy.append((str(f), "old-hash", chunks, vecs,  # absolute, as it was given
                       {"mime": "text/plain", "title": f.stem, "bytes": len(text),
                        "mtime": 1.0}))
    index.store.replace_documents(legacy)
    assert len(index.store.documents()) == 3
    r = index.ingest(str(corpus))
    assert r.ok and r.added == 3 and r.removed == 3
    assert sorted(d.source for d in index.store.documents()) == [
        "corpus/doc0.txt", "corpus/doc1.txt", "corpus/sub/fact.md"]
    index.close()


_KILL_SCRIPT = """
import sys
from parallelrag import EmbeddingClient
from parallelrag.pipeline import Index
index = Index.open(sys.argv[1], embedder=EmbeddingClient.local("wordllama"))
import time
def docs():  # a slow source (an API, a database cursor): the kills land mid-run on any machine
    for i in range(int(sys.argv[2])):
        if i % 100 == 0:
            time.sleep(0.25)
        yield (f"record {i} " + f"word{i} and more words " * 60, {"id": f"r{i}", "n": i})
r = index.ingest(docs())
print(r.added, r.unchanged, flush=True)
"""


def test_kill_9_while_ingesting_a_generator_then_resume_is_exactly_once(
    tmp_path: Path
) -> None:
    import random
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    n = 4000
    idx = tmp_path / "idx"
    cmd = [sys.executable, "-c", _KILL_SCRIPT, str(idx), str(n)]
    rng = random.Random(7)
    for _ in range(2):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(3.0, 5.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    added, unchanged = map(int, done.stdout.split())
    # the killed runs had written some, and left some to do
    assert added + unchanged == n and unchanged > 0 and added > 0
    con = sqlite3.connect(idx / "store.sqlite")
    try:
        keys = [r[0] for r in con.execute("SELECT source FROM documents")]
        per_doc = dict(con.execute("SELECT source, count(*) FROM chunks GROUP BY source"))
        n_chunks = dict(con.execute("SELECT source, n_chunks FROM documents"))
    finally:
        con.close()
    assert sorted(keys) == sorted(f"r{i}" for i in range(n))
    assert per_doc == n_chunks  # every document whole, none doubled
