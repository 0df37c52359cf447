"""``ef_search`` reaches PostgreSQL: the store's own search sets ``hnsw.ef_search`` (``SET LOCAL``
in the search transaction), and the HNSW scan obeys it.

One index of random vectors (high dimension, so the HNSW graph is hard to walk greedily), its
HNSW index built (``ann_threshold`` lowered), searched through two stores that differ only in
``ef_search``: with ``ef_search=1`` (``ef`` = 2 for ``k=1``: a nearly greedy walk) the top hit
is often not the true nearest neighbour; with ``ef_search=400`` it almost always is. Were the
setting dropped (or set outside the search transaction), both stores would scan with the
server's default and give the very same hits, and the test would fail.
"""

from __future__ import annotations

import numpy as np
import pg_helpers
from pg_helpers import index_url
from store_helpers import make_chunks, unit

from parallelrag.store.postgres import PostgresStore

pg_server = pg_helpers.pg_server  # this module's own server

DIM = 64
N = 3000
QUERIES = 200


def _top1(store: PostgresStore, queries: np.ndarray) -> list[int]:
    out = []
    for q in queries:
        hits = store.search_vector(q, k=1)
        assert len(hits) == 1
        out.append(int(hits[0].source[1:]))
    return out


def test_ef_search_reaches_the_hnsw_scan(pg_server: str) -> None:
    rng = np.random.default_rng(11)
    mat = unit(rng, N, DIM)
    queries = unit(rng, QUERIES, DIM)
    truth = np.argmax(queries @ mat.T, axis=1).tolist()
    url = index_url(pg_server, "ef_t")
    with PostgresStore.open(f"{url}&ef_search=1", dimension=DIM, model_id="m",
                            ann_threshold=N // 2) as low:
        for start in range(0, N, 500):
            low.replace_documents([
                (f"d{i}", "h", make_chunks([f"text {i}"]), mat[i:i + 1], None)
                for i in range(start, start + 500)])
        assert low.wait_for_index(timeout=180)
        assert low.index_kind == "pgvector-hnsw"
        got_low = _top1(low, queries)
    with PostgresStore.open(url, dimension=DIM, model_id="m", ef_search=400) as high:
        assert high.index_kind == "pgvector-hnsw"
        got_high = _top1(high, queries)
    with PostgresStore.open(url, dimension=DIM, model_id="m", ann=False) as exact:
        assert _top1(exact, queries[:20]) == truth[:20]  # the truth as the store computes it
    recall_low = float(np.mean([g == t for g, t in zip(got_low, truth, strict=True)]))
    recall_high = float(np.mean([g == t for g, t in zip(got_high, truth, strict=True)]))
    print(f"recall@1: ef_search=1 {recall_low:.3f}, ef_search=400 {recall_high:.3f}")
    assert recall_high >= 0.97, recall_high
    assert recall_low <= recall_high - 0.1, (recall_low, recall_high)
    assert got_low != got_high
