"""The vector file behind the embedded store: bounded memory, lazy HNSW, checkpoint + delta at open."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from store_helpers import make_chunks, unit

from parallelrag.store import EmbeddedStore, VectorIndex, ann_available

DIM = 24


def fill(store: EmbeddedStore, rng: np.random.Generator, docs: range, per_doc: int, prefix: str = "d") -> None:
    items = []
    for d in docs:
        items.append(
            (f"{prefix}{d}", "h", make_chunks([f"{prefix}{d} c{i}" for i in range(per_doc)]), unit(rng, per_doc, DIM), None)
        )
    store.replace_documents(items)


def db_vectors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    con = sqlite3.connect(path / "store.sqlite")
    try:
        rows = con.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
    finally:
        con.close()
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    mat = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
    return ids, mat


def assert_exact(store: EmbeddedStore, rng: np.random.Generator, n_queries: int = 10) -> None:
    """The index holds exactly the database's live vectors and ranks like brute force over them."""
    ids, mat = db_vectors(store.path)
    for q in unit(rng, n_queries, DIM):
        want = ids[np.argsort(-(mat @ q), kind="stable")[:5]]
        hits = store.search_vector(q, k=5)  # a search brings the index up to date first
        assert [h.chunk_id for h in hits] == want.tolist()
        assert [h.score for h in hits] == pytest.approx(np.sort(mat @ q)[::-1][:5].tolist(), abs=1e-5)
    assert sorted(store._index.live_ids().tolist()) == ids.tolist()


def ckpt(path: Path) -> dict[str, int]:
    meta = json.loads((path / "matrix.json").read_text())
    assert isinstance(meta, dict)
    return meta


def test_vectors_live_in_the_directory_file_not_the_heap(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(50), 20)
        st = s.stats()
        assert s._index.persistent
        assert st["vector_file_bytes"] == 1000 * DIM * 4
        assert st["vector_memory_bytes"] < 1000 * DIM * 4 / 2  # ids + mask only
        # the matrix is a read-only view of a shared mapping, not an owned array
        assert not s._index._mat.flags.owndata and not s._index._mat.flags.writeable
        assert (path / "matrix-f32.bin").stat().st_size >= 1000 * DIM * 4
        assert_exact(s, rng)
    assert ckpt(path)["rows"] == 1000


def test_reopen_adopts_checkpointed_rows_and_applies_the_delta(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(30), 10)
    assert ckpt(path)["rows"] == 300
    # a second instance in the same process cannot own the files: it works on a private copy
    # and changes the database behind the owner's checkpoint
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as owner:
        assert owner._index.persistent and owner._index._ckpt_rows == 300  # adopted, not re-read
        with EmbeddedStore.open(path, dimension=DIM, model_id="m") as other:
            assert not other._index.persistent
            for d in range(0, 30, 3):
                other.remove_document(f"d{d}")
            fill(other, rng, range(5), 7, prefix="n")
            assert_exact(other, rng)
        assert_exact(owner, rng)  # the owner catches up through the deletion log
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        assert_exact(s, rng)
        assert len(s._index) == 300 - 100 + 35


def test_rows_past_the_checkpoint_are_reread_from_the_database(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(20), 10)
    # as after a crash: rows after the checkpoint hold garbage (or were never written)
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(20, 30), 10)
        idx = s._index
        with open(path / "matrix-f32.bin", "r+b") as f:
            f.seek(200 * DIM * 4)
            f.write(np.full((100, DIM), 7.0, dtype=np.float32).tobytes())
        idx.release()  # dies without a checkpoint
        s._closed = True
        s._close_connections()
    assert ckpt(path)["rows"] == 200
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        assert s._index._ckpt_rows == 200
        assert_exact(s, rng)


@pytest.mark.parametrize("damage", ["short-file", "bad-ids", "other-store", "bad-json", "dimension"])
def test_untrusted_vector_files_are_rebuilt(tmp_path: Path, damage: str) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(20), 10)
    meta = ckpt(path)
    if damage == "short-file":
        with open(path / "matrix-f32.bin", "r+b") as f:
            f.truncate(100 * DIM * 4)
    elif damage == "bad-ids":
        with open(path / "matrix-ids.bin", "r+b") as f:
            f.seek(8 * 50)
            f.write(np.int64(10**9).tobytes())
    elif damage == "other-store":
        # the database is replaced by a new store whose chunk ids start again at 1
        for f in path.glob("store.sqlite*"):
            f.unlink()
        with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
            s._index.release()  # keep the old matrix files as they are
            s._closed = True
            s._close_connections()
        con = sqlite3.connect(path / "store.sqlite")
        con.close()
    elif damage == "bad-json":
        (path / "matrix.json").write_text("{not json")
    elif damage == "dimension":
        (path / "matrix.json").write_text(json.dumps({**meta, "dimension": DIM + 1}))
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        assert s._index._ckpt_rows == 0  # nothing adopted
        if damage == "other-store":
            assert len(s._index) == 0
            fill(s, rng, range(3), 4)
        assert_exact(s, rng)
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        assert s._index._ckpt_rows == len(s._index) > 0  # the rebuilt file was checkpointed
        assert_exact(s, rng)


def test_compaction_rewrites_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(40), 50)  # 2000 rows
        for d in range(25):
            s.remove_document(f"d{d}")
        n = s._index._n
        assert len(s._index) == 750 and n < 1000  # dead rows dropped from the file
        assert ckpt(path)["rows"] == n  # a compaction checkpoints the new file
        assert (path / "matrix-f32.bin").stat().st_size < 2000 * DIM * 4
        assert_exact(s, rng)
        fill(s, rng, range(3), 5, prefix="n")
        assert_exact(s, rng)
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        assert s._index._ckpt_rows == n + 15
        assert_exact(s, rng)


def test_read_only_store_uses_a_private_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(10), 10)
        before = sorted(p.name for p in path.iterdir())
        with EmbeddedStore.open(path, dimension=DIM, model_id="m", read_only=True) as ro:
            assert not ro._index.persistent
            assert_exact(ro, rng)
            assert sorted(p.name for p in path.iterdir()) == before


@pytest.mark.skipif(not ann_available(), reason="usearch not installed")
def test_hnsw_graph_is_filled_only_once_searched(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    with EmbeddedStore.open(tmp_path / "i", dimension=DIM, model_id="m", ann_threshold=300) as s:
        fill(s, rng, range(40), 20)  # 800 ≥ threshold
        assert s.index_kind == "usearch-hnsw"
        idx = s._index
        assert idx.pending == 800 and len(idx._ann) == 0 and not idx._folding  # nothing built
        assert_exact(s, rng, 3)  # complete results while the graph is still empty
        assert idx._ann_wanted  # the search started the fold
        assert s.wait_for_index(timeout=60) and len(idx._ann) == 800
        fill(s, rng, range(40, 45), 20)  # later writes are folded in too
        assert s.wait_for_index(timeout=60) and len(idx._ann) == 900


_RSS_CHILD = r"""
import resource, sys, tempfile
import numpy as np
from parallelrag.store.vectors import VectorIndex
dim, n, batch = 256, 100_000, 500
with tempfile.TemporaryDirectory() as d:
    idx = VectorIndex(dim, ann_threshold=20_000, directory=d, persist=True)
    rng = np.random.default_rng(0)
    block = rng.standard_normal((batch, dim)).astype(np.float32)
    idx.apply(np.arange(1, batch + 1), block, np.zeros(0, np.int64), max_id=batch, del_seq=0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for start in range(batch + 1, n + 1, batch):
        ids = np.arange(start, start + batch)
        idx.apply(ids, block, np.zeros(0, np.int64), max_id=int(ids[-1]), del_seq=0)
    assert len(idx) == n and idx.kind == "usearch-hnsw" and idx.pending == n
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    got, _ = idx.search(block[7], 1)
    assert int(got[0]) % batch == 8 % batch, got
    idx.release()
    print(grew * 1024)
"""


@pytest.mark.skipif(not ann_available(), reason="usearch not installed")
def test_appending_100mb_of_vectors_keeps_peak_rss_flat() -> None:
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    grew = int(out.stdout.strip())
    # 100k × 256-d float32 is 102 MB; the old in-heap matrix grew peak RSS by more than that
    assert grew < 16 << 20, f"peak RSS grew by {grew / 2**20:.1f} MiB"


def test_vector_index_without_directory_still_works() -> None:
    rng = np.random.default_rng(7)
    idx = VectorIndex(DIM, ann=False)
    v = unit(rng, 2000, DIM)
    idx.reset(np.arange(1, 2001), v, max_id=2000, del_seq=0)
    assert not idx.persistent and len(idx) == 2000
    got, scores = idx.search(v[10], 3)
    assert int(got[0]) == 11 and scores[0] == pytest.approx(1.0, abs=1e-5)
    idx.apply(np.zeros(0, np.int64), v[:0], np.arange(1, 1001), max_id=2000, del_seq=1000)
    assert idx._n == 1000  # compacted
    got, _ = idx.search(v[1500], 1)
    assert int(got[0]) == 1501
    idx.release()
