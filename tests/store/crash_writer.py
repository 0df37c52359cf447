"""Subprocess for the kill -9 test: loops big replace_documents transactions until killed.

Document ``doc{i}`` at version ``v`` has ``n = 1 + (v * 7 + i) % 40`` chunks, each containing the
token ``v{v}x{i}`` and the word ``alpha``; its content_hash is ``"{v}"``.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

from parallelrag.documents import Chunk
from parallelrag.store import EmbeddedStore, embedded

DIM = 16
N_DOCS = 60


def n_chunks(doc: int, version: int) -> int:
    return 1 + (version * 7 + doc) % 40


def chunk_vector(doc: int, version: int, part: int) -> np.ndarray:
    """Each chunk's vector follows from its text, so a test can check it is the chunk's own."""
    v = np.random.default_rng([doc, version, part]).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def item(doc: int, version: int, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    n = n_chunks(doc, version)
    texts = [f"alpha v{version}x{doc} part {j} " + "filler " * 20 for j in range(n)]
    chunks = []
    pos = 0
    for j, t in enumerate(texts):
        chunks.append(Chunk(t, pos, pos + len(t), j, {}))
        pos += len(t)
    vecs = np.stack([chunk_vector(doc, version, j) for j in range(n)])
    return (f"doc{doc}", str(version), chunks, vecs, {"version": version})


def main() -> None:
    path, seed, ann_threshold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # optional 4th argument: "kill-at-hook:N" kills this process (SIGKILL) inside the N-th
    # write, after its vectors are durable in the vector file and before it commits;
    # "txns:N" exits normally after N writes
    mode, _, count = (sys.argv[4] if len(sys.argv) > 4 else "").partition(":")
    rng = np.random.default_rng(seed)
    store = EmbeddedStore.open(path, dimension=DIM, model_id="crash-test", ann_threshold=ann_threshold)
    writes = 0
    if mode == "kill-at-hook":

        def hook(point: str) -> None:
            if point == "vectors-written" and writes == int(count):
                print("killing", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)

        embedded._test_hook = hook
    version = seed * 1_000_000
    print("ready", flush=True)
    while True:
        if mode == "txns" and writes >= int(count):
            store.close()
            print("done", flush=True)
            return
        version += 1
        writes += 1
        docs = rng.choice(N_DOCS, size=25, replace=False)
        print(f"write {version}", flush=True)
        store.replace_documents([item(int(d), version, rng) for d in docs])
        if version % 5 == 0:
            store.remove_document(f"doc{int(rng.integers(N_DOCS))}")
        if version % 7 == 0:
            store.save_index()


if __name__ == "__main__":
    main()
