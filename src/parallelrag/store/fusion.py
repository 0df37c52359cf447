"""Hybrid fusion: one ranked list out of a vector-search list and a keyword-search list.

A pure function over ``(id, score)`` lists, best first, so that every store (embedded SQLite,
PostgreSQL) fuses the same way and the evaluation (``benchmarks/eval_retrieval.py --tune``) can
tune it without a store. Three methods:

* ``rrf``: weighted reciprocal-rank fusion, ``Σ w / (rrf_k + rank)`` over the lists an id is in.
  Uses ranks only, so it needs no calibration between cosine similarities and BM25 scores.
* ``minmax``: convex combination of scores min-max scaled to [0, 1] within each list (an id
  missing from a list gets 0 from it).
* ``zscore``: convex combination of per-list z-scores (an id missing from a list gets that
  list's lowest z-score).

:data:`DEFAULT_FUSION` holds the settings chosen on the evaluation (docs/retrieval-eval.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_FUSION", "Fused", "FusionConfig", "fuse"]

Method = Literal["rrf", "minmax", "zscore"]


@dataclass(frozen=True, slots=True)
class Fused:
    """One fused result: the chunk id, its fused score, and its score in each list it was in."""

    id: int
    score: float
    vector_score: float | None
    keyword_score: float | None


@dataclass(frozen=True, slots=True)
class FusionConfig:
    """How to fuse: the method, each list's weight, the RRF constant and the candidate depth
    (how many hits a store takes from each list before fusing)."""

    method: Method = "rrf"
    vector_weight: float = 1.0
    keyword_weight: float = 1.0
    rrf_k: int = 60
    candidates: int = 50


#: The fusion every store uses: z-scores of the two lists weighted 0.8 (vector) to 0.2
#: (keyword) over 50 candidates each, chosen on the retrieval evaluation with 2-fold cross-
#: validation (docs/retrieval-eval.md). Equal-weight RRF let BM25's weak matches on questions
#: in a user's words push the right passage out of the top 5; this keeps keyword search's
#: lift on questions that name the API.
DEFAULT_FUSION = FusionConfig("zscore", vector_weight=0.8, keyword_weight=0.2, candidates=50)


def _minmax(scores: Sequence[float]) -> list[float]:
    lo, hi = min(scores), max(scores)
    if hi - lo <= 1e-12:
        return [1.0] * len(scores)
    return [(s - lo) / (hi - lo) for s in scores]


def _zscore(scores: Sequence[float]) -> list[float]:
    n = len(scores)
    mean = sum(scores) / n
    sd = math.sqrt(sum((s - mean) ** 2 for s in scores) / n)
    if sd <= 1e-12:
        return [0.0] * n
    return [(s - mean) / sd for s in scores]


def _missing(method: Method, normed: dict[int, float], raw: dict[int, float]) -> float:
    """The normalised score of an id absent from a list: 0 for min-max; for z-scores the list's
    lowest, and one below it when every score in the list is equal (all z-scores 0: being in
    such a list must still count for more than being absent from it)."""
    if method == "minmax" or not normed:
        return 0.0
    low = min(normed.values())
    return low - 1.0 if max(raw.values()) - min(raw.values()) <= 1e-12 else low


def fuse(
    vector: Sequence[tuple[int, float]],
    keyword: Sequence[tuple[int, float]],
    k: int,
    *,
    rrf_k: int | None = None,
    config: FusionConfig | None = None,
) -> list[Fused]:
    """The top ``k`` of ``vector`` and ``keyword`` (``(id, score)`` lists, best first) fused.

    ``config`` defaults to :data:`DEFAULT_FUSION`; ``rrf_k`` overrides its RRF constant. The
    lists are used as given (a store truncates them to ``config.candidates``). Ties go to an id
    found in both lists, then the higher vector score, then the smaller id.
    """
    cfg = config or DEFAULT_FUSION
    if k <= 0:
        return []
    vscore = {cid: s for cid, s in vector}
    kscore = {cid: s for cid, s in keyword}
    fused: dict[int, float] = {}
    wv, wk = cfg.vector_weight, cfg.keyword_weight
    if cfg.method == "rrf":
        c = cfg.rrf_k if rrf_k is None else rrf_k
        for rank, (cid, _) in enumerate(vector, 1):
            fused[cid] = fused.get(cid, 0.0) + wv / (c + rank)
        for rank, (cid, _) in enumerate(keyword, 1):
            fused[cid] = fused.get(cid, 0.0) + wk / (c + rank)
    else:
        norm = _minmax if cfg.method == "minmax" else _zscore
        vn = dict(zip(vscore, norm(list(vscore.values())), strict=True)) if vscore else {}
        kn = dict(zip(kscore, norm(list(kscore.values())), strict=True)) if kscore else {}
        v_missing = _missing(cfg.method, vn, vscore)
        k_missing = _missing(cfg.method, kn, kscore)
        for cid in {**vn, **kn}:
            fused[cid] = wv * vn.get(cid, v_missing) + wk * kn.get(cid, k_missing)
    # ties: an id in both lists first, then the higher vector score, then the smaller id
    order = sorted(fused, key=lambda c: (-fused[c], -((c in vscore) + (c in kscore)),
                                         -vscore.get(c, -math.inf), c))[:k]
    return [Fused(c, fused[c], vscore.get(c), kscore.get(c)) for c in order]
