"""What a waiting call costs the rest of the program: a pure-Python ticker's rate while 8 threads
make sync ``embed()`` calls that each wait ~100 ms on a provider.

A ticker thread counts in a pure-Python loop for a fixed window; it can only count while it holds
the GIL. While 8 other threads wait on network calls, the ticker keeps its idle rate if the waits
hold no GIL; the Python work each client does around a request (building it, parsing the answer)
takes the GIL from the ticker for that long. Each case runs right after an idle window of its
own and is compared with it (the idle rate moves with the machine's load); rounds repeat the
cycle and the medians are reported. Cases:

* idle: the ticker alone;
* parallelrag: 8 threads loop ``EmbeddingClient.embed()`` (sync facade over the runtime's loop);
* openai SDK: 8 threads loop ``openai.OpenAI().embeddings.create()`` (sync httpx client),
  where the ``openai`` package is installed (the benchmark environment: ``bash
  benchmarks/setup_env.sh``);
* reference: 8 threads that run pure Python for 100 ms per "call" instead of waiting, which is
  what a wait that held the GIL would cost the ticker.

The sim runs in its own process (``parallelrag.sim.SimProcess``), 100 ms per request.

Run: .bench-venv/bin/python benchmarks/gil_ticker.py   (or .venv/bin/python: no openai row)
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from parallelrag import EmbeddingClient
from parallelrag.sim import SimConfig, SimProcess

THREADS = 8
API_KEY = "sk-bench-gil-ticker"


def _ticker(stop: threading.Event, out: list[int]) -> None:
    n = 0
    while not stop.is_set():
        for _ in range(1000):
            n += 1
    out.append(n)


def _spin(_text: str) -> object:
    """Pure-Python work for as long as one sim round trip: a thread that holds the GIL."""
    end = time.perf_counter() + 0.1
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def measure(call: Callable[[str], object] | None, seconds: float) -> tuple[float, float]:
    """Ticker rate (ticks/s) and calls/s completed in the window while ``THREADS`` threads
    loop ``call``."""
    stop = threading.Event()
    ticks: list[int] = []
    calls = [0] * THREADS

    def caller(w: int) -> None:
        i = 0
        while not stop.is_set():
            assert call is not None
            call(f"thread {w} text {i}")
            i += 1
            calls[w] = i

    workers = [threading.Thread(target=caller, args=(w,)) for w in range(THREADS)] if call else []
    for t in workers:
        t.start()
    if workers:
        time.sleep(0.3)  # every caller in its loop before the window opens
    ticker = threading.Thread(target=_ticker, args=(stop, ticks))
    before = sum(calls)
    t0 = time.perf_counter()
    ticker.start()
    time.sleep(seconds)
    stop.set()
    done = sum(calls) - before
    ticker.join()
    wall = time.perf_counter() - t0
    for t in workers:
        t.join()
    return ticks[0] / wall, done / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="window per case and round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (medians reported)")
    ap.add_argument("--latency", type=float, default=0.1, help="sim latency per request, s")
    args = ap.parse_args()

    proc = SimProcess(SimConfig(latency=args.latency, embedding_dim=64)).start()
    try:
        emb = EmbeddingClient.openai("gil-ticker", base_url=proc.url, api_key=API_KEY,
                                     dimensions=64)
        cases: dict[str, Callable[[str], object] | None] = {"idle (ticker alone)": None}
        cases[f"parallelrag EmbeddingClient.embed(), {THREADS} threads"] = emb.embed
        versions = [f"parallelrag {__import__('parallelrag').__version__}"]
        try:
            openai: Any = importlib.import_module("openai")
        except ImportError:
            openai = None
        if openai is not None:
            sdk = openai.OpenAI(base_url=proc.url, api_key=API_KEY)

            def sdk_embed(text: str) -> object:
                return sdk.embeddings.create(model="gil-ticker", input=text, dimensions=64)

            cases[f"openai SDK embeddings.create(), {THREADS} threads"] = sdk_embed
            versions.append(f"openai {openai.__version__}")
        cases[f"reference: {THREADS} threads running pure Python (they hold the GIL)"] = _spin
        for call in cases.values():  # warm: connections, imports, the runtime
            if call is not None and call is not _spin:
                call("warm")
        # every case is measured right after an idle window of its own, and compared with it:
        # on a shared machine the idle rate moves with the load, a paired ratio much less
        idle_name = "idle (ticker alone)"
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in cases}
        for _ in range(args.rounds):
            for name, call in cases.items():
                if call is None:
                    continue
                idle_rate, _ = measure(None, args.seconds)
                rate, done = measure(call, args.seconds)
                results[idle_name].append((idle_rate, 1.0, 0.0))
                results[name].append((rate, rate / idle_rate, done))
    finally:
        proc.stop()

    print(f"# GIL ticker: {THREADS} threads x sync embed() at {args.latency * 1000:.0f} ms "
          f"latency; {os.cpu_count()} cores; {', '.join(versions)}")
    print(f"# {args.rounds} rounds; each case's {args.seconds:.0f} s window right after an idle "
          "window of its own; medians (vs idle: of the paired ratios, with their range)\n")
    print("| while the ticker runs | ticker rate (M ticks/s) | vs idle | embed calls/s |")
    print("|---|---:|---:|---:|")
    for name, rows in results.items():
        rate = statistics.median(r for r, _, _ in rows)
        ratios = [q for _, q, _ in rows]
        if name == idle_name:
            vs_idle = "1.00"
        else:
            vs_idle = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
        calls = "" if name.startswith(("idle", "reference")) else (
            f"{statistics.median(d for _, _, d in rows):.0f}")
        print(f"| {name} | {rate / 1e6:.2f} | {vs_idle} | {calls} |")

if __name__ == "__main__":
    main()
