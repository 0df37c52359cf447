from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from store_helpers import make_chunks

from parallelrag.store import EmbeddedStore, Hit

DIM = 8
N_DOCS = 12


def n_for(version: int) -> int:
    return 2 + version % 7


def version_item(doc: int, version: int):  # type: ignore[no-untyped-def]
    n = n_for(version)
    texts = [f"common v{version} part{i}" for i in range(n)]
    vecs = np.zeros((n, DIM), dtype=np.float32)
    vecs[:, 0] = 1.0  # every chunk equally close to e0: a k=all search returns everything
    return (f"doc{doc}", f"v{version}", make_chunks(texts), vecs, {"version": version})


def check_consistent(hits: list[Hit], complete: bool) -> None:
    by_source: dict[str, list[Hit]] = defaultdict(list)
    for h in hits:
        by_source[h.source].append(h)
    for source, hs in by_source.items():
        versions = {h.metadata["version"] for h in hs}
        assert len(versions) == 1, f"{source} mixes versions {versions}"
        if complete:
            (v,) = versions
            assert sorted(h.index for h in hs) == list(range(n_for(v))), f"{source} v{v} is partial"


@pytest.mark.parametrize("ann_threshold", [None, 20], ids=["exact", "hnsw"])
def test_threads_never_see_half_written_documents(tmp_path: Path, ann_threshold: int | None) -> None:
    store = EmbeddedStore.open(tmp_path / "i", dimension=DIM, model_id="m", ann_threshold=ann_threshold)
    if ann_threshold is not None:
        assert store.index_kind == "usearch-hnsw" or len(store._index) < ann_threshold
    store.replace_documents([version_item(d, 0) for d in range(N_DOCS)])
    stop = threading.Event()
    errors: list[BaseException] = []
    searches = [0]
    q = np.zeros(DIM, dtype=np.float32)
    q[0] = 1.0

    def writer() -> None:
        rng = np.random.default_rng(0)
        v = 0
        try:
            while not stop.is_set():
                v += 1
                docs = rng.choice(N_DOCS, size=4, replace=False)
                store.replace_documents([version_item(int(d), v) for d in docs])
                if v % 3 == 0:
                    store.replace_document(*version_item(int(rng.integers(N_DOCS)), v)[:4], metadata={"version": v})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader(kind: str) -> None:
        try:
            while not stop.is_set():
                if kind == "keyword":
                    hits = store.search_keyword("common", k=1000)
                    check_consistent(hits, complete=True)
                    assert len({h.source for h in hits}) == N_DOCS
                elif kind == "vector":
                    check_consistent(store.search_vector(q, k=1000), complete=True)  # exact pass
                    check_consistent(store.search_vector(q, k=5), complete=False)  # graph when hnsw
                else:
                    check_consistent(store.search_hybrid("common", q, k=1000, candidates=1000), complete=False)
                searches[0] += 1
        except BaseException as e:
            errors.append(e)
            stop.set()

    if ann_threshold is not None:
        assert store.index_kind == "usearch-hnsw"
    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(kind,)) for kind in ("keyword", "vector", "hybrid", "vector")
    ]
    for t in threads:
        t.start()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    store.close()
    if errors:
        raise errors[0]
    assert searches[0] > 20


READER_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from parallelrag.store import EmbeddedStore
    s = EmbeddedStore.open(sys.argv[1], dimension=8, model_id="m", read_only=True)
    q = np.zeros(8, dtype=np.float32); q[0] = 1.0
    for line in sys.stdin:
        hits = s.search_vector(q, k=1000)
        kw = s.search_keyword("common", k=1000)
        print(len(s.documents()), len(hits), len(kw), sorted({h.source for h in hits}) == sorted({h.source for h in kw}), flush=True)
    """
)


def test_other_process_read_only_sees_commits(tmp_path: Path) -> None:
    path = tmp_path / "i"
    store = EmbeddedStore.open(path, dimension=DIM, model_id="m")
    store.replace_documents([version_item(d, 1) for d in range(3)])  # 3 chunks each
    proc = subprocess.Popen(
        [sys.executable, "-c", READER_SCRIPT, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:

        def ask() -> str:
            proc.stdin.write("go\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            return proc.stdout.readline().strip()  # type: ignore[union-attr]

        assert ask() == "3 9 9 True"
        store.replace_documents([version_item(d, 2) for d in range(3, 5)])  # +2 docs × 4 chunks
        assert ask() == "5 17 17 True"
        store.replace_document(*version_item(0, 3)[:4])  # doc0: 3 → 5 chunks
        store.remove_document("doc1")
        assert ask() == "4 16 16 True"
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        store.close()
    assert proc.returncode == 0


@pytest.mark.parametrize("n", [3])
def test_incremental_refresh_between_instances(tmp_path: Path, n: int) -> None:
    """A second instance (own connections, own index) picks up changes incrementally."""
    path = tmp_path / "i"
    a = EmbeddedStore.open(path, dimension=DIM, model_id="m")
    b = EmbeddedStore.open(path, dimension=DIM, model_id="m")
    q = np.zeros(DIM, dtype=np.float32)
    q[0] = 1.0
    a.replace_documents([version_item(d, 1) for d in range(n)])
    assert len(b.search_vector(q, k=100)) == 3 * n
    before = b._index.max_id
    a.remove_document("doc0")
    a.replace_document(*version_item(1, 2)[:4])
    hits = b.search_vector(q, k=100)
    assert len(hits) == 3 * (n - 2) + 4
    assert b._index.max_id > before
    a.close()
    b.close()


MP_DIM = 16
MP_READER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from parallelrag.store import EmbeddedStore
    sys.path.insert(0, sys.argv[3])
    from test_store_concurrency import mp_vectors, MP_DIM, mp_query
    path, seconds = sys.argv[1], float(sys.argv[2])
    q = mp_query()
    checks = opens = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        # reopen now and then: between two opens the writer may compact the vector file
        with EmbeddedStore.open(path, dimension=MP_DIM, model_id="m", read_only=True) as s:
            opens += 1
            for _ in range(10):
                hits = s.search_vector(q, k=10_000)
                versions = {}
                for h in hits:
                    v = h.metadata["version"]
                    assert versions.setdefault(h.source, v) == v, (h.source, "mixes versions")
                    want = float(mp_vectors(int(h.source[3:]), v)[h.index] @ q)
                    assert abs(h.score - want) < 1e-4, (h.source, v, h.index, h.score, want)
                    checks += 1
                for source, v in versions.items():
                    n = sum(1 for h in hits if h.source == source)
                    assert n == len(mp_vectors(int(source[3:]), v)), (source, v, "partial")
        time.sleep(0.02)
    print(checks, opens, flush=True)
    """
)


def mp_query() -> np.ndarray:
    q = np.random.default_rng(99).standard_normal(MP_DIM).astype(np.float32)
    return q / np.linalg.norm(q)


def mp_vectors(doc: int, version: int) -> np.ndarray:
    """The vectors of ``doc`` at ``version``: distinct per (doc, version, chunk), so a reader
    that read another chunk's row (a stale or reused slot) gets a wrong score."""
    rng = np.random.default_rng(doc * 100_003 + version)
    v = rng.standard_normal((2 + (doc + version) % 9, MP_DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_readers_in_other_processes_during_writes(tmp_path: Path) -> None:
    """Read-only processes search while this one replaces and removes documents (and compacts
    the vector file whenever no reader has it open): every hit carries the exact score of its
    own vector and no document is ever partial or mixed."""
    path = tmp_path / "mp"
    store = EmbeddedStore.open(path, dimension=MP_DIM, model_id="m")

    def item(doc: int, version: int):  # type: ignore[no-untyped-def]
        vecs = mp_vectors(doc, version)
        texts = [f"d{doc} v{version} c{i}" for i in range(len(vecs))]
        return (f"doc{doc}", f"v{version}", make_chunks(texts), vecs, {"version": version})

    store.replace_documents([item(d, 0) for d in range(40)])
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", MP_READER, str(path), "4", str(Path(__file__).parent)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    rng = np.random.default_rng(5)
    version = 0
    gens = set()
    try:
        while any(r.poll() is None for r in readers):
            version += 1
            docs = rng.choice(40, size=8, replace=False)
            store.replace_documents([item(int(d), version) for d in docs])
            if version % 3 == 0:
                store.remove_document(f"doc{int(rng.integers(40))}")
            gens.add(store._index.gen)
        outs = [r.communicate(timeout=60) for r in readers]
    finally:
        for r in readers:
            if r.poll() is None:
                r.kill()
        store.close()
    for r, (out, err) in zip(readers, outs, strict=True):
        assert r.returncode == 0, err
        checks, opens = map(int, out.split())
        assert checks > 0 and opens > 0
    assert version > 10
