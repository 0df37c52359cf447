"""Document-aware ranking (parallelrag.pipeline.grouping) and Index.search(rank_by=...)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from parallelrag import EmbeddingClient
from parallelrag.errors import ConfigError
from parallelrag.pipeline import Index
from parallelrag.pipeline.grouping import DocumentRanking, rank_by_document
from parallelrag.splitters import RecursiveSplitter
from parallelrag.store.base import Hit


def hit(cid: int, source: str, score: float) -> Hit:
    return Hit(cid, f"text {cid}", score, source, 0, 0, 0)


def test_one_document_keeps_the_store_order() -> None:
    hits = [hit(i, "a", 1.0 - i / 10) for i in range(8)]
    assert rank_by_document(hits, 5) == hits[:5]
    assert rank_by_document(hits, 0) == []
    assert rank_by_document([], 5) == []


def test_repeats_of_one_document_are_pushed_down() -> None:
    # document a fills the store's top 4 with near-equal scores; b's best is close behind
    hits = [hit(1, "a", 0.90), hit(2, "a", 0.89), hit(3, "a", 0.88), hit(4, "a", 0.87),
            hit(5, "b", 0.86), hit(6, "c", 0.50), hit(7, "d", 0.40)]
    top = rank_by_document(hits, 4)
    assert [h.chunk_id for h in top[:2]] == [1, 5]
    assert {h.source for h in top} >= {"a", "b"}
    # each hit is the store's own object, score unchanged
    assert all(h in hits for h in top)


def test_a_much_better_second_passage_stays_ahead_of_a_weak_document() -> None:
    hits = [hit(1, "a", 0.95), hit(2, "a", 0.94), hit(3, "b", 0.20), hit(4, "c", 0.19),
            hit(5, "d", 0.18), hit(6, "e", 0.17)]
    assert [h.chunk_id for h in rank_by_document(hits, 3)] == [1, 2, 3]


def test_support_from_other_chunks_lifts_a_document() -> None:
    # x has one stray chunk slightly above y's best; y has four more matching chunks
    hits = [hit(1, "x", 0.80), hit(2, "y", 0.79), hit(3, "y", 0.75), hit(4, "y", 0.74),
            hit(5, "y", 0.73), hit(6, "y", 0.72)] + [hit(10 + i, f"z{i}", 0.1) for i in range(10)]
    assert rank_by_document(hits, 1)[0].chunk_id == 2
    # without support the stray chunk wins
    no_support = DocumentRanking(support_weight=0.0)
    assert rank_by_document(hits, 1, no_support)[0].chunk_id == 1


VOCAB = 64


def bag_of_words(texts: list[str]) -> np.ndarray:
    """A deterministic embedder: hashed word counts, L2-normalised."""
    out = np.zeros((len(texts), VOCAB), np.float32)
    for r, t in enumerate(texts):
        for w in re.findall(r"\w+", t.lower()):
            out[r, int(hashlib.md5(w.encode()).hexdigest(), 16) % VOCAB] += 1.0
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
    return out


def make_index(tmp_path: Path) -> Index:
    emb = EmbeddingClient.from_function(bag_of_words, dim=VOCAB, name="bow")
    return Index.open(tmp_path / "ix", embedder=emb, splitter=RecursiveSplitter(60, 0))


def test_index_search_ranks_by_document_by_default(tmp_path: Path) -> None:
    long_doc = "\n\n".join(f"Kettle descaling guide part {i}: kettle descaling with vinegar."
                           for i in range(12))
    other = "Descaling a coffee kettle uses citric acid instead of vinegar."
    filler = [(f"Notes on gardening topic {i}: tomatoes need sun and water.", {"id": f"f{i}"})
              for i in range(6)]
    with make_index(tmp_path) as index:
        index.ingest([(long_doc, {"id": "long"}), (other, {"id": "other"}), *filler])
        q = "kettle descaling vinegar"
        for mode in ("vector", "keyword", "hybrid"):
            by_chunk = index.search(q, k=4, mode=mode, rank_by="chunk")
            by_doc = index.search(q, k=4, mode=mode)
            assert {h.source for h in by_chunk} == {"long"}, mode  # one page fills the top 4
            assert len(by_doc) == 4
            assert by_doc[0].source == "long"
            assert "other" in {h.source for h in by_doc}, mode
        # "chunk" is the store's own order
        store_order = index.store.search_keyword(q, 4)
        assert [h.chunk_id for h in index.search(q, k=4, mode="keyword", rank_by="chunk")] == \
            [h.chunk_id for h in store_order]
        # the index-wide setting applies to search and answer alike
        index.rank_by = "chunk"
        assert {h.source for h in index.search(q, k=4)} == {"long"}
        assert {h.source for h in index.answer(q, k=4).hits} == {"long"}
        index.rank_by = "document"
        assert "other" in {h.source for h in index.answer(q, k=4).hits}
        with pytest.raises(ConfigError):
            index.search(q, rank_by="page")


def test_one_document_index_returns_k_chunks(tmp_path: Path) -> None:
    text = "\n\n".join(f"Section {i} about river boats and their engines." for i in range(10))
    with make_index(tmp_path) as index:
        index.ingest([(text, {"id": "book"})])
        by_doc = index.search("river boat engines", k=5, mode="vector")
        by_chunk = index.search("river boat engines", k=5, mode="vector", rank_by="chunk")
        assert len(by_doc) == 5
        assert [h.chunk_id for h in by_doc] == [h.chunk_id for h in by_chunk]


def test_cli_rank_by(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from parallelrag.cli import main

    long_doc = "\n\n".join(f"Kettle descaling guide part {i}: kettle descaling with vinegar."
                           for i in range(12))
    with Index.open(tmp_path / "ix", embedder="wordllama",
                    splitter=RecursiveSplitter(60, 0)) as index:
        index.ingest([(long_doc, {"id": "long"}),
                      ("Descaling a coffee kettle uses citric acid instead of vinegar.",
                       {"id": "other"})])
    runner = CliRunner()
    base = ["search", "kettle descaling vinegar", "--index", str(tmp_path / "ix"), "--mode",
            "keyword", "-k", "3", "--json"]
    by_doc = json.loads(runner.invoke(main, base).output)
    by_chunk = json.loads(runner.invoke(main, [*base, "--rank-by", "chunk"]).output)
    assert {h["source"] for h in by_doc["hits"]} == {"long", "other"}
    assert {h["source"] for h in by_chunk["hits"]} == {"long"}
    bad = runner.invoke(main, [*base, "--rank-by", "page"])
    assert bad.exit_code == 2


def test_document_scores_lift_the_document_that_matches_as_a_whole() -> None:
    hits = [hit(1, "x", 0.80), hit(2, "y", 0.80), hit(3, "z", 0.30), hit(4, "w", 0.20)]
    assert rank_by_document(hits, 1)[0].chunk_id == 1  # a tie: the store's order
    whole = {"x": 0.2, "y": 0.6, "z": 0.1, "w": 0.1}
    assert rank_by_document(hits, 1, document_scores=whole)[0].chunk_id == 2
    off = DocumentRanking(document_weight=0.0)
    assert rank_by_document(hits, 1, off, document_scores=whole)[0].chunk_id == 1
    # documents the scorer does not know are ranked as average, never dropped
    assert len(rank_by_document(hits, 4, document_scores={"y": 0.9})) == 4
