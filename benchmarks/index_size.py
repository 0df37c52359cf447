"""Index size: bytes on disk per chunk against what a chunk needs (issue 14).

What a chunk needs: its text (UTF-8), one float32 vector and its share of a keyword index. The
keyword index's size is measured by building an FTS5 index over the same chunk texts alone (in
a scratch SQLite file). The index is built with :class:`parallelrag.pipeline.Index` over the
Python 3.11 documentation (see :mod:`benchmarks.corpus`; ``--synthetic`` for generated text when
the package cannot be fetched), embedded by a deterministic hashing function (vectors of
``--dim`` dims; the model does not change the size), split by a ~128-token character splitter.

    python benchmarks/index_size.py [--dim 384] [--chunk-size 512] [--limit N] [--synthetic]
                                    [--no-vector-file]

Prints the per-file sizes of the index directory, bytes per chunk, the ratio to the need
(goal: at most 1.3), and how long a fresh open of the store plus one search takes.
By default each vector is stored once, in the store's mapped vector file; ``--no-vector-file``
builds it with ``PARALLELRAG_VECTOR_FILE=0`` (vectors only in the database, all read at every
open).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _hash_vectors(dim: int):  # type: ignore[no-untyped-def]
    def embed(texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest()[:8],
                                  "little")
            v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out

    return embed


def _corpus(synthetic: bool, limit: int | None) -> list[tuple[str, str]]:
    if synthetic:
        from corpus import ascii_mb

        return [(f"gen{i}", t) for i, t in enumerate(ascii_mb(13_000_000))][:limit]
    from corpus import pydoc_corpus

    docs = pydoc_corpus()
    return docs[:limit] if limit else docs


def _fts_bytes(texts: list[str], contexts: list[str]) -> int:
    with tempfile.TemporaryDirectory() as d:
        db = Path(d) / "fts.sqlite"
        con = sqlite3.connect(db)
        con.execute("CREATE VIRTUAL TABLE f USING fts5(text, context, content='', "
                    "tokenize='unicode61 remove_diacritics 2')")
        con.executemany("INSERT INTO f(rowid, text, context) VALUES (?, ?, ?)",
                        [(i + 1, t, c) for i, (t, c) in enumerate(zip(texts, contexts,
                                                                        strict=True))])
        con.commit()
        con.execute("INSERT INTO f(f) VALUES ('optimize')")
        con.commit()
        con.execute("VACUUM")
        con.close()
        return db.stat().st_size


def _dir_sizes(path: Path) -> dict[str, int]:
    out = {}
    for f in sorted(path.iterdir()):
        if f.is_file():
            st = f.stat()
            out[f.name] = min(st.st_size, getattr(st, "st_blocks", st.st_size) * 512)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--chunk-size", type=int, default=512)
    ap.add_argument("--limit", type=int, default=None, help="documents of the corpus to use")
    ap.add_argument("--synthetic", action="store_true", help="generated text instead of pydoc")
    ap.add_argument("--no-vector-file", action="store_true",
                    help="PARALLELRAG_VECTOR_FILE=0: vectors in the database, no vector file")
    args = ap.parse_args()
    if args.no_vector_file:
        os.environ["PARALLELRAG_VECTOR_FILE"] = "0"

    from parallelrag import EmbeddingClient
    from parallelrag.documents import Document
    from parallelrag.pipeline import Index
    from parallelrag.splitters import RecursiveSplitter

    docs = _corpus(args.synthetic, args.limit)
    corpus_bytes = sum(len(t.encode()) for _, t in docs)
    emb = EmbeddingClient.from_function(_hash_vectors(args.dim), dim=args.dim, name="hash")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "idx"
        index = Index.open(path, embedder=emb,
                           splitter=RecursiveSplitter(args.chunk_size, args.chunk_size // 10))
        t0 = time.perf_counter()
        report = index.ingest(Document(text, id=name, metadata={"title": name})
                              for name, text in docs)
        wall = time.perf_counter() - t0
        texts: list[str] = []
        contexts: list[str] = []
        con = sqlite3.connect(path / "store.sqlite")
        for text, context in con.execute("SELECT text, context FROM chunks"):
            texts.append(text)
            contexts.append(context)
        con.close()
        index.close()  # persists the ANN graph, if any
        sizes = _dir_sizes(path)
        from parallelrag.store import EmbeddedStore

        opens = []
        for _ in range(3):  # the first after the ingest, then two more (median reported)
            t0 = time.perf_counter()
            store = EmbeddedStore.open(path, dimension=args.dim, model_id=f"function:{emb.model}")
            store.search_vector(np.ones(args.dim, dtype=np.float32), k=5)
            opens.append(time.perf_counter() - t0)
            store.close()
        reopen = sorted(opens)[1]
    n = len(texts)
    text_b = sum(len(t.encode()) + len(c.encode()) for t, c in zip(texts, contexts, strict=True))
    vec_b = n * args.dim * 4
    fts_b = _fts_bytes(texts, contexts)
    need = text_b + vec_b + fts_b
    total = sum(sizes.values())
    print(f"corpus: {len(docs)} documents, {corpus_bytes / 1e6:.1f} MB; {n} chunks of "
          f"~{args.chunk_size} chars, {args.dim}-d float32; ingest {wall:.1f} s "
          f"({report.chunks} chunks written)")
    print(f"{'file':<28}{'bytes':>14}{'per chunk':>12}")
    for name, b in sizes.items():
        print(f"{name:<28}{b:>14,}{b / n:>12,.0f}")
    print(f"{'index directory':<28}{total:>14,}{total / n:>12,.0f}")
    print(f"{'need: text+context':<28}{text_b:>14,}{text_b / n:>12,.0f}")
    print(f"{'need: one float32 vector':<28}{vec_b:>14,}{vec_b / n:>12,.0f}")
    print(f"{'need: keyword index (FTS5)':<28}{fts_b:>14,}{fts_b / n:>12,.0f}")
    print(f"{'need: total':<28}{need:>14,}{need / n:>12,.0f}")
    print(f"ratio index / need: {total / need:.2f}x (goal <= 1.3x); "
          f"index / corpus: {total / corpus_bytes:.2f}x")
    mode = "off" if args.no_vector_file else "on"
    print(f"vector file {mode}: open + first search {reopen * 1000:.0f} ms (median of 3: "
          + ", ".join(f"{t * 1000:.0f}" for t in opens) + " ms)")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
