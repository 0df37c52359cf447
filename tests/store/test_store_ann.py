from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from store_helpers import make_chunks, unit

from parallelrag.store import EmbeddedStore, VectorIndex, ann_available

pytestmark = pytest.mark.skipif(not ann_available(), reason="usearch not installed")

DIM = 32
THRESHOLD = 400


def fill(store: EmbeddedStore, rng: np.random.Generator, n_docs: int, per_doc: int, prefix: str = "d") -> np.ndarray:
    all_vecs = []
    items = []
    for d in range(n_docs):
        v = unit(rng, per_doc, DIM)
        all_vecs.append(v)
        items.append((f"{prefix}{d}", "h", make_chunks([f"{prefix}{d} chunk {i}" for i in range(per_doc)]), v, None))
    store.replace_documents(items)
    return np.concatenate(all_vecs)


def exact_ids(store: EmbeddedStore, q: np.ndarray, k: int) -> list[int]:
    idx = store._index
    ids = idx.live_ids()
    hits = store.get_chunks(ids.tolist())
    mat = np.stack([np.asarray(store._index._mat[np.searchsorted(idx._ids[: idx._n], h.chunk_id)]) for h in hits])
    s = mat @ q
    order = np.argsort(-s)[:k]
    return [hits[i].chunk_id for i in order]


def test_exact_and_ann_agree(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with EmbeddedStore.open(tmp_path / "i", dimension=DIM, model_id="m", ann_threshold=THRESHOLD) as s:
        fill(s, rng, 10, 30)  # 300 < threshold: exact
        assert s.stats()["index"] == "exact"
        fill(s, rng, 20, 30, prefix="e")  # 900 ≥ threshold: HNSW built
        assert s.stats()["index"] == "usearch-hnsw"
        assert s.wait_for_index(timeout=60)
        assert s.stats()["index_pending"] == 0 and len(s._index._ann) == 900
        queries = unit(rng, 40, DIM)
        recall = []
        for q in queries:
            got = [h.chunk_id for h in s.search_vector(q, k=10)]
            want = exact_ids(s, q, 10)
            recall.append(len(set(got) & set(want)) / 10)
            scores = [h.score for h in s.search_vector(q, k=10)]
            assert scores == sorted(scores, reverse=True)
        assert np.mean(recall) >= 0.95


def test_ann_never_returns_deleted(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    with EmbeddedStore.open(tmp_path / "i", dimension=DIM, model_id="m", ann_threshold=THRESHOLD) as s:
        vecs = fill(s, rng, 20, 30)
        assert s.index_kind == "usearch-hnsw"
        assert s.wait_for_index(timeout=60)
        for d in range(0, 20, 2):
            s.remove_document(f"d{d}")
        s.replace_document("d1", "h2", make_chunks(["replaced"]), vecs[:1])
        gone = {f"d{d}" for d in range(0, 20, 2)}
        for q in vecs[::7]:
            hits = s.search_vector(q, k=20)
            assert len(hits) == 20
            assert not gone & {h.source for h in hits}
            assert all(h.text == "replaced" for h in hits if h.source == "d1")
        # the removed documents' own vectors find other chunks, not themselves
        assert s.search_vector(vecs[0], k=1)[0].source == "d1"
        # a filtered search under ANN only returns allowed chunks
        hits = s.search_vector(vecs[40], k=5, where={"source": "d1?"})
        assert hits and all(h.source in {"d11", "d13", "d15", "d17", "d19"} for h in hits)


def test_ann_persisted_and_caught_up_when_stale(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m", ann_threshold=THRESHOLD) as s:
        fill(s, rng, 20, 30)
        assert s.wait_for_index(timeout=60)
    meta = VectorIndex.read_meta(path)
    assert meta is not None and (path / meta["file"]).exists()
    stale = tmp_path / "stale"
    stale.mkdir()
    for f in path.glob("vectors*"):
        shutil.copy(f, stale / f.name)

    with EmbeddedStore.open(path, dimension=DIM, model_id="m", ann_threshold=THRESHOLD) as s:
        assert s.ann_loaded_from_disk and s.index_kind == "usearch-hnsw"
        for d in range(5):
            s.remove_document(f"d{d}")
        new_vecs = fill(s, rng, 5, 30, prefix="n")
    # put the stale index back: it lacks the n* docs and still holds d0..d4
    for f in path.glob("vectors*"):
        f.unlink()
    for f in stale.iterdir():
        shutil.copy(f, path / f.name)

    with EmbeddedStore.open(path, dimension=DIM, model_id="m", ann_threshold=THRESHOLD) as s:
        assert s.ann_loaded_from_disk  # caught up from the delta, not rebuilt
        # before the background fold catches up, the new docs are found through the exact tail
        assert s.search_vector(new_vecs[0], k=1)[0].score == pytest.approx(1.0, abs=1e-5)
        assert s.wait_for_index(timeout=60)
        assert len(s._index._ann) == s.stats()["chunks"] == 20 * 30
        for i in range(0, 150, 10):
            hits = s.search_vector(new_vecs[i], k=10)
            assert hits[0].source.startswith("n") and hits[0].score == pytest.approx(1.0, abs=1e-5)
            assert not {f"d{d}" for d in range(5)} & {h.source for h in hits}
    # the caught-up index was saved: the next open adopts it as is
    meta2 = VectorIndex.read_meta(path)
    assert meta2 is not None and meta2["count"] == 20 * 30 and meta2["file"] != meta["file"]

    # a corrupt index file is detected and rebuilt
    (path / meta2["file"]).write_bytes(b"garbage")
    with EmbeddedStore.open(path, dimension=DIM, model_id="m", ann_threshold=THRESHOLD) as s:
        assert not s.ann_loaded_from_disk and s.index_kind == "usearch-hnsw"
        assert s.search_vector(new_vecs[3], k=1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_ann_off_stays_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    with EmbeddedStore.open(tmp_path / "i", dimension=DIM, model_id="m", ann_threshold=10, ann=False) as s:
        fill(s, rng, 3, 10)
        assert s.index_kind == "exact"
        assert not list(s.path.glob("vectors*"))
