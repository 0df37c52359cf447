"""Ingest progress arrives while the work happens, not in one jump at the end.

A slow provider (the simulator with latency, two requests at a time, small batches) makes the
embedding the long part of the run. Progress callbacks are recorded with their time:
``documents_done`` must rise in several steps spread over the run (documents are written as
the requests holding their chunks answer), and ``files_seen`` must move before the first
embedding is back (the loader's progress is reported as it reads). The CLI's view, fed by the
same callbacks, shows the documents-written count moving while the run goes on.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from parallelrag import EmbeddingClient
from parallelrag.cli_progress import IngestView
from parallelrag.pipeline import Index, IngestProgress
from parallelrag.sim import SimServer

N_FILES = 48


def _corpus(root: Path) -> Path:
    root.mkdir()
    for i in range(N_FILES):
        # two chunks a file with the default splitter (1500 characters)
        (root / f"f{i:03d}.txt").write_text(
            f"File {i}. " + f"sentence {i} about a topic of its own, long enough. " * 45)
    return root


def _slow_embedder(srv: SimServer, model: str) -> EmbeddingClient:
    return EmbeddingClient.openai(model, base_url=srv.url, api_key="sk-progress-test",
                                  dimensions=16, batch_size=8, max_concurrency=2,
                                  initial_concurrency=2, adaptive=False)


def test_documents_done_rises_in_steps_over_the_run(tmp_path: Path, make_sim: Any) -> None:
    srv = make_sim(latency=0.25)
    corpus = _corpus(tmp_path / "c")
    index = Index.open(tmp_path / "idx", embedder=_slow_embedder(srv, "progress-steps"))
    events: list[tuple[float, IngestProgress]] = []
    t0 = time.monotonic()
    try:
        report = index.ingest([corpus], progress=lambda p: events.append((time.monotonic(), p)))
    finally:
        index.close()
    t_end = time.monotonic()
    assert report.added == N_FILES and report.chunks >= 2 * N_FILES and not report.failed
    assert report.requests >= 10  # the run really was many slow requests
    done = [(t, p.documents_done) for t, p in events]
    assert [d for _, d in done] == sorted(d for _, d in done)  # in order, never backwards
    values = sorted({d for _, d in done})
    assert values[-1] == N_FILES
    steps = [b - a for a, b in zip([0, *values], values, strict=False)]
    assert len(values) >= 4, values  # several steps ...
    assert max(steps) <= N_FILES // 2, steps  # ... none of them most of the run
    # ... spread over the run: half the documents were written well before its end
    t_half = min(t for t, d in done if d >= N_FILES // 2)
    assert t_half - t0 < 0.8 * (t_end - t0), (t_half - t0, t_end - t0)
    # the loader's progress is reported as it reads, before any embedding is back
    first_embedded = min(t for t, p in events if p.embedded > 0)
    assert any(p.files_seen > 0 for t, p in events if t < first_embedded), [
        (round(t - t0, 3), p.files_seen, p.embedded) for t, p in events[:5]]


def test_cli_view_shows_documents_written_while_running(tmp_path: Path, make_sim: Any) -> None:
    srv = make_sim(latency=0.25)
    corpus = _corpus(tmp_path / "c")
    emb = _slow_embedder(srv, "progress-cli")
    index = Index.open(tmp_path / "idx", embedder=emb)
    view = IngestView(N_FILES, emb, enabled=False, live=False)
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            line = view.status()
            files = int(re.search(r"(\d+)/\d+ files read", line).group(1))  # type: ignore[union-attr]
            docs = int(re.search(r"(\d+) documents written", line).group(1))  # type: ignore[union-attr]
            seen.append((files, docs))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        index.ingest([corpus], progress=view.on_progress)
    finally:
        stop.set()
        sampler.join()
        index.close()
    docs_values = sorted({d for _, d in seen if 0 < d < N_FILES})
    assert len(docs_values) >= 3, sorted(set(seen))  # the count moved while the run went on
    assert any(f > 0 and d == 0 for f, d in seen), sorted(set(seen))  # files before documents


def test_request_groups_follow_request_size_and_keep_files_together() -> None:
    from parallelrag.documents import Chunk
    from parallelrag.pipeline.index import _request_groups

    def doc(key: str, h: str, n: int) -> tuple[str, str, list[Chunk], dict[str, object], list[str]]:
        return key, h, [Chunk("t", 0, 1, i, {}) for i in range(n)], {}, []

    docs = [doc("a", "ha", 3), doc("b", "hb", 3), doc("c", "hc", 3), doc("big", "hx", 20),
            doc("j#0", "hj", 5), doc("j#1", "hj", 5), doc("z", "hz", 1)]
    assert _request_groups(docs, None) == [docs]
    assert _request_groups(docs, 1000) == [docs]  # fits one request: one group, as before
    groups = _request_groups(docs, 8)
    assert [[d[0] for d in g] for g in groups] == [
        ["a", "b"], ["c"], ["big"], ["j#0", "j#1"], ["z"]]  # one file stays together
    assert [d for g in groups for d in g] == docs  # order and content kept
