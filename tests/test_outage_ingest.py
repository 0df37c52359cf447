"""A provider outage during an ingest is waited out (issue 13).

The sim runs in its own process; after the ingest has made a few requests the process is
stopped for about 15 s (connections refused, the circuit opens), then restarted on the same
port. Batch work waits for the circuit (up to ``outage_deadline_s``) instead of failing the
queued documents: the run finishes with every document indexed and no failures, through the
library and through ``parallelrag ingest`` (exit code 0).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from parallelrag import EmbeddingClient, Index
from parallelrag.sim import SimConfig, SimProcess

DOCS = 300
OUTAGE_S = 15.0
pytestmark = pytest.mark.slow


def make_corpus(root: Path) -> Path:
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(DOCS):
        (corpus / f"doc{i:03d}.txt").write_text(
            f"Document {i}. " + " ".join(f"word{(i * 7 + k) % 101}" for k in range(30)) + "\n"
        )
    return corpus


def outage_when(sim: SimProcess, ready: Callable[[], bool], log: list[str]) -> threading.Thread:
    """A thread that stops ``sim`` once ``ready()``, waits OUTAGE_S and restarts it on the same
    port (``sim`` is updated in place)."""

    def run() -> None:
        deadline = time.monotonic() + 120
        while not ready():
            if time.monotonic() > deadline:
                log.append("never ready")
                return
            time.sleep(0.01)
        port = sim.port
        sim.stop()
        log.append(f"stopped at {time.monotonic():.1f}")
        time.sleep(OUTAGE_S)
        fresh = SimProcess(sim.config, port=port or 0)
        for _ in range(50):  # the port may linger for a moment
            try:
                fresh.start()
                break
            except Exception:
                time.sleep(0.2)
        sim.__dict__.update(fresh.__dict__)
        log.append(f"restarted at {time.monotonic():.1f}")

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_ingest_waits_out_an_outage(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    sim = SimProcess(SimConfig(latency=0.05)).start()
    try:
        emb = EmbeddingClient.openai(
            "outage-lib", base_url=sim.url, dimensions=16, batch_size=4, max_concurrency=2,
            adaptive=False, outage_deadline_s=120,
        )
        index = Index.open(tmp_path / "idx", embedder=emb)
        done = [0]
        log: list[str] = []

        def progress(p: object) -> None:
            done[0] = max(done[0], getattr(p, "embedded", 0))

        t = outage_when(sim, lambda: done[0] >= 20, log)
        t0 = time.monotonic()
        try:
            report = index.ingest(corpus, progress=progress)
        finally:
            index.close()
        t.join(60)
        elapsed = time.monotonic() - t0
        print(log, f"ingest took {elapsed:.1f} s: {report.added} added, "
              f"{len(report.failed)} failed {report.failed[:1]}")
        assert any(x.startswith("stopped") for x in log) and any(
            x.startswith("restarted") for x in log)
        assert elapsed >= OUTAGE_S  # it really went through the outage
        assert report.failed == []
        assert report.added == DOCS
        stats = emb.stats()["provider"]
        print({k: stats[k] for k in ("requests", "retries", "outage_wait_s")})
    finally:
        sim.stop()


def test_cli_ingest_exits_0_through_an_outage(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path)
    sim = SimProcess(SimConfig(latency=0.05)).start()
    try:
        spec = (f"openai://outage-cli?base_url={sim.url}&dimensions=16&batch_size=4"
                "&max_concurrency=2&adaptive=false&outage_deadline_s=120")
        env = dict(os.environ, PARALLELRAG_PROGRESS_EVERY="0")
        proc = subprocess.Popen(
            [sys.executable, "-m", "parallelrag", "ingest", str(corpus),
             "--index", str(tmp_path / "idx"), "--embed", spec],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
        )
        log: list[str] = []

        def ready() -> bool:
            try:
                return int(sim.stats()["requests"]) >= 10
            except Exception:
                return False

        t = outage_when(sim, ready, log)
        out, err = proc.communicate(timeout=240)
        t.join(60)
        print(log, out.decode()[-600:], err.decode()[-600:])
        assert any(x.startswith("stopped") for x in log)
        assert proc.returncode == 0
        index = Index.open(tmp_path / "idx", create=False)
        try:
            assert index.stats()["documents"] == DOCS
        finally:
            index.close()
    finally:
        sim.stop()
