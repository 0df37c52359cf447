"""split_many: order, process-pool path, async twin, and a ticker thread that keeps running."""

from __future__ import annotations

import threading
import time

import pytest

from parallelrag.splitters import (
    MarkdownSplitter,
    RecursiveSplitter,
    SentenceSplitter,
    Splitter,
    TokenSplitter,
)

DOCS = [f"# Doc {i}\n\n" + f"Sentence number {i} is here. " * (5 + i % 40) for i in range(300)]


def _spans(result: list[list]) -> list[list[tuple[int, int, int, object]]]:  # type: ignore[type-arg]
    return [[(c.start, c.end, c.index, c.metadata) for c in chunks] for chunks in result]


@pytest.mark.parametrize(
    "splitter",
    [
        RecursiveSplitter(200, 20),
        SentenceSplitter(200, 1),
        MarkdownSplitter(200, 0),
        TokenSplitter(48, 8),
        TokenSplitter(48, 8, "cl100k"),
    ],
    ids=repr,
)
def test_split_many_matches_split_text(splitter: Splitter) -> None:
    metas = [{"i": i} for i in range(len(DOCS))]
    expected = [splitter.split_text(d, m) for d, m in zip(DOCS, metas, strict=True)]
    got = splitter.split_many(DOCS, metadatas=metas)
    assert _spans(got) == _spans(expected)
    assert all(c.metadata["i"] == i for i, chunks in enumerate(got) for c in chunks)


def test_process_pool_path_matches_in_process() -> None:
    s = MarkdownSplitter(150, 10)
    s.parallel_min_chars = 0  # force the pool even for a small batch
    expected = [s.split_text(d) for d in DOCS]
    got = s.split_many(DOCS, workers=2)
    assert _spans(got) == _spans(expected)
    assert [[c.text for c in cs] for cs in got] == [[c.text for c in cs] for cs in expected]


def test_unpicklable_length_stays_in_process() -> None:
    s = RecursiveSplitter(50, 0, length=lambda t: len(t.split()) + 1)
    s.parallel_min_chars = 0
    got = s.split_many(DOCS[:20], workers=2)
    assert _spans(got) == _spans([s.split_text(d) for d in DOCS[:20]])


async def test_asplit_many() -> None:
    s = RecursiveSplitter(200, 20)
    got = await s.asplit_many(DOCS[:50])
    assert _spans(got) == _spans(s.split_many(DOCS[:50]))


def _ticks_during(fn: object, seconds: float | None = None) -> tuple[float, float]:
    """Ticker rate (ticks/s) idle, and while ``fn()`` runs in the main thread."""
    stop = threading.Event()
    count = [0]

    def tick() -> None:
        while not stop.is_set():
            count[0] += 1
            for _ in range(200):
                pass

    th = threading.Thread(target=tick, daemon=True)
    th.start()
    time.sleep(0.05)
    c0, t0 = count[0], time.perf_counter()
    time.sleep(0.3)
    idle = (count[0] - c0) / (time.perf_counter() - t0)
    c0, t0 = count[0], time.perf_counter()
    fn()  # type: ignore[operator]
    busy = (count[0] - c0) / (time.perf_counter() - t0)
    stop.set()
    th.join()
    return idle, busy


def test_ticker_keeps_running_during_split_many() -> None:
    """The batch runs in a worker process; the caller only waits (GIL released), so a
    pure-Python ticker thread keeps most of its idle rate. One worker, so that on a 2-core
    machine the ticker has a core of its own (with 2 workers it competes for CPU, not GIL)."""
    big = ["ab\n" * 100_000] * 12  # 3.6 MB of tiny lines: much splitting work per byte sent
    s = SentenceSplitter(1000, 1)
    s._spans_pool(big[:4], 1, 1)  # start the pool outside the measurement
    total = sum(map(len, big))
    # best of 3: other processes on a 2-core machine steal the ticker's core, not its GIL
    ratio = held_ratio = 0.0
    for _ in range(3):
        idle, busy = _ticks_during(lambda: s._spans_pool(big, 1, total))
        _, held = _ticks_during(lambda: [s._spans(t) for t in big])  # in-process, GIL held
        ratio, held_ratio = max(ratio, busy / idle), max(held_ratio, held / idle)
        if ratio > 0.5:
            break
    print(f"ticker ratio: pool {ratio:.2f}, in-process {held_ratio:.2f}")
    assert ratio > 0.5, ratio
