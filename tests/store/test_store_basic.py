from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from store_helpers import make_chunks, unit

from parallelrag.documents import Chunk
from parallelrag.errors import ConfigError, StoreError
from parallelrag.store import DocumentRecord, EmbeddedStore, Filter, Hit, VectorStore

DIM = 16


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = EmbeddedStore.open(tmp_path / "idx", dimension=DIM, model_id="test-model")
    yield s
    s.close()


def chunk_count(path: Path) -> int:
    con = sqlite3.connect(path / "store.sqlite")
    try:
        return int(con.execute("SELECT count(*) FROM chunks").fetchone()[0])
    finally:
        con.close()


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vecs = unit(rng, 3, DIM)
    path = tmp_path / "idx"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        assert isinstance(s, VectorStore)
        assert (s.dimension, s.model_id, s.path) == (DIM, "m", path)
        chunks = make_chunks(["the quick brown fox", "jumps over", "the lazy dog"])
        chunks[1].metadata["page"] = 2
        s.replace_document("a.txt", "hash-a", chunks, vecs, metadata={"title": "A"})
        rec = s.get_document("a.txt")
        assert isinstance(rec, DocumentRecord)
        assert (rec.source, rec.content_hash, rec.n_chunks, rec.metadata) == ("a.txt", "hash-a", 3, {"title": "A"})
        assert s.get_document("nope") is None
    with EmbeddedStore.open(path, dimension=DIM, model_id="m", create=False) as s:
        assert [d.source for d in s.documents()] == ["a.txt"]
        hits = s.search_vector(vecs[1], k=3)
        assert isinstance(hits[0], Hit)
        top = hits[0]
        assert (top.text, top.source, top.start, top.end, top.index) == ("jumps over", "a.txt", 20, 30, 1)
        assert top.metadata == {"title": "A", "page": 2}
        assert top.score == pytest.approx(1.0, abs=1e-5) and top.vector_score == top.score
        assert top.keyword_score is None
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        by_id = s.get_chunks([hits[2].chunk_id, hits[0].chunk_id, 999_999])
        assert [h.chunk_id for h in by_id] == [hits[2].chunk_id, hits[0].chunk_id]
        st = s.stats()
        assert st["documents"] == 1 and st["chunks"] == 3
        assert st["dimension"] == DIM and st["model_id"] == "m" and st["index"] == "exact"
        assert st["bytes_on_disk"] > 0


def test_wal_mode(store: EmbeddedStore) -> None:
    con = sqlite3.connect(store.path / "store.sqlite")
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        con.close()


def test_replace_is_atomic_and_exact(store: EmbeddedStore) -> None:
    rng = np.random.default_rng(1)
    store.replace_document("d", "v1", make_chunks([f"old {i}" for i in range(5)]), unit(rng, 5, DIM))
    old_ids = [h.chunk_id for h in store.search_keyword("old", k=50)]
    assert len(old_ids) == 5
    new_vecs = unit(rng, 3, DIM)
    store.replace_document("d", "v2", make_chunks([f"new {i}" for i in range(3)]), new_vecs)
    assert store.get_chunks(old_ids) == []
    assert store.search_keyword("old", k=50) == []
    assert sorted(h.text for h in store.search_keyword("new", k=50)) == ["new 0", "new 1", "new 2"]
    assert store.get_document("d").n_chunks == 3  # type: ignore[union-attr]
    assert store.stats()["chunks"] == 3 == chunk_count(store.path)
    hits = store.search_vector(new_vecs[0], k=10)
    assert len(hits) == 3 and {h.text for h in hits} == {"new 0", "new 1", "new 2"}


def test_failed_batch_rolls_back_everything(store: EmbeddedStore) -> None:
    rng = np.random.default_rng(2)
    store.replace_document("keep", "v1", make_chunks(["kept text"]), unit(rng, 1, DIM))
    bad = [Chunk(None, 0, 1, 0, {})]  # type: ignore[arg-type]  # NOT NULL fails mid-transaction
    with pytest.raises(sqlite3.IntegrityError):
        store.replace_documents(
            [
                ("keep", "v2", make_chunks(["replacement"]), unit(rng, 1, DIM), None),
                ("other", "v1", make_chunks(["x"]), unit(rng, 1, DIM), None),
                ("broken", "v1", bad, unit(rng, 1, DIM), None),
            ]
        )
    assert [d.source for d in store.documents()] == ["keep"]
    assert store.get_document("keep").content_hash == "v1"  # type: ignore[union-attr]
    assert [h.text for h in store.search_keyword("kept replacement x", k=10)] == ["kept text"]
    assert len(store.search_vector(unit(rng, 1, DIM)[0], k=10)) == 1


def test_validation_errors(store: EmbeddedStore) -> None:
    rng = np.random.default_rng(3)
    with pytest.raises(ConfigError):
        store.replace_document("a", "h", make_chunks(["a", "b"]), unit(rng, 1, DIM))
    with pytest.raises(ConfigError):
        store.replace_document("a", "h", make_chunks(["a"]), unit(rng, 1, DIM + 1))
    nan = unit(rng, 1, DIM)
    nan[0, 0] = np.nan
    with pytest.raises(ConfigError):
        store.replace_document("a", "h", make_chunks(["a"]), nan)
    with pytest.raises(ConfigError):
        store.search_vector(np.zeros(DIM + 1, dtype=np.float32))
    with pytest.raises(ConfigError):
        store.search_vector(unit(rng, 1, DIM)[0], where={"x": [1, 2]})
    assert store.documents() == []
    # a document with no chunks is recorded (so an empty file is not re-processed)
    store.replace_document("empty", "h0", [], np.zeros((0, DIM), np.float32))
    assert store.get_document("empty").n_chunks == 0  # type: ignore[union-attr]


def test_mismatch_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    EmbeddedStore.open(path, dimension=DIM, model_id="model-a").close()
    with pytest.raises(ConfigError) as e:
        EmbeddedStore.open(path, dimension=DIM, model_id="model-b")
    assert "model-a" in str(e.value) and "model-b" in str(e.value)
    with pytest.raises(ConfigError) as e2:
        EmbeddedStore.open(path, dimension=32, model_id="model-a")
    assert "16" in str(e2.value) and "32" in str(e2.value)
    with pytest.raises(StoreError):
        EmbeddedStore.open(tmp_path / "missing", dimension=DIM, model_id="m", create=False)
    assert not (tmp_path / "missing").exists()


def test_remove(store: EmbeddedStore) -> None:
    rng = np.random.default_rng(4)
    va, vb = unit(rng, 2, DIM), unit(rng, 1, DIM)
    store.replace_document("a", "h", make_chunks(["apple one", "apple two"]), va)
    store.replace_document("b", "h", make_chunks(["banana"]), vb)
    assert store.remove_document("a") is True
    assert store.remove_document("a") is False
    assert [d.source for d in store.documents()] == ["b"]
    assert store.search_keyword("apple") == []
    assert [h.source for h in store.search_vector(va[0], k=10)] == ["b"]
    assert store.stats()["chunks"] == 1


@pytest.mark.parametrize(
    "query",
    ['"', "AND", "*", "NEAR(", "a OR", "NOT", "foo:bar", "(((", "'; DROP TABLE chunks; --", "^x", "-", "東京", "", "   ", "\x00"],
)
def test_keyword_hostile_strings(store: EmbeddedStore, query: str) -> None:
    rng = np.random.default_rng(5)
    store.replace_document(
        "a", "h", make_chunks(["AND NEAR the start", "東京 タワー", "plain words"]), unit(rng, 3, DIM)
    )
    hits = store.search_keyword(query, k=5)
    assert isinstance(hits, list)
    if query in ("AND", "NEAR("):
        assert [h.text for h in hits] == ["AND NEAR the start"]
    if query == "東京":
        assert [h.text for h in hits] == ["東京 タワー"]
    if not query.strip() or query in ('"', "*", "(((", "-", "\x00"):
        assert hits == []
    assert store.stats()["chunks"] == 3  # the injection attempt did nothing


def test_keyword_ranking_and_python_fallback(store: EmbeddedStore) -> None:
    rng = np.random.default_rng(6)
    texts = ["zebra zebra zebra stripes", "a zebra in passing among many other words here", "nothing relevant"]
    store.replace_document("z", "h", make_chunks(texts), unit(rng, 3, DIM))
    hits = store.search_keyword("zebra", k=5)
    assert [h.text for h in hits] == texts[:2]
    assert hits[0].keyword_score is not None and hits[0].score > hits[1].score > 0
    store._fts = False  # exercise the no-FTS5 fallback on the same data
    fb = store.search_keyword("zebra", k=5)
    assert [h.text for h in fb] == texts[:2]
    assert store.search_keyword('"', k=5) == []


def test_hybrid_fusion(store: EmbeddedStore) -> None:
    rng = np.random.default_rng(7)
    q = unit(rng, 1, DIM)[0]
    other = unit(rng, 30, DIM)
    other -= np.outer(other @ q, q)  # orthogonal to q
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    texts = [f"filler document number {i}" for i in range(30)]
    vecs = other.copy()
    # chunk 0: best in both lists; chunk 1: best vector only; chunk 2: best keyword only
    texts[0] = "kangaroo habitat kangaroo"
    vecs[0] = q
    texts[1] = "unrelated words"
    vecs[1] = 0.9 * q + 0.436 * other[1]
    texts[2] = "kangaroo kangaroo kangaroo kangaroo"
    store.replace_document("h", "x", make_chunks(texts), vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    hits = store.search_hybrid("kangaroo", q, k=3)
    assert hits[0].text == "kangaroo habitat kangaroo"
    assert hits[0].vector_score is not None and hits[0].keyword_score is not None
    vec_rank = [h.chunk_id for h in store.search_vector(q, k=50)].index(hits[0].chunk_id) + 1
    kw_rank = [h.chunk_id for h in store.search_keyword("kangaroo", k=50)].index(hits[0].chunk_id) + 1
    assert vec_rank == 1 and kw_rank <= 2
    from parallelrag.store.fusion import fuse

    vec = [(h.chunk_id, h.score) for h in store.search_vector(q, k=50)]
    kw = [(h.chunk_id, h.score) for h in store.search_keyword("kangaroo", k=50)]
    assert hits[0].score == pytest.approx(fuse(vec, kw, 1)[0].score)  # the shared fusion
    assert {h.text for h in hits[1:]} == {"unrelated words", "kangaroo kangaroo kangaroo kangaroo"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert store.search_hybrid("", q, k=2)[0].text == "kangaroo habitat kangaroo"  # vector only


def test_filters(store: EmbeddedStore) -> None:
    rng = np.random.default_rng(8)
    q = unit(rng, 1, DIM)[0]
    store.replace_document("docs/a.md", "h", make_chunks(["shared term en"]), q[None], metadata={"lang": "en", "n": 1})
    store.replace_document("docs/b.txt", "h", make_chunks(["shared term de"]), q[None], metadata={"lang": "de", "n": 2})
    chunks = make_chunks(["shared term flagged", "shared term plain"])
    chunks[0].metadata["flag"] = True
    store.replace_document("notes/c.md", "h", chunks, np.stack([q, q]), metadata={"lang": "en", "n": 1})
    def by_vector(w: Filter) -> list[Hit]:
        return store.search_vector(q, k=10, where=w)

    def by_keyword(w: Filter) -> list[Hit]:
        return store.search_keyword("shared", k=10, where=w)

    def by_hybrid(w: Filter) -> list[Hit]:
        return store.search_hybrid("shared", q, k=10, where=w)

    for search in (by_vector, by_keyword, by_hybrid):
        assert {h.source for h in search({"source": "docs/*.md"})} == {"docs/a.md"}
        assert {h.source for h in search({"source": "*.md"})} == {"docs/a.md", "notes/c.md"}
        assert {h.source for h in search({"lang": "de"})} == {"docs/b.txt"}
        assert {h.source for h in search({"lang": "en", "source": "docs/*"})} == {"docs/a.md"}
        assert {h.source for h in search({"n": 2})} == {"docs/b.txt"}
        assert [h.text for h in search({"flag": True})] == ["shared term flagged"]
        assert search({"lang": "fr"}) == []
        assert search({"source": "nothing/*"}) == []


def test_read_only_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "idx"
    rng = np.random.default_rng(9)
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as w:
        w.replace_document("a", "h", make_chunks(["hello"]), unit(rng, 1, DIM))
    with EmbeddedStore.open(path, dimension=DIM, model_id="m", read_only=True) as ro:
        assert [h.text for h in ro.search_keyword("hello")] == ["hello"]
        with pytest.raises(StoreError):
            ro.remove_document("a")
    with pytest.raises(StoreError):
        EmbeddedStore.open(tmp_path / "none", dimension=DIM, model_id="m", read_only=True)


def test_closed_store_raises(tmp_path: Path) -> None:
    s = EmbeddedStore.open(tmp_path / "idx", dimension=DIM, model_id="m")
    s.close()
    s.close()
    with pytest.raises(StoreError):
        s.documents()


def test_selective_filter_uses_prefilter(store: EmbeddedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import parallelrag.store.embedded as embedded

    monkeypatch.setattr(embedded, "_POSTFILTER_MAX", 64)
    rng = np.random.default_rng(10)
    q = unit(rng, 1, DIM)[0]
    near = np.tile(q, (400, 1))  # 400 chunks identical to the query crowd out the rare ones
    store.replace_document("bulk.txt", "h", make_chunks([f"bulk {i}" for i in range(400)]), near, metadata={"kind": "bulk"})
    rare = unit(rng, 3, DIM)
    store.replace_document("rare.md", "h", make_chunks(["r0", "r1", "r2"]), rare, metadata={"kind": "rare"})
    want = sorted(range(3), key=lambda i: -float(rare[i] @ q))
    for where in ({"kind": "rare"}, {"source": "*.md"}):
        hits = store.search_vector(q, k=2, where=where)
        assert [h.text for h in hits] == [f"r{want[0]}", f"r{want[1]}"]
    assert len(store.search_vector(q, k=10, where={"kind": "bulk"})) == 10
