"""Hybrid fusion (parallelrag.store.fusion): the pure function every store fuses with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from parallelrag.documents import Chunk
from parallelrag.store import EmbeddedStore
from parallelrag.store.fusion import DEFAULT_FUSION, FusionConfig, fuse


def test_rrf_scores_are_the_sum_of_reciprocal_ranks() -> None:
    vec = [(1, 0.9), (2, 0.8), (3, 0.7)]
    kw = [(3, 12.0), (4, 9.0)]
    cfg = FusionConfig("rrf", 1.0, 1.0, 60, 50)
    out = fuse(vec, kw, 10, config=cfg)
    expected = {1: 1 / 61, 2: 1 / 62, 3: 1 / 63 + 1 / 61, 4: 1 / 62}
    assert [f.id for f in out] == [3, 1, 2, 4]  # 2 and 4 tie: 2 has a vector score
    for f in out:
        assert f.score == pytest.approx(expected[f.id])
    assert (out[0].vector_score, out[0].keyword_score) == (0.7, 12.0)
    assert out[3].vector_score is None and out[3].keyword_score == 9.0


def test_weights_move_the_balance_and_k_truncates() -> None:
    vec = [(1, 0.9), (2, 0.5)]
    kw = [(2, 30.0), (1, 1.0)]
    even = fuse(vec, kw, 2, config=FusionConfig("rrf", 1.0, 1.0, 60, 50))
    assert {f.id for f in even} == {1, 2}
    kw_heavy = fuse(vec, kw, 1, config=FusionConfig("rrf", 0.2, 1.0, 60, 50))
    vec_heavy = fuse(vec, kw, 1, config=FusionConfig("rrf", 1.0, 0.2, 60, 50))
    assert [f.id for f in kw_heavy] == [2] and [f.id for f in vec_heavy] == [1]
    assert fuse(vec, kw, 0) == [] and fuse([], [], 5) == []


def test_rrf_k_argument_overrides_the_config() -> None:
    vec = [(1, 0.9)]
    rrf = FusionConfig("rrf", 1.0, 1.0, 60, 50)
    assert fuse(vec, [], 1, config=rrf)[0].score == pytest.approx(1 / 61)
    assert fuse(vec, [], 1, rrf_k=10, config=rrf)[0].score == pytest.approx(1 / 11)


@pytest.mark.parametrize("method", ["minmax", "zscore"])
def test_score_fusion_uses_the_scores_not_only_the_ranks(method: str) -> None:
    # vector: 1 barely ahead of 2; keyword: 2 far ahead of 1 → score fusion picks 2, RRF ties
    vec = [(1, 0.80), (2, 0.79), (3, 0.10)]
    kw = [(2, 50.0), (1, 2.0), (3, 1.0)]
    out = fuse(vec, kw, 3, config=FusionConfig(method, 0.5, 0.5, 60, 50))  # type: ignore[arg-type]
    assert out[0].id == 2
    assert out[-1].id == 3
    assert [f.score for f in out] == sorted((f.score for f in out), reverse=True)


def test_minmax_missing_from_a_list_scores_zero_from_it() -> None:
    out = fuse([(1, 0.9), (2, 0.1)], [(3, 5.0), (4, 1.0)], 4,
               config=FusionConfig("minmax", 0.5, 0.5, 60, 50))
    scores = {f.id: f.score for f in out}
    assert scores == pytest.approx({1: 0.5, 2: 0.0, 3: 0.5, 4: 0.0})


def test_default_is_a_valid_config() -> None:
    assert DEFAULT_FUSION.method in ("rrf", "minmax", "zscore")
    assert DEFAULT_FUSION.candidates >= 10
    assert DEFAULT_FUSION.vector_weight > 0 and DEFAULT_FUSION.keyword_weight > 0


def test_embedded_store_hybrid_equals_fuse_over_its_own_lists(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    texts = [" ".join(rng.choice(words, size=6)) for _ in range(60)]
    vecs = rng.standard_normal((60, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    chunks = [Chunk(t, i * 100, i * 100 + len(t), i) for i, t in enumerate(texts)]
    with EmbeddedStore.open(tmp_path / "s", dimension=16, model_id="t") as store:
        store.replace_document("doc", "h", chunks, vecs)
        q = vecs[7] + 0.5 * vecs[3]
        query = "gamma theta"
        n = DEFAULT_FUSION.candidates
        vec = [(h.chunk_id, h.score) for h in store.search_vector(q, n)]
        kw = [(h.chunk_id, h.score) for h in store.search_keyword(query, n)]
        expected = fuse(vec, kw, 10)
        got = store.search_hybrid(query, q, 10)
    assert [h.chunk_id for h in got] == [f.id for f in expected]
    assert [h.score for h in got] == pytest.approx([f.score for f in expected])


def test_zscore_presence_in_an_all_equal_list_beats_absence() -> None:
    """Two vector hits tie (z-scores all 0): the one also in the keyword list must still rank
    above an id that is only in the keyword list, however good its keyword score."""
    cfg = FusionConfig("zscore", vector_weight=0.8, keyword_weight=0.2)
    out = fuse([(1, 0.9), (2, 0.9)], [(3, 5.0), (2, 3.0)], 3, config=cfg)
    assert [f.id for f in out][:1] == [2]
    assert out[0].vector_score == 0.9 and out[0].keyword_score == 3.0
