"""Runtime overhead: run_sync alone, run_sync + one HTTP round trip, requests/s from N threads.

Run: .venv/bin/python benchmarks/runtime_overhead.py   (starts its own sim in a subprocess)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time

from parallelrag import EmbeddingClient, runtime
from parallelrag.sim import SimConfig, SimProcess


async def _noop() -> int:
    return 1


def bench_run_sync(n: int) -> float:
    runtime.run_sync(_noop())
    t0 = time.perf_counter()
    for _ in range(n):
        runtime.run_sync(_noop())
    return (time.perf_counter() - t0) / n


def bench_asyncio_run_baseline(n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        asyncio.run(_noop())
    return (time.perf_counter() - t0) / n


def bench_roundtrip(emb: EmbeddingClient, n: int) -> list[float]:
    emb.embed("warm")
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        emb.embed(f"t{i}")
        lat.append(time.perf_counter() - t0)
    return lat


def bench_threads(emb: EmbeddingClient, threads: int, seconds: float) -> float:
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def worker(w: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            emb.embed(f"w{w} {i}")
            i += 1
        counts[w] = i

    ts = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    proc = SimProcess(SimConfig(latency=0.0, embedding_dim=16)).start()
    try:
        emb = EmbeddingClient.openai("bench", base_url=proc.url, api_key="sk-bench",
                                     dimensions=16, initial_concurrency=64, max_concurrency=256)
        rs = bench_run_sync(5000)
        ar = bench_asyncio_run_baseline(500)
        lat = bench_roundtrip(emb, 1000)
        rows = [("run_sync(no-op coroutine)", f"{rs * 1e6:.1f} µs", ""),
                ("asyncio.run(no-op) for comparison", f"{ar * 1e6:.1f} µs", ""),
                ("run_sync + embed() round trip, p50", f"{statistics.median(lat) * 1e6:.0f} µs",
                 f"p99 {sorted(lat)[int(len(lat) * 0.99)] * 1e6:.0f} µs")]
        for th in (1, 8, 32):
            rps = bench_threads(emb, th, args.seconds)
            rows.append((f"embed() requests/s from {th} threads", f"{rps:,.0f} req/s", ""))
    finally:
        proc.stop()
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':<{w}}  {'value':>14}  note")
    for name, value, note in rows:
        print(f"{name:<{w}}  {value:>14}  {note}")


if __name__ == "__main__":
    main()
