"""kill -9 a writer mid-transaction, several times; after each reopen the store must be exact."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

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
        time.sleep(rnd.uniform(0.15, 0.9))
        assert proc.poll() is None, "writer died by itself"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        totals.append(verify(path, ann_threshold))
    assert all(t > 0 for t in totals)
