"""The vector file behind the embedded store: bounded memory, lazy HNSW, checkpoint + delta at open."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from store_helpers import make_chunks, unit

from parallelrag.errors import StoreError
from parallelrag.store import EmbeddedStore, VectorIndex, ann_available

DIM = 24


def fill(store: EmbeddedStore, rng: np.random.Generator, docs: range, per_doc: int, prefix: str = "d") -> None:
    items = []
    for d in docs:
        items.append(
            (f"{prefix}{d}", "h", make_chunks([f"{prefix}{d} c{i}" for i in range(per_doc)]), unit(rng, per_doc, DIM), None)
        )
    store.replace_documents(items)


def vec_state(path: Path) -> tuple[int, int]:
    con = sqlite3.connect(path / "store.sqlite")
    try:
        got = dict(con.execute(
            "SELECT key, value FROM manifest WHERE key IN ('vector_gen', 'vector_rows')").fetchall())
    finally:
        con.close()
    return int(got["vector_gen"]), int(got["vector_rows"])


def db_vectors(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The store's live vectors read straight from its files: the vector file's committed rows
    whose chunk row exists, in id order (independent of the index under test)."""
    gen, rows = vec_state(path)
    ids = np.fromfile(path / f"matrix-{gen}-ids.bin", dtype=np.int64)[:rows]
    mat = np.fromfile(path / f"matrix-{gen}-f32.bin", dtype=np.float32)[: rows * DIM].reshape(rows, DIM)
    con = sqlite3.connect(path / "store.sqlite")
    try:
        live = np.array([r[0] for r in con.execute("SELECT id FROM chunks ORDER BY id")], dtype=np.int64)
        assert con.execute("SELECT coalesce(sum(length(vector)), 0) FROM chunks").fetchone()[0] == 0
    finally:
        con.close()
    keep = np.isin(ids, live)
    assert sorted(ids[keep].tolist()) == live.tolist()  # every chunk has its vector
    return ids[keep], mat[keep]


def assert_exact(store: EmbeddedStore, rng: np.random.Generator, n_queries: int = 10) -> None:
    """The index holds exactly the store's live vectors and ranks like brute force over them."""
    ids, mat = db_vectors(store.path)
    for q in unit(rng, n_queries, DIM):
        want = ids[np.argsort(-(mat @ q), kind="stable")[:5]]
        hits = store.search_vector(q, k=5)  # a search brings the index up to date first
        assert [h.chunk_id for h in hits] == want.tolist()
        assert [h.score for h in hits] == pytest.approx(np.sort(mat @ q)[::-1][:5].tolist(), abs=1e-5)
    assert sorted(store._index.live_ids().tolist()) == ids.tolist()


def test_vectors_live_in_the_directory_file_not_the_heap(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(50), 20)
        st = s.stats()
        assert s._index.shared
        assert st["vector_file_bytes"] == 1000 * DIM * 4
        assert st["vector_memory_bytes"] < 1000 * DIM * 4 / 2  # ids + mask only
        # the matrix is a read-only view of a shared mapping, not an owned array
        assert not s._index._mat.flags.owndata and not s._index._mat.flags.writeable
        assert (path / "matrix-1-f32.bin").stat().st_size >= 1000 * DIM * 4
        assert_exact(s, rng)  # also: no chunk row holds a vector (the file is the only copy)
    assert vec_state(path) == (1, 1000)


def test_two_writers_share_the_file_and_reopen_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(30), 10)
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as first:
        assert first._index.shared and first._index._n == 300
        with EmbeddedStore.open(path, dimension=DIM, model_id="m") as other:
            for d in range(0, 30, 3):
                other.remove_document(f"d{d}")
            fill(other, rng, range(5), 7, prefix="n")
            assert_exact(other, rng)
            fill(first, rng, range(5, 8), 7, prefix="n")  # appends after the other's rows
            assert_exact(other, rng)
        assert_exact(first, rng)  # catches up through the row count and the deletion log
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        assert_exact(s, rng)
        assert len(s._index) == 300 - 100 + 56


def test_rows_past_the_recorded_count_are_ignored_then_overwritten(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(20), 10)
    # as after a crash between the vector write and the commit: rows past the count hold data
    # that no chunk refers to
    with open(path / "matrix-1-f32.bin", "r+b") as f:
        f.seek(200 * DIM * 4)
        f.write(np.full((100, DIM), 7.0, dtype=np.float32).tobytes())
    with open(path / "matrix-1-ids.bin", "r+b") as f:
        f.seek(200 * 8)
        f.write(np.arange(10**6, 10**6 + 100, dtype=np.int64).tobytes())
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        assert s._index._n == 200
        assert_exact(s, rng)
        fill(s, rng, range(20, 30), 10)
        assert vec_state(path) == (1, 300)
        assert_exact(s, rng)


@pytest.mark.parametrize("damage", ["short-file", "bad-ids", "missing"])
def test_a_damaged_vector_file_is_an_error_not_wrong_results(tmp_path: Path, damage: str) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(20), 10)
    if damage == "short-file":
        with open(path / "matrix-1-f32.bin", "r+b") as f:
            f.truncate(100 * DIM * 4)
    elif damage == "bad-ids":
        with open(path / "matrix-1-ids.bin", "r+b") as f:
            f.seek(8 * 50)
            f.write(np.int64(10**9).tobytes())
    else:
        (path / "matrix-1-ids.bin").unlink()
    with pytest.raises(StoreError):
        EmbeddedStore.open(path, dimension=DIM, model_id="m").close()


def test_compaction_writes_a_new_generation(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(40), 50)  # 2000 rows
        for d in range(25):
            s.remove_document(f"d{d}")
        n = s._index._n
        assert len(s._index) == 750 and n < 1000  # dead rows dropped from the file
        gen, rows = vec_state(path)
        assert gen >= 2 and rows == n
        assert not (path / "matrix-1-f32.bin").exists()  # the old generation is gone
        assert (path / f"matrix-{gen}-f32.bin").stat().st_size < 2000 * DIM * 4
        assert_exact(s, rng)
        fill(s, rng, range(3), 5, prefix="n")
        assert_exact(s, rng)
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        assert s._index._n == n + 15
        assert_exact(s, rng)


def test_no_compaction_while_another_store_has_the_file_open(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(40), 50)
        with EmbeddedStore.open(path, dimension=DIM, model_id="m", read_only=True) as ro:
            for d in range(25):
                s.remove_document(f"d{d}")
            assert vec_state(path) == (1, 2000)  # the reader maps generation 1: kept
            assert_exact(ro, rng)
            assert_exact(s, rng)
        s.remove_document("d25")  # the next write, alone again, compacts
        assert vec_state(path) == (2, 700)
        assert_exact(s, rng)


def test_read_only_store_reads_the_shared_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(10), 10)
        before = sorted(p.name for p in path.iterdir())
        with EmbeddedStore.open(path, dimension=DIM, model_id="m", read_only=True) as ro:
            assert ro._index.shared and not ro._index._mat.flags.writeable
            assert_exact(ro, rng)
            fill(s, rng, range(10, 15), 10)
            assert_exact(ro, rng)  # the writer's rows are seen through the same file
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


def test_stale_generations_are_removed_when_no_one_else_has_the_store_open(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(5), 4)
    for name in ("matrix-2-f32.bin", "matrix-2-ids.bin"):  # as left by a killed compaction
        (path / name).write_bytes(b"\0" * 4096)
    with EmbeddedStore.open(path, dimension=DIM, model_id="m", read_only=True) as ro:
        with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
            assert (path / "matrix-2-f32.bin").exists()  # another store has it open: kept
            assert_exact(s, rng)
        assert_exact(ro, rng)
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        assert not (path / "matrix-2-f32.bin").exists() and not (path / "matrix-2-ids.bin").exists()
        assert (path / "matrix-1-f32.bin").exists()
        assert_exact(s, rng)


def test_export_and_copy_read_the_vectors_from_the_file(tmp_path: Path) -> None:
    from parallelrag.store.transfer import copy_index

    rng = np.random.default_rng(9)
    vecs = unit(rng, 6, DIM)
    with EmbeddedStore.open(tmp_path / "a", dimension=DIM, model_id="m") as s:
        s.replace_documents([("x", "h1", make_chunks(["a0", "a1", "a2"]), vecs[:3], {"k": 1}),
                             ("y", "h2", make_chunks(["b0", "b1", "b2"]), vecs[3:], None)])
        got = s.export_documents(["y", "missing", "x"])
        assert [(r.source, r.content_hash) for r, _, _ in got] == [("y", "h2"), ("x", "h1")]
        assert [c.text for c in got[1][1]] == ["a0", "a1", "a2"]
        assert np.array_equal(got[0][2], vecs[3:]) and np.array_equal(got[1][2], vecs[:3])
    rep = copy_index(tmp_path / "a", tmp_path / "b")
    assert rep is not None
    with EmbeddedStore.open(tmp_path / "b", dimension=DIM, model_id="m") as b:
        for i, text in enumerate(["a0", "a1", "a2", "b0", "b1", "b2"]):
            hit = b.search_vector(vecs[i], k=1)[0]
            assert hit.text == text and hit.score > 0.9999


_COMPACT_CHILD = r"""
import os, signal, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from test_store_vectorfile import fill, DIM
from parallelrag.store import EmbeddedStore, embedded
def hook(point):
    if point == sys.argv[2]:
        os.kill(os.getpid(), signal.SIGKILL)
s = EmbeddedStore.open(sys.argv[1], dimension=DIM, model_id="m")
embedded._test_hook = hook
for d in range(25):
    s.remove_document(f"d{d}")  # the compaction starts once a quarter of the rows are dead
print("not killed", flush=True)
"""


@pytest.mark.parametrize("point", ["compaction-written", "compaction-committed"])
def test_kill_9_during_compaction(tmp_path: Path, point: str) -> None:
    rng = np.random.default_rng(10)
    path = tmp_path / "i"
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        fill(s, rng, range(40), 50)  # 2000 rows
    proc = subprocess.run([sys.executable, "-c", _COMPACT_CHILD, str(path), point,
                           str(Path(__file__).parent)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    gen, _ = vec_state(path)
    assert gen == (1 if point == "compaction-written" else 2)
    assert (path / "matrix-1-f32.bin").exists() and (path / "matrix-2-f32.bin").exists()
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        assert_exact(s, rng)  # whichever generation is recorded is complete
        assert not (path / f"matrix-{3 - gen}-f32.bin").exists()  # the other one is deleted
        for d in range(25, 40):
            s.remove_document(f"d{d}")
        fill(s, rng, range(5), 3, prefix="n")
        assert_exact(s, rng)
    with EmbeddedStore.open(path, dimension=DIM, model_id="m") as s:
        assert_exact(s, rng)


def test_a_writer_whose_file_was_compacted_meanwhile_reloads_before_writing(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    path = tmp_path / "i"
    a = EmbeddedStore.open(path, dimension=DIM, model_id="m")
    b = EmbeddedStore.open(path, dimension=DIM, model_id="m")
    try:
        fill(a, rng, range(40), 50)
        a._unlock()  # as in the moment a failed lock upgrade leaves it without its shared lock
        for d in range(25):
            b.remove_document(f"d{d}")
        gen = vec_state(path)[0]
        assert gen >= 2 and a._index.gen == 1  # b compacted; a still maps generation 1
        fill(a, rng, range(3), 5, prefix="n")  # a writes first: it reloads at BEGIN
        assert a._index.gen == gen and vec_state(path)[0] == gen
        assert len(a._index) == 765 and vec_state(path)[1] == a._index._n
        assert_exact(a, rng)
        assert_exact(b, rng)
    finally:
        a.close()
        b.close()
