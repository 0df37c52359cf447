"""kill -9 a writer mid-transaction, several times; after each reopen the store must be exact."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
from crash_writer import chunk_vector

from parallelrag.store import EmbeddedStore

HERE = Path(__file__).parent
DIM = 16


def n_chunks(doc: int, version: int) -> int:  # same rule as crash_writer.py
    return 1 + (version * 7 + doc) % 40


def verify(path: Path, ann_threshold: int) -> int:
    con = sqlite3.connect(path / "store.sqlite")
    try:
        docs = con.execute("SELECT source, content_hash, n_chunks FROM documents").fetchall()
        per_source = Counter(r[0] for r in con.execute("SELECT source FROM chunks"))
        assert con.execute("SELECT count(*) FROM chunks WHERE source NOT IN (SELECT source FROM documents)").fetchone()[0] == 0
        con.execute("INSERT INTO chunks_fts(chunks_fts) VALUES ('integrity-check')")
        con.rollback()
    finally:
        con.close()
    assert len({d[0] for d in docs}) == len(docs)
    with EmbeddedStore.open(path, dimension=DIM, model_id="crash-test", ann_threshold=ann_threshold) as s:
        records = {r.source: r for r in s.documents()}
        total = 0
        for source, chash, n in docs:
            doc = int(source[3:])
            version = int(chash)
            assert n == n_chunks(doc, version) == per_source[source], source
            assert records[source].metadata == {"version": version}
            total += n
            hits = s.search_keyword(f"v{version}x{doc}", k=100)
            assert len(hits) == n and {h.source for h in hits} == {source}
            assert sorted(h.index for h in hits) == list(range(n))
        # FTS holds exactly the live chunks, no more, no less
        live = {h.chunk_id for h in s.search_keyword("alpha", k=100_000)}
        assert len(live) == total == s.stats()["chunks"]
        # the vector index holds exactly the live chunks too
        assert set(s._index.live_ids().tolist()) == live
        q = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
        vhits = s.search_vector(q, k=total + 10)
        assert {h.chunk_id for h in vhits} == live
        for h in vhits[:20]:
            assert re.search(rf"v{int(records[h.source].content_hash)}x{h.source[3:]} ", h.text)
    return total


def test_kill_9_mid_write_is_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "store"
    rnd = random.Random(1234)
    ann_threshold = 600  # crosses into the HNSW index during the run
    totals = []
    for round_no in range(5):
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "crash_writer.py"), str(path), str(round_no + 1), str(ann_threshold)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # never block the writer
        time.sleep(rnd.uniform(0.15, 0.9))
        assert proc.poll() is None, "writer died by itself"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        totals.append(verify(path, ann_threshold))
    assert all(t > 0 for t in totals)


def vector_file_state(path: Path) -> tuple[int, int, int]:
    """(committed vector rows, rows the id file holds, rows whose chunk exists)."""
    con = sqlite3.connect(path / "store.sqlite")
    try:
        st = dict(con.execute(
            "SELECT key, value FROM manifest WHERE key IN ('vector_gen', 'vector_rows')").fetchall())
        live = {r[0] for r in con.execute("SELECT id FROM chunks")}
    finally:
        con.close()
    gen, rows = int(st["vector_gen"]), int(st["vector_rows"])
    ids = np.fromfile(path / f"matrix-{gen}-ids.bin", dtype=np.int64)
    return rows, len(ids), len(live & set(ids[:rows].tolist()))


def run_writer(path: Path, seed: int, mode: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, str(HERE / "crash_writer.py"), str(path), str(seed), "600", mode],
        capture_output=True, text=True, timeout=300,
    )
    lines = proc.stdout.split()
    if mode.startswith("kill-at-hook"):
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        assert "killing" in lines
    else:
        assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_kill_9_between_vector_write_and_commit(tmp_path: Path) -> None:
    """Killed after its vectors are durable but before its commit: the write is not there, the
    rows it wrote past the committed count are ignored, and writing resumes over them."""
    path = tmp_path / "store"
    run_writer(path, 1, "txns:3")
    total = verify(path, 600)
    rows_before = vector_file_state(path)[0]
    for seed, at in ((2, 1), (3, 4)):
        out = run_writer(path, seed, f"kill-at-hook:{at}")
        killed = int([x for x in out if x.startswith("write ")][-1].split()[1])
        rows, id_rows, with_chunk = vector_file_state(path)
        assert id_rows > rows  # the killed write's vectors reached the file, past the count
        total = verify(path, 600)
        assert with_chunk == total  # every live chunk has its vector among the committed rows
        con = sqlite3.connect(path / "store.sqlite")
        try:
            assert con.execute("SELECT count(*) FROM documents WHERE content_hash = ?",
                               (str(killed),)).fetchone()[0] == 0  # the killed write is absent
        finally:
            con.close()
    run_writer(path, 4, "txns:3")  # resumes: the next writes overwrite the orphaned rows
    assert verify(path, 600) > 0 and total > 0
    rows, _, with_chunk = vector_file_state(path)
    assert rows > rows_before and with_chunk == verify(path, 600)


def test_two_writer_processes_append_to_the_same_vector_file(tmp_path: Path) -> None:
    """Writers in two processes interleave their transactions (each appends its vectors under
    the database's write lock); afterwards every chunk has exactly its own vector."""
    path = tmp_path / "store"
    run_writer(path, 1, "txns:1")  # create the store first
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "crash_writer.py"), str(path), str(seed), "600", "txns:12"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for seed in (2, 3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0 and out.split()[-1] == "done", err
    total = verify(path, 600)
    _, _, with_chunk = vector_file_state(path)
    assert with_chunk == total > 0
    # the vector stored for each chunk is its own (it follows from the chunk's text)
    with EmbeddedStore.open(path, dimension=DIM, model_id="crash-test") as s:
        hits = s.get_chunks(s._index.live_ids().tolist())
        ids, vecs = s._index.vectors_of(np.array([h.chunk_id for h in hits], dtype=np.int64))
        assert len(hits) == len(ids) == total
        for h, v in zip(hits, vecs, strict=True):
            m = re.match(r"alpha v(\d+)x(\d+) part (\d+) ", h.text)
            assert m is not None
            version, doc, part = map(int, m.groups())
            assert np.allclose(v, chunk_vector(doc, version, part)), h.text
