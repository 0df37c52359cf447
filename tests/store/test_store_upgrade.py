"""A store made before chunks had a context and a vector key opens, writes and searches."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
from store_helpers import make_chunks, unit

from parallelrag.store import EmbeddedStore
from parallelrag.store.base import text_key

DIM = 8

# the schema of the first release (schema_version 1, before context / vkey)
_OLD = """
CREATE TABLE manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (source TEXT PRIMARY KEY, content_hash TEXT NOT NULL,
    n_chunks INTEGER NOT NULL, metadata TEXT NOT NULL DEFAULT '{}', updated_at REAL NOT NULL);
CREATE TABLE chunks (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,
    idx INTEGER NOT NULL, start_off INTEGER NOT NULL, end_off INTEGER NOT NULL,
    text TEXT NOT NULL, metadata TEXT NOT NULL DEFAULT '{}', vector BLOB NOT NULL);
CREATE INDEX chunks_source ON chunks(source);
CREATE TABLE deletions (seq INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id INTEGER NOT NULL);
CREATE TRIGGER chunks_log_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO deletions(chunk_id) VALUES (old.id);
END;
CREATE TRIGGER chunks_no_update BEFORE UPDATE ON chunks BEGIN
    SELECT RAISE(ABORT, 'chunks are immutable: delete and insert');
END;
CREATE VIRTUAL TABLE chunks_fts USING fts5(
    text, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2');
CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
"""


def test_old_store_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old"
    path.mkdir()
    con = sqlite3.connect(path / "store.sqlite")
    con.executescript(_OLD)
    con.executemany("INSERT INTO manifest VALUES (?, ?)", [
        ("schema_version", "1"), ("model_id", "m"), ("dimension", str(DIM)),
        ("generation", "0"), ("deletions_pruned_through", "0"), ("created_at", repr(time.time()))])
    vec = np.zeros(DIM, dtype=np.float32)
    vec[0] = 1
    con.execute("INSERT INTO documents VALUES ('a', 'h', 1, '{}', 0)")
    con.execute("INSERT INTO chunks(source, idx, start_off, end_off, text, vector) "
                "VALUES ('a', 0, 0, 11, 'old pelican', ?)", (vec.tobytes(),))
    con.commit()
    con.close()

    store = EmbeddedStore.open(path, dimension=DIM, model_id="m")
    try:
        assert store.search_vector(vec, k=1)[0].text == "old pelican"  # moved to the file
        hit = store.search_keyword("pelican", k=1)[0]
        assert (hit.text, hit.context) == ("old pelican", "")
        assert store.vectors_by_key([text_key("old pelican")]) == {}  # no key stored: re-embed
        chunks = make_chunks(["new albatross"])
        chunks[0].context = "Seabirds"
        store.replace_documents([("b", "h2", chunks, unit(np.random.default_rng(1), 1, DIM),
                                  None)])
        got = store.search_keyword("albatross", k=1)
        assert [h.context for h in got] == ["Seabirds"]
        assert len(store.vectors_by_key([text_key("Seabirds\n\nnew albatross")])) == 1
        assert store.load_config() is None
        store.save_config({"x": 1})
        assert store.load_config() == {"x": 1}
    finally:
        store.close()


def test_without_vector_file_each_vector_is_on_disk_once(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n, dim = 600, 64
    vecs = unit(rng, n, dim)
    texts = [f"chunk {i} " + "lorem ipsum dolor " * 20 for i in range(n)]
    store = EmbeddedStore.open(tmp_path / "s", dimension=dim, model_id="m", vector_file=False)
    store.replace_documents([("doc", "h", make_chunks(texts), vecs, None)])
    store.close()
    names = {p.name for p in (tmp_path / "s").iterdir()}
    assert not any(name.startswith("matrix") for name in names), names
    again = EmbeddedStore.open(tmp_path / "s", dimension=dim, model_id="m", vector_file=False)
    try:
        hits = again.search_vector(vecs[123], k=1)
        assert hits[0].text == texts[123] and hits[0].score > 0.999
    finally:
        again.close()
    with_file = EmbeddedStore.open(tmp_path / "s", dimension=dim, model_id="m")
    try:  # the same store opened the default way makes (and then adopts) its vector file
        assert with_file.search_vector(vecs[7], k=1)[0].text == texts[7]
    finally:
        with_file.close()
    assert any(p.name.startswith("matrix") for p in (tmp_path / "s").iterdir())


def _blob_bytes(path: Path) -> int:
    con = sqlite3.connect(path / "store.sqlite")
    try:
        return int(con.execute("SELECT coalesce(sum(length(vector)), 0) FROM chunks").fetchone()[0])
    finally:
        con.close()


def test_vectors_in_the_database_are_moved_to_the_vector_file(tmp_path: Path) -> None:
    """A store of the previous layout (vectors in the chunk rows, plus its derived matrix files)
    is migrated in place at the first writable open: each vector then on disk once."""
    rng = np.random.default_rng(4)
    n, dim = 1500, 64
    vecs = unit(rng, n, dim)
    texts = [f"chunk {i} " + "lorem ipsum dolor " * 20 for i in range(n)]
    path = tmp_path / "s"
    old = EmbeddedStore.open(path, dimension=dim, model_id="m", vector_file=False)
    old.replace_documents([(f"doc{d}", "h", make_chunks(texts[d * 100 : (d + 1) * 100]),
                            vecs[d * 100 : (d + 1) * 100], None) for d in range(15)])
    old.remove_document("doc3")
    old.close()
    for name in ("matrix-f32.bin", "matrix-ids.bin", "matrix.json"):  # the old derived copy
        (path / name).write_bytes(b"x" * 4096)
    assert _blob_bytes(path) == 1400 * dim * 4
    db_before = (path / "store.sqlite").stat().st_size
    with EmbeddedStore.open(path, dimension=dim, model_id="m", read_only=True) as ro:
        assert ro.search_vector(vecs[7], k=1)[0].text == texts[7]  # read-only: not migrated
    assert _blob_bytes(path) == 1400 * dim * 4

    store = EmbeddedStore.open(path, dimension=dim, model_id="m")
    try:
        assert _blob_bytes(path) == 0
        names = {p.name for p in path.iterdir()}
        assert {"matrix-1-f32.bin", "matrix-1-ids.bin"} <= names
        assert not names & {"matrix-f32.bin", "matrix-ids.bin", "matrix.json"}
        assert (path / "store.sqlite").stat().st_size < db_before - 1400 * dim * 4 * 0.8  # vacuumed
        for i in (0, 299, 400, 1499):
            hit = store.search_vector(vecs[i], k=1)[0]
            assert hit.text == texts[i] and hit.score > 0.999
        assert not any(h.source == "doc3" for h in store.search_vector(vecs[350], k=5))
        got = store.vectors_by_key([text_key(texts[5]), text_key(texts[305])])
        assert list(got) == [text_key(texts[5])] and np.allclose(got[text_key(texts[5])], vecs[5])
        store.replace_documents([("new", "h", make_chunks(["fresh"]), vecs[:1] * -1, None)])
    finally:
        store.close()
    with EmbeddedStore.open(path, dimension=dim, model_id="m", read_only=True) as ro:
        assert ro.search_vector(-vecs[0], k=1)[0].text == "fresh"
        assert ro.search_vector(vecs[1499], k=1)[0].text == texts[1499]
        assert len(ro._index) == 1401
