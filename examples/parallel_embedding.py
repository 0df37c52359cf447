"""Embedding from many threads at once vs one batch after another, with the measured speed-up.

    python examples/parallel_embedding.py [--batches 16] [--threads 8]

Each call blocks its thread without holding the GIL (the request runs on parallelrag's runtime
loop), so plain threads overlap their waits; the shared rate and concurrency limits still hold
across all of them. Uses ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` (model: ``EXAMPLE_EMBED_MODEL``,
default text-embedding-3-small), or a simulated provider with 50 ms per request.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from _provider import provider

from parallelrag import EmbeddingClient


def main(batches: int, threads: int, batch_size: int) -> float:
    with provider(latency=0.05) as prov:
        emb = EmbeddingClient.openai(
            os.environ.get("EXAMPLE_EMBED_MODEL", "text-embedding-3-small"),
            base_url=prov.base_url, api_key=prov.api_key, batch_size=batch_size)
        work = [[f"document {b}, passage {i}: parallel embedding from threads"
                 for i in range(batch_size)] for b in range(batches)]
        emb.embed("warm-up")  # connection set up and dimension learnt outside the timings

        t0 = time.perf_counter()
        sequential = [emb.embed_many(batch) for batch in work]
        t_seq = time.perf_counter() - t0

        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            parallel = list(pool.map(emb.embed_many, work))
        t_par = time.perf_counter() - t0

    same = all(np.array_equal(a, b) for a, b in zip(sequential, parallel, strict=True))
    speedup = t_seq / t_par
    print(f"{batches} batches of {batch_size} texts ({batches * batch_size} texts)")
    print(f"one batch after another: {t_seq:.2f} s")
    print(f"{threads} threads at once:     {t_par:.2f} s")
    print(f"speed-up: {speedup:.1f}x; same vectors in the same order: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit(1)
    return speedup


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    a = ap.parse_args()
    main(a.batches, a.threads, a.batch_size)
