"""PostgresStore against a real PostgreSQL + pgvector started by the test run (pg_helpers)."""

from __future__ import annotations

import fnmatch
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pg_helpers
import pytest
from pg_helpers import index_url, pg_tmpdir
from store_helpers import make_chunks, unit

from parallelrag.documents import Chunk
from parallelrag.errors import ConfigError, StoreError
from parallelrag.store import EmbeddedStore
from parallelrag.store import pgserver as pgs
from parallelrag.store.base import VectorStore, embed_text, text_key
from parallelrag.store.fusion import fuse
from parallelrag.store.postgres import PostgresStore, _glob_regex, _safe_url

pg_server = pg_helpers.pg_server  # fixtures of this module
pg_url = pg_helpers.pg_url

DIM = 16


def _items(rng: np.random.Generator, n_docs: int, per_doc: int = 3) -> list:  # type: ignore[type-arg]
    items = []
    for d in range(n_docs):
        texts = [f"doc {d} part {i} word{d % 5} shared" for i in range(per_doc)]
        meta = {"lang": "en" if d % 2 else "fr", "n": d, "flag": d % 3 == 0, "none": None}
        items.append((f"dir{d % 3}/doc{d}.md", f"h{d}", make_chunks(texts), unit(rng, per_doc, DIM), meta))
    return items


def test_is_a_vector_store_and_round_trips(pg_url: str) -> None:
    rng = np.random.default_rng(1)
    with PostgresStore.open(pg_url, dimension=DIM, model_id="m") as s:
        assert isinstance(s, VectorStore)
        items = _items(rng, 6)
        s.replace_documents(items)
        docs = s.documents()
        assert [d.source for d in docs] == sorted(i[0] for i in items)
        rec = s.get_document("dir1/doc1.md")
        assert rec is not None and rec.content_hash == "h1" and rec.n_chunks == 3
        assert rec.metadata == {"lang": "en", "n": 1, "flag": False, "none": None}
        assert s.get_document("nope") is None
        st = s.stats()
        assert (st["documents"], st["chunks"], st["index"]) == (6, 18, "exact")
        # vector search: exact inner product, same order and scores as numpy
        q = unit(rng, 1, DIM)[0]
        mat = np.concatenate([i[3] for i in items])
        want = np.sort(mat @ q)[::-1][:5]
        hits = s.search_vector(q, k=5)
        assert np.allclose([h.score for h in hits], want, atol=1e-5)
        assert all(h.vector_score == h.score for h in hits)
        ids = [h.chunk_id for h in hits]
        got = s.get_chunks([*reversed(ids), 10**9])
        assert [h.chunk_id for h in got] == list(reversed(ids))
        assert s.remove_document("dir1/doc1.md") is True
        assert s.remove_document("dir1/doc1.md") is False
        assert s.stats()["chunks"] == 15


def test_replace_is_whole_document_and_last_wins(pg_url: str) -> None:
    rng = np.random.default_rng(2)
    with PostgresStore.open(pg_url, dimension=DIM, model_id="m") as s:
        s.replace_document("a", "h1", make_chunks(["x1", "x2", "x3"]), unit(rng, 3, DIM))
        s.replace_document("a", "h2", make_chunks(["y1"]), unit(rng, 1, DIM), metadata={"v": 2})
        hits = s.search_keyword("x1 x2 x3 y1", k=10)
        assert [(h.text, h.metadata) for h in hits] == [("y1", {"v": 2})]
        # the same source twice in one batch: the last one is kept
        s.replace_documents(
            [
                ("b", "h1", make_chunks(["b1", "b2"]), unit(rng, 2, DIM), None),
                ("b", "h2", make_chunks(["b3"]), unit(rng, 1, DIM), None),
            ]
        )
        rec = s.get_document("b")
        assert rec is not None and (rec.content_hash, rec.n_chunks) == ("h2", 1)
        # a failing batch writes nothing
        with pytest.raises(ConfigError):
            s.replace_documents(
                [
                    ("c", "h", make_chunks(["c1"]), unit(rng, 1, DIM), None),
                    ("d", "h", make_chunks(["d1"]), unit(rng, 2, DIM), None),
                ]
            )
        assert s.get_document("c") is None
        # empty documents are recorded
        s.replace_document("e", "h", [], np.zeros((0, DIM), np.float32))
        rec = s.get_document("e")
        assert rec is not None and rec.n_chunks == 0


def test_filters_match_the_embedded_store(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    items = _items(rng, 12)
    items.append(("odd[1].md", "h", make_chunks(["odd"], {"n": 1.0, "s": "1"}), unit(rng, 1, DIM), None))
    emb = EmbeddedStore.open(tmp_path / "e", dimension=DIM, model_id="m")
    pg = PostgresStore.open(pg_url, dimension=DIM, model_id="m")
    try:
        emb.replace_documents(items)
        pg.replace_documents(items)
        q = unit(rng, 1, DIM)[0]
        filters: list[dict[str, object]] = [
            {},
            {"source": "dir1/*"},
            {"source": "*doc1?.md"},
            {"source": "dir[01]/*"},
            {"source": "dir[!0]/doc1*"},
            {"source": "odd[[]1].md"},
            {"lang": "en"},
            {"lang": "en", "source": "dir2/*"},
            {"n": 1},
            {"n": 1.0},
            {"s": "1"},
            {"s": 1},
            {"flag": True},
            {"flag": 1},
            {"none": None},
            {"missing": None},
            {"n": 3, "flag": True},
        ]
        for f in filters:
            want = [(h.source, h.index, round(h.score, 4)) for h in emb.search_vector(q, k=50, where=f)]
            got = [(h.source, h.index, round(h.score, 4)) for h in pg.search_vector(q, k=50, where=f)]
            assert got == want, f
            kw_want = sorted((h.source, h.index) for h in emb.search_keyword("shared odd", k=50, where=f))
            kw_got = sorted((h.source, h.index) for h in pg.search_keyword("shared odd", k=50, where=f))
            assert kw_got == kw_want, f
        with pytest.raises(ConfigError):
            pg.search_vector(q, where={"source": 3})
        with pytest.raises(ConfigError):
            pg.search_vector(q, where={"k": [1]})
        with pytest.raises(ConfigError):
            pg.search_vector(np.zeros(DIM + 1, np.float32))
    finally:
        emb.close()
        pg.close()


def test_glob_regex_agrees_with_fnmatch_in_postgres(pg_server: str) -> None:
    """Random globs over an alphabet of special characters: PostgreSQL's regex match of the
    translated pattern equals fnmatch.fnmatchcase on every pair."""
    import psycopg

    rnd = random.Random(7)
    alphabet = "ab.*?[]!^-\\/ $()+{}|&~:="
    names, rxs, want, pats = [], [], [], []
    for _ in range(3000):
        pat = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 7)))
        rx = _glob_regex(pat)
        for _ in range(4):
            name = "".join(rnd.choice("ab./[]!^-\\ $&:=") for _ in range(rnd.randint(0, 6)))
            names.append(name)
            rxs.append(rx)
            pats.append(pat)
            want.append(fnmatch.fnmatchcase(name, pat))
    with psycopg.connect(pg_server) as conn:
        got = [
            r[0]
            for r in conn.execute(
                "SELECT n ~ r FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(n, r, o) ORDER BY o",
                (names, rxs),
            ).fetchall()
        ]
    bad = [(p, n, r) for p, n, r, g, w in zip(pats, names, rxs, got, want, strict=True) if g != w]
    assert not bad, bad[:5]
    assert sum(want) > 100  # the sample holds matches, not only misses


def test_keyword_context_hybrid_and_odd_queries(pg_url: str) -> None:
    rng = np.random.default_rng(4)
    with PostgresStore.open(pg_url, dimension=DIM, model_id="m") as s:
        chunks = [
            Chunk("alpha beta", 0, 10, 0, context="Guide > Install"),
            Chunk("gamma delta", 11, 22, 1),
            Chunk("nul\x00byte", 23, 31, 2),
        ]
        vecs = unit(rng, 3, DIM)
        s.replace_document("g.md", "h", chunks, vecs)
        hits = s.search_keyword("install", k=5)
        assert [(h.text, h.context) for h in hits] == [("alpha beta", "Guide > Install")]
        assert hits[0].keyword_score == hits[0].score > 0
        for odd in ["", "   ", "'\"&|!():*<->", "a' | 'b", "\\", "DROP TABLE x;--"]:
            assert isinstance(s.search_keyword(odd, k=5), list)
        assert s.search_keyword("nul", k=5)[0].text == "nul\ufffdbyte"  # same length: offsets hold
        # hybrid = the shared fusion (store.fusion.fuse) of the store's own two lists
        h = s.search_hybrid("gamma alpha", vecs[0], k=3, candidates=10)
        vec = [(x.chunk_id, x.score) for x in s.search_vector(vecs[0], k=10)]
        kw = [(x.chunk_id, x.score) for x in s.search_keyword("gamma alpha", k=10)]
        want = fuse(vec, kw, 3)
        assert [(x.chunk_id, x.score, x.vector_score, x.keyword_score) for x in h] == [
            (f.id, f.score, f.vector_score, f.keyword_score) for f in want
        ]
        assert len(kw) == 2 and len(vec) == 3
        # vectors are found again by the key of their embedded text
        keys = [text_key(embed_text(c)) for c in chunks] + [b"x" * 16]
        found = s.vectors_by_key(keys)
        assert set(found) == set(keys[:3])
        assert np.array_equal(found[keys[0]], vecs[0])


def test_config_model_check_missing_and_isolated_indexes(pg_server: str) -> None:
    a_url, b_url = index_url(pg_server, "iso_a"), index_url(pg_server, "iso_b")
    with pytest.raises(StoreError):
        PostgresStore.open(index_url(pg_server, "never_made"), dimension=4, model_id="m", create=False)
    a = PostgresStore.open(a_url, dimension=4, model_id="m")
    b = PostgresStore.open(b_url, dimension=8, model_id="other")
    try:
        assert a.load_config() is None
        a.save_config({"embedder": "minilm", "n": [1, 2]})
        a.save_config({"embedder": "wordllama"})
        assert a.load_config() == {"embedder": "wordllama"}
        a.replace_document("x", "h", make_chunks(["only in a"]), np.eye(4, dtype=np.float32)[:1])
        assert b.documents() == [] and b.load_config() is None
        with pytest.raises(ConfigError):
            PostgresStore.open(a_url, dimension=4, model_id="another")
        with pytest.raises(ConfigError):
            PostgresStore.open(a_url, dimension=5, model_id="m")
        with pytest.raises(ConfigError):
            PostgresStore.open(index_url(pg_server, "bad-name"), dimension=4, model_id="m")
    finally:
        a.close()
        b.close()


def test_password_never_shown(pg_server: str) -> None:
    # the test server trusts local connections, so any password is accepted
    url = index_url(pg_server.replace("postgres:@", "postgres:s3cretpw@"), "pw")
    with PostgresStore.open(url, dimension=4, model_id="m") as s:
        assert "s3cretpw" not in repr(s)
        assert "s3cretpw" not in str(s.stats())
    assert "s3cretpw" not in _safe_url("postgresql://u:s3cretpw@h:5/db?index=x")
    with pytest.raises(StoreError) as e:
        PostgresStore.open(
            "postgresql://u:s3cretpw@/db?host=/nonexistent-dir-xyz", dimension=4, model_id="m"
        )
    assert "s3cretpw" not in str(e.value)


def test_hnsw_built_in_background_and_searched(pg_server: str) -> None:
    rng = np.random.default_rng(5)
    url = index_url(pg_server, "hnsw_t")
    n = 3000
    mat = unit(rng, n, DIM)
    s = PostgresStore.open(url, dimension=DIM, model_id="m", ann_threshold=2000)
    try:
        for start in range(0, n, 500):
            s.replace_documents(
                [
                    (f"d{i}", "h", make_chunks([f"text {i}"], {"even": i % 2 == 0, "i": i}), mat[i : i + 1], None)
                    for i in range(start, start + 500)
                ]
            )
        assert s.wait_for_index(timeout=120)
        assert s.stats()["index"] == "pgvector-hnsw"
        recall = []
        for q in unit(rng, 20, DIM):
            exact = set(np.argsort(-(mat @ q))[:10].tolist())
            got = s.search_vector(q, k=10)
            assert len(got) == 10
            assert np.allclose([h.score for h in got], [float(mat[int(h.source[1:])] @ q) for h in got], atol=1e-5)
            recall.append(len(exact & {int(h.source[1:]) for h in got}) / 10)
        assert np.mean(recall) > 0.9
        # a selective filter still fills k (iterative scan, else exact fallback)
        q = unit(rng, 1, DIM)[0]
        got = s.search_vector(q, k=5, where={"i": 17})
        assert [h.source for h in got] == ["d17"]
        got = s.search_vector(q, k=10, where={"even": True})
        assert len(got) == 10 and all(int(h.source[1:]) % 2 == 0 for h in got)
    finally:
        s.close()
    # another opener sees the index at once
    with PostgresStore.open(url, dimension=DIM, model_id="m") as again:
        assert again.index_kind == "pgvector-hnsw"
    # ann=False: exact results although the index exists
    with PostgresStore.open(url, dimension=DIM, model_id="m", ann=False) as exact_store:
        assert exact_store.index_kind == "exact"
        for q in unit(rng, 5, DIM):
            want_ids = np.argsort(-(mat @ q), kind="stable")[:10].tolist()
            got_ids = [int(h.source[1:]) for h in exact_store.search_vector(q, k=10)]
            assert got_ids == want_ids


def test_halfvec_index_above_2000_dims(pg_server: str) -> None:
    rng = np.random.default_rng(6)
    dim = 2100
    mat = unit(rng, 60, dim)
    with PostgresStore.open(index_url(pg_server, "half_t"), dimension=dim, model_id="m", ann_threshold=50) as s:
        s.replace_documents([(f"d{i}", "h", make_chunks([f"t{i}"]), mat[i : i + 1], None) for i in range(60)])
        assert s.wait_for_index(timeout=60)
        st = s.stats()
        assert (st["index"], st["ann_type"]) == ("pgvector-hnsw", "halfvec")
        got = s.search_vector(mat[7], k=3)
        assert got[0].source == "d7" and got[0].score == pytest.approx(1.0, abs=1e-5)


def test_forked_child_uses_its_own_connections(pg_url: str) -> None:
    s = PostgresStore.open(pg_url, dimension=4, model_id="m")
    try:
        s.replace_document("p", "h", make_chunks(["parent"]), np.eye(4, dtype=np.float32)[:1])
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                s.replace_document("c", "h", make_chunks(["child"]), np.eye(4, dtype=np.float32)[1:2])
                code = 0 if len(s.documents()) == 2 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert [d.source for d in s.documents()] == ["c", "p"]  # the parent's pool still works
    finally:
        s.close()


def test_pgserver_start_status_stop() -> None:
    with pg_tmpdir() as base:
        _start_status_stop(base / "pgd")


def _start_status_stop(data: Path) -> None:
    assert pgs.status(data) is None
    url = pgs.start(data)
    try:
        assert pgs.status(data) == url
        assert pgs.start(data) == url  # already running: same URL
        with PostgresStore.open(index_url(url, "x"), dimension=4, model_id="m") as s:
            assert s.documents() == []
    finally:
        assert pgs.stop(data) is True
    assert pgs.status(data) is None
    assert pgs.stop(data) is False


WRITER = r"""
import sys
import numpy as np
from parallelrag.documents import Chunk
from parallelrag.store.postgres import PostgresStore
url, wid, n_docs, n_shared, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rng = np.random.default_rng(wid)
s = PostgresStore.open(url, dimension=8, model_id="m", pool_size=2)
def item(src, version, n):
    chunks = [Chunk(f"{src} w{wid} v{version} c{i} common", 0, 1, i, {"w": wid, "v": version}) for i in range(n)]
    v = np.zeros((n, 8), np.float32); v[:, 0] = 1.0
    return (src, f"w{wid}v{version}", chunks, v, {"w": wid, "v": version, "n": n})
batch = []
for d in range(n_docs):
    batch.append(item(f"w{wid}/d{d}", 0, 1 + d % 4))
    if len(batch) == 10:
        s.replace_documents(batch); batch = []
if batch:
    s.replace_documents(batch)
for r in range(rounds):   # every writer rewrites the shared documents, in random order
    order = rng.permutation(n_shared)
    s.replace_documents([item(f"shared/d{int(d)}", r * 10 + wid, 1 + (r + wid + int(d)) % 5) for d in order[:5]])
    s.replace_document(*item(f"shared/d{int(order[-1])}", r * 10 + wid, 2)[:4], metadata={"w": wid, "v": r * 10 + wid, "n": 2})
s.close()
print("ok")
"""


def _check_whole(hits: list) -> None:  # type: ignore[type-arg]
    by: dict[str, list] = {}  # type: ignore[type-arg]
    for h in hits:
        by.setdefault(h.source, []).append(h)
    for src, hs in by.items():
        versions = {(h.metadata["w"], h.metadata["v"]) for h in hs}
        assert len(versions) == 1, f"{src} mixes {versions}"
        assert sorted(h.index for h in hs) == list(range(len(hs))), f"{src} has gaps"


def test_four_writer_processes_and_readers_never_see_half_a_document(pg_server: str) -> None:
    import threading

    url = index_url(pg_server, "writers")
    n_docs, n_shared, rounds = 60, 8, 12
    with PostgresStore.open(url, dimension=8, model_id="m") as s:
        q = np.zeros(8, np.float32)
        q[0] = 1.0
        stop = threading.Event()
        errors: list[BaseException] = []
        reads = [0]

        def reader(kind: str) -> None:
            try:
                while not stop.is_set():
                    if kind == "vector":
                        hits = s.search_vector(q, k=10_000)
                    elif kind == "keyword":
                        hits = s.search_keyword("common", k=10_000)
                    else:
                        hits = s.search_hybrid("common", q, k=10_000, candidates=10_000)
                    _check_whole(hits)
                    reads[0] += 1
            except BaseException as e:
                errors.append(e)

        readers = [threading.Thread(target=reader, args=(k,)) for k in ("vector", "keyword", "hybrid")]
        for t in readers:
            t.start()
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, url, str(w), str(n_docs), str(n_shared), str(rounds)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for w in range(4)
        ]
        outs = [p.communicate(timeout=240) for p in procs]
        stop.set()
        for t in readers:
            t.join(timeout=60)
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0 and out.strip() == "ok", err[-2000:]
        if errors:
            raise errors[0]
        assert reads[0] > 3
        docs = {d.source: d for d in s.documents()}
        own = [f"w{w}/d{d}" for w in range(4) for d in range(n_docs)]
        assert set(docs) == set(own) | {f"shared/d{d}" for d in range(n_shared)}  # none lost
        all_hits = s.search_vector(q, k=100_000)
        _check_whole(all_hits)
        assert len(all_hits) == sum(d.n_chunks for d in docs.values())  # none duplicated
        assert s.stats()["chunks"] == len(all_hits)
        for h in all_hits:  # every document's chunks are the version its record names
            rec = docs[h.source]
            assert rec.content_hash == f"w{h.metadata['w']}v{h.metadata['v']}"
        keys = {(h.source, h.index) for h in all_hits}
        assert len(keys) == len(all_hits)


def test_build_memory_and_ef_search_options(pg_server: str) -> None:
    url = index_url(pg_server, "mem_t")
    for bad in ("lots", "0GB", "2 GB", "-1MB", "3gb"):
        with pytest.raises(ConfigError, match="build_memory"):
            PostgresStore.open(url, dimension=DIM, model_id="m", build_memory=bad)
        with pytest.raises(ConfigError, match="build_memory"):
            PostgresStore.open(f"{url}&build_memory={bad.replace(' ', '%20')}", dimension=DIM, model_id="m")
    rng = np.random.default_rng(9)
    mat = unit(rng, 300, DIM)
    for bad_ef in ("0", "1001", "many"):
        with pytest.raises(ConfigError, match="ef_search"):
            PostgresStore.open(f"{url}&ef_search={bad_ef}", dimension=DIM, model_id="m")
    with PostgresStore.open(f"{url}&build_memory=96MB&ef_search=300", dimension=DIM, model_id="m",
                            ann_threshold=10**9) as s:
        assert s._build_memory == "96MB" and s._ef_search == 300
        s.replace_documents([(f"d{i}", "h", make_chunks([f"t{i}"]), mat[i : i + 1], None) for i in range(300)])
        assert s.build_index(timeout=120)
        assert s.stats()["index"] == "pgvector-hnsw"
        assert s.search_vector(mat[3], k=1)[0].source == "d3"
