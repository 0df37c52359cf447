"""The store contract: plain test functions that every :class:`~parallelrag.store.VectorStore`
passes (see :mod:`parallelrag.store.base` for what the contract says).

A store's test module imports them and defines one fixture::

    from .contract import *  # noqa: F403

    @pytest.fixture
    def store_factory() -> StoreFactory:
        def make(tmp_path: Path, dimension: int, model_id: str) -> VectorStore: ...
        return make

``make(tmp_path, dimension, model_id)`` opens (creating when needed) the store that belongs to
``tmp_path``: calling it again with the same ``tmp_path`` reopens the same store (the reopen
tests rely on that), another ``tmp_path`` gives an empty one. The tests close what they open.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from parallelrag.documents import Chunk
from parallelrag.errors import ConfigError, ParallelRagError
from parallelrag.store import Hit, VectorStore
from parallelrag.store.base import embed_text, text_key

__all__ = [
    "StoreFactory",
    "test_contract_concurrent_readers_see_whole_documents_while_one_writes",
    "test_contract_config_round_trip_and_reopen",
    "test_contract_context_is_kept_and_keyword_indexed",
    "test_contract_document_scores_are_centroid_cosines",
    "test_contract_failed_batch_writes_nothing",
    "test_contract_hybrid_search_fuses_both_lists",
    "test_contract_is_a_vector_store",
    "test_contract_keyword_search_ranks_by_bm25",
    "test_contract_metadata_filters",
    "test_contract_remove_document",
    "test_contract_reopen_sees_committed_data_only",
    "test_contract_replace_and_read_documents",
    "test_contract_upsert_replaces_every_chunk",
    "test_contract_vector_search_orders_by_cosine",
    "test_contract_vectors_by_key",
    "test_contract_wrong_model_or_dimension_is_a_config_error",
]

StoreFactory = Callable[[Path, int, str], VectorStore]
DIM = 8
MODEL = "contract:model"
F32 = npt.NDArray[np.float32]


def _axis(i: int, dim: int = DIM) -> F32:
    v = np.zeros(dim, dtype=np.float32)
    v[i % dim] = 1.0
    return v


def _chunks(texts: list[str], context: str = "",
            metadata: dict[str, object] | None = None) -> list[Chunk]:
    out, pos = [], 0
    for i, t in enumerate(texts):
        out.append(Chunk(t, pos, pos + len(t), i, dict(metadata or {}), context=context))
        pos += len(t) + 1
    return out


def _item(source: str, texts: list[str], axes: list[int], *, version: str = "v1",
          meta: dict[str, object] | None = None, context: str = "") -> tuple[
              str, str, list[Chunk], F32, dict[str, object] | None]:
    vecs = np.stack([_axis(a) for a in axes]) if axes else np.zeros((0, DIM), np.float32)
    return (source, version, _chunks(texts, context), vecs, meta)


def test_contract_is_a_vector_store(tmp_path: Path, store_factory: StoreFactory) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    try:
        assert isinstance(store, VectorStore)
        assert store.dimension == DIM and store.model_id == MODEL
        assert store.documents() == [] and store.get_document("nope") is None
        assert store.stats()["documents"] == 0 and store.stats()["chunks"] == 0
    finally:
        store.close()


def test_contract_replace_and_read_documents(tmp_path: Path, store_factory: StoreFactory) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    try:
        store.replace_documents([
            _item("a.md", ["alpha one", "alpha two"], [0, 1], meta={"lang": "en"}),
            _item("b.md", ["beta"], [2], meta={"lang": "de"}),
        ])
        store.replace_document("c.md", "h-c", _chunks(["gamma"]), _axis(3)[None, :])
        rec = store.get_document("a.md")
        assert rec is not None and rec.content_hash == "v1" and rec.n_chunks == 2
        assert rec.metadata == {"lang": "en"}
        assert sorted(d.source for d in store.documents()) == ["a.md", "b.md", "c.md"]
        s = store.stats()
        assert s["documents"] == 3 and s["chunks"] == 4
        hits = store.search_vector(_axis(1), k=1)
        assert [(h.source, h.text, h.index, h.start, h.end) for h in hits] == [
            ("a.md", "alpha two", 1, 10, 19)]
        assert hits[0].metadata["lang"] == "en"
        got = store.get_chunks([hits[0].chunk_id])
        assert [h.text for h in got] == ["alpha two"]
    finally:
        store.close()


def test_contract_upsert_replaces_every_chunk(tmp_path: Path,
                                              store_factory: StoreFactory) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    try:
        store.replace_documents([_item("a.md", ["old one", "old two", "old three"], [0, 1, 2])])
        store.replace_documents([_item("a.md", ["new"], [3], version="v2")])
        rec = store.get_document("a.md")
        assert rec is not None and rec.content_hash == "v2" and rec.n_chunks == 1
        assert store.stats()["chunks"] == 1
        assert [h.text for h in store.search_vector(_axis(0), k=10)] == ["new"]
        assert store.search_keyword("old", k=10) == []
    finally:
        store.close()


def test_contract_remove_document(tmp_path: Path, store_factory: StoreFactory) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    try:
        store.replace_documents([_item("a.md", ["apple pie"], [0]),
                                 _item("b.md", ["banana bread"], [1])])
        assert store.remove_document("a.md") is True
        assert store.remove_document("a.md") is False
        assert store.get_document("a.md") is None
        assert {h.source for h in store.search_vector(_axis(0), k=10)} == {"b.md"}
        assert store.search_keyword("apple", k=5) == []
    finally:
        store.close()


def test_contract_metadata_filters(tmp_path: Path, store_factory: StoreFactory) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    try:
        store.replace_documents([
            _item("docs/en/a.md", ["shared word alpha"], [0],
                  meta={"lang": "en", "year": 2024, "draft": False}),
            _item("docs/de/b.md", ["shared word beta"], [0],
                  meta={"lang": "de", "year": 2023, "draft": True}),
            _item("notes/c.txt", ["shared word gamma"], [0], meta={"lang": "en", "year": 2023}),
        ])
        q = _axis(0)

        def sources(where: dict[str, object]) -> set[str]:
            v = {h.source for h in store.search_vector(q, k=10, where=where)}
            kw = {h.source for h in store.search_keyword("shared", k=10, where=where)}
            hy = {h.source for h in store.search_hybrid("shared", q, k=10, where=where)}
            assert v == kw == hy, (where, v, kw, hy)
            return v

        assert sources({"lang": "en"}) == {"docs/en/a.md", "notes/c.txt"}
        assert sources({"year": 2023}) == {"docs/de/b.md", "notes/c.txt"}
        assert sources({"draft": True}) == {"docs/de/b.md"}
        assert sources({"draft": False}) == {"docs/en/a.md"}
        assert sources({"source": "docs/*"}) == {"docs/en/a.md", "docs/de/b.md"}
        assert sources({"lang": "en", "year": 2023}) == {"notes/c.txt"}
        assert sources({"lang": "fr"}) == set()
    finally:
        store.close()


def test_contract_vector_search_orders_by_cosine(tmp_path: Path,
                                                 store_factory: StoreFactory) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    try:
        near = np.array([1.0, 0.2] + [0.0] * (DIM - 2), dtype=np.float32)
        far = np.array([0.2, 1.0] + [0.0] * (DIM - 2), dtype=np.float32)
        vecs = np.stack([_axis(0), near / np.linalg.norm(near), far / np.linalg.norm(far)])
        store.replace_documents([("a", "h", _chunks(["exact", "near", "far"]), vecs, None)])
        hits = store.search_vector(_axis(0), k=3)
        assert [h.text for h in hits] == ["exact", "near", "far"]
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert hits[0].score >= hits[1].score >= hits[2].score
        assert hits[0].vector_score == hits[0].score
        assert store.search_vector(_axis(0), k=0) == []
        with pytest.raises(ConfigError):
            store.search_vector(np.ones(DIM + 1, dtype=np.float32), k=1)
    finally:
        store.close()


def test_contract_document_scores_are_centroid_cosines(tmp_path: Path,
                                                       store_factory: StoreFactory) -> None:
    """``document_scores`` (optional in the contract; both project stores have it): the query's
    cosine with the normalised mean of each document's chunk vectors."""
    store = store_factory(tmp_path, DIM, MODEL)
    try:
        scorer = getattr(store, "document_scores", None)
        if scorer is None:
            pytest.skip("this store does not rank documents as a whole")
        store.replace_documents([_item("a", ["x", "y"], [0, 1]), _item("b", ["z"], [2]),
                                 _item("c", ["w", "v", "u"], [0, 0, 3])])
        q = np.array([1.0, 1.0, 0.0] + [0.0] * (DIM - 3), dtype=np.float32)
        got = scorer(q, ["a", "b", "c", "a", "missing"])
        assert set(got) == {"a", "b", "c"}

        def want(axes: list[int]) -> float:
            m = np.mean([_axis(i) for i in axes], axis=0)
            return float(m @ q / (np.linalg.norm(m) * np.linalg.norm(q)))

        assert got["a"] == pytest.approx(want([0, 1]), abs=1e-4)
        assert got["b"] == pytest.approx(0.0, abs=1e-4)
        assert got["c"] == pytest.approx(want([0, 0, 3]), abs=1e-4)
        assert scorer(q, []) == {}
        # a new version of a document is scored on its new vectors (no stale cached centroid)
        store.replace_documents([_item("b", ["z2"], [1], version="v2")])
        assert scorer(q, ["b"])["b"] == pytest.approx(want([1]), abs=1e-4)
        store.remove_document("c")
        assert set(scorer(q, ["a", "b", "c"])) == {"a", "b"}
        with pytest.raises(ConfigError):
            scorer(np.ones(DIM + 1, dtype=np.float32), ["a"])
    finally:
        store.close()


def test_contract_keyword_search_ranks_by_bm25(tmp_path: Path,
                                               store_factory: StoreFactory) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    try:
        store.replace_documents([_item("a", [
            "the pelican pelican pelican flies", "a pelican", "nothing to see here",
            "quote \" and (parens) AND OR NOT * are safe"], [0, 1, 2, 3])])
        hits = store.search_keyword("pelican", k=5)
        assert [h.text for h in hits] == ["the pelican pelican pelican flies", "a pelican"]
        assert hits[0].score > hits[1].score > 0 and hits[0].keyword_score == hits[0].score
        assert store.search_keyword('"(AND* NOT', k=5) is not None  # any string is safe
        assert store.search_keyword("", k=5) == []
    finally:
        store.close()


def test_contract_hybrid_search_fuses_both_lists(tmp_path: Path,
                                                 store_factory: StoreFactory) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    try:
        store.replace_documents([_item("a", ["vector match only", "keyword zebra only",
                                             "both zebra and vector", "neither"],
                                       [0, 5, 0, 6])])
        hits = store.search_hybrid("zebra", _axis(0), k=2, candidates=2)
        texts = [h.text for h in hits]
        assert texts[0] == "both zebra and vector"  # in both lists: ranked first
        assert texts[1] in {"vector match only", "keyword zebra only"}
        top = hits[0]
        assert top.vector_score is not None and top.keyword_score is not None
        # score-based fusion may tie here (both vector scores are equal, and the bottom of the
        # keyword list scores as being absent from it); the tie goes to the id in both lists
        assert top.score >= hits[1].score
    finally:
        store.close()


def test_contract_context_is_kept_and_keyword_indexed(tmp_path: Path,
                                                      store_factory: StoreFactory) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    try:
        store.replace_documents([_item("dict.html", ["Return a new view of the keys."], [0],
                                       context="Built-in Types > dict")])
        hits = store.search_keyword("dict", k=3)
        assert [h.text for h in hits] == ["Return a new view of the keys."]
        assert hits[0].context == "Built-in Types > dict"
        assert store.search_vector(_axis(0), k=1)[0].context == "Built-in Types > dict"
    finally:
        store.close()


def test_contract_vectors_by_key(tmp_path: Path, store_factory: StoreFactory) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    try:
        item = _item("a", ["one", "two"], [1, 2], context="Title")
        store.replace_documents([item])
        keys = [text_key(embed_text(c)) for c in item[2]]
        got = store.vectors_by_key([*keys, text_key("never stored")])
        assert set(got) == set(keys)
        np.testing.assert_allclose(got[keys[0]], _axis(1))
        np.testing.assert_allclose(got[keys[1]], _axis(2))
        assert store.vectors_by_key([]) == {}
        # the key is of the embedded text (context included), not the bare chunk text
        assert store.vectors_by_key([text_key("one")]) == {}
    finally:
        store.close()


def test_contract_config_round_trip_and_reopen(tmp_path: Path,
                                               store_factory: StoreFactory) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    try:
        assert store.load_config() is None
        cfg = {"embedder": "openai://m?batch_size=16", "splitter": {"chunk_size": 500,
                                                                   "separators": ["\n\n", " "]}}
        store.save_config(cfg)
        assert store.load_config() == cfg
        store.save_config({**cfg, "version": 2})
        assert store.load_config() == {**cfg, "version": 2}
    finally:
        store.close()
    again = store_factory(tmp_path, DIM, MODEL)
    try:
        assert again.load_config() == {**cfg, "version": 2}
    finally:
        again.close()


def test_contract_failed_batch_writes_nothing(tmp_path: Path,
                                              store_factory: StoreFactory) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    try:
        store.replace_documents([_item("keep", ["original"], [0])])
        bad = ("broken", "v1", _chunks(["x", "y"]), np.stack([_axis(0)]), None)  # 2 chunks, 1 vec
        with pytest.raises((ConfigError, ParallelRagError, ValueError)):
            store.replace_documents([_item("keep", ["replacement"], [1], version="v2"),
                                     _item("other", ["other"], [2]), bad])
        rec = store.get_document("keep")
        assert rec is not None and rec.content_hash == "v1"
        assert store.get_document("other") is None
        assert [h.text for h in store.search_vector(_axis(0), k=5)] == ["original"]
    finally:
        store.close()


def test_contract_reopen_sees_committed_data_only(tmp_path: Path,
                                                  store_factory: StoreFactory) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    store.replace_documents([_item("a", ["committed alpha"], [0], meta={"n": 1})])
    with pytest.raises((ConfigError, ParallelRagError, ValueError)):
        store.replace_documents([_item("b", ["never committed"], [1]),
                                 ("c", "v", _chunks(["z"]), np.full((1, DIM), np.nan,
                                                                    dtype=np.float32), None)])
    store.close()  # closed right after a failed write: nothing of it may be visible
    again = store_factory(tmp_path, DIM, MODEL)
    try:
        assert [d.source for d in again.documents()] == ["a"]
        hits = again.search_hybrid("alpha", _axis(0), k=5)
        assert [(h.source, h.text, h.metadata.get("n")) for h in hits] == [
            ("a", "committed alpha", 1)]
        assert again.search_keyword("committed", k=5)[0].source == "a"
        again.replace_documents([_item("d", ["after reopen"], [2])])
        assert {d.source for d in again.documents()} == {"a", "d"}
    finally:
        again.close()


def test_contract_wrong_model_or_dimension_is_a_config_error(
    tmp_path: Path, store_factory: StoreFactory
) -> None:
    store = store_factory(tmp_path, DIM, MODEL)
    store.replace_documents([_item("a", ["x"], [0])])
    store.close()
    with pytest.raises(ConfigError):
        store_factory(tmp_path, DIM, "another:model").close()
    with pytest.raises(ConfigError):
        store_factory(tmp_path, DIM * 2, MODEL).close()


def test_contract_concurrent_readers_see_whole_documents_while_one_writes(
    tmp_path: Path, store_factory: StoreFactory
) -> None:
    n_docs, rounds = 6, 25
    store = store_factory(tmp_path, DIM, MODEL)

    def version(doc: int, v: int) -> tuple[str, str, list[Chunk], F32, dict[str, object]]:
        n = 1 + (v + doc) % 5
        vecs = np.tile(_axis(0), (n, 1))  # all equally near: a large-k search sees everything
        return (f"doc{doc}", f"v{v}", _chunks([f"common v{v} part {i}" for i in range(n)]),
                vecs, {"version": v})

    store.replace_documents([version(d, 0) for d in range(n_docs)])
    errors: list[BaseException] = []
    stop = threading.Event()
    checks = [0]

    def check(hits: list[Hit]) -> None:
        by_doc: dict[str, set[object]] = defaultdict(set)
        counts: dict[str, int] = defaultdict(int)
        for h in hits:
            by_doc[h.source].add(h.metadata["version"])
            counts[h.source] += 1
        for src, versions in by_doc.items():
            assert len(versions) == 1, f"{src} mixes versions {versions}"
            v = next(iter(versions))
            assert isinstance(v, int)
            assert counts[src] == 1 + (v + int(src[3:])) % 5, f"{src} v{v} is partial"

    def reader() -> None:
        try:
            while not stop.is_set():
                check(store.search_vector(_axis(0), k=200))
                check(store.search_keyword("common", k=200))
                checks[0] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for v in range(1, rounds + 1):
            store.replace_documents([version(d, v) for d in range(n_docs) if (d + v) % 2 == 0])
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    try:
        assert not errors, errors[0]
        assert checks[0] > 0
        check(store.search_vector(_axis(0), k=200))
        assert len(store.documents()) == n_docs
    finally:
        store.close()
