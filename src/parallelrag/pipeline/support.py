"""Whether retrieved hits support an answer at all: the weak-retrieval check of ``Index.answer``.

Ranking scores say which chunk is best, not whether the best is any good: a question the corpus
cannot answer still gets a top 5. The check looks at the best cosine similarity between the
question and the retrieved chunks (``Hit.vector_score``, present for vector and hybrid
search) and calls the hits unsupported below a threshold. Cosine scales differ between models,
so thresholds are per embedder: :data:`DEFAULT_MIN_SCORES` holds the ones calibrated on the
retrieval evaluation (answerable vs off-corpus questions, docs/retrieval-eval.md); an embedder
without one is not checked unless the caller passes ``min_score``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..store import Hit

__all__ = ["DEFAULT_MIN_SCORES", "UNSUPPORTED_TEXT", "is_supported", "min_score_for",
           "support_score"]

#: Calibrated thresholds by ``"provider:model"`` of the embedder.
DEFAULT_MIN_SCORES: dict[str, float] = {
    "local:sentence-transformers/all-MiniLM-L6-v2": 0.34,
}

#: What ``Index.answer`` says instead of answering from weak context.
UNSUPPORTED_TEXT = ("I could not find support for an answer in the indexed documents: the "
                    "closest passages are not about this question.")


def support_score(hits: Sequence[Hit]) -> float:
    """The best question-to-chunk cosine similarity among ``hits`` (``-inf`` when no hit has
    one: keyword search, or no hits)."""
    scores = [h.vector_score for h in hits if h.vector_score is not None]
    return max(scores) if scores else float("-inf")


def min_score_for(embedder: Any) -> float | None:
    """The calibrated threshold for ``embedder`` (an EmbeddingClient), or None."""
    key = f"{getattr(embedder, 'provider', '')}:{getattr(embedder, 'model', '')}"
    return DEFAULT_MIN_SCORES.get(key)


def is_supported(hits: Sequence[Hit], min_score: float | None) -> bool:
    """False when there are no hits, or when ``min_score`` is set, some hit has a vector score,
    and the best one is below it. Hits without vector scores (keyword search) are not judged."""
    if not hits:
        return False
    if min_score is None:
        return True
    if all(h.vector_score is None for h in hits):
        return True
    return support_score(hits) >= min_score
