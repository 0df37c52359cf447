"""Document-aware ranking: which documents a result list shows first, not just which chunks.

A store ranks chunks one by one, so a page split into many chunks can fill a whole top 5 with
near-duplicates of one passage while the page that answers the question sits at rank 6; and a
page whose several chunks all match moderately loses to one stray chunk elsewhere. Ranking by
document fixes both, as document search engines do (a document scored by its best passage plus
support from its other passages, and repeated hits of one document pushed down):

* every chunk's score is turned into a z-score within the candidate list (so the settings mean
  the same for cosine similarities, BM25 scores and fused scores);
* a document's best chunk is ranked by ``best + support_weight * Σ (z - z_min)`` over the
  document's next ``support_hits`` chunks in the list (evidence that the document as a whole
  is about the question), plus ``document_weight`` times the z-score, among the candidate
  documents, of the query's cosine with the document's centroid (the normalised mean of all its
  chunk vectors, from the store's ``document_scores``; vector and hybrid search only);
* its j-th further chunk is ranked by ``z - repeat_penalty * j``: a much better second passage
  of the top document still comes before a weak other document, a similar one does not.

With one document in the index (or under a ``where`` filter) the order is the store's order.
:data:`DEFAULT_DOCUMENT_RANKING` holds the settings chosen on the retrieval evaluation
(docs/retrieval-eval.md). Hits keep the score of the search that found them; only the order
changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..store.base import Hit

__all__ = ["DEFAULT_DOCUMENT_RANKING", "DocumentRanking", "rank_by_document"]


@dataclass(frozen=True, slots=True)
class DocumentRanking:
    """Settings of :func:`rank_by_document`.

    ``candidates``: how many chunks the store returns for the ranking to choose from (at least
    ``k``); ``support_weight`` and ``support_hits``: how much a document's further matching
    chunks add to its best one; ``repeat_penalty``: how far (in standard deviations of the
    candidates' scores) each further chunk of a document is pushed down; ``document_weight``:
    how much the query's similarity to the whole document (its centroid) adds."""

    candidates: int = 50
    support_weight: float = 0.3
    support_hits: int = 4
    repeat_penalty: float = 1.0
    document_weight: float = 1.0


#: The ranking :meth:`parallelrag.pipeline.Index.search` uses unless ``rank_by="chunk"``.
DEFAULT_DOCUMENT_RANKING = DocumentRanking()


def _zscores(values: Sequence[float]) -> list[float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return [(v - mean) / sd if sd > 1e-12 else 0.0 for v in values]


def rank_by_document(hits: Sequence[Hit], k: int, config: DocumentRanking | None = None,
                     document_scores: Mapping[str, float] | None = None) -> list[Hit]:
    """The best ``k`` of ``hits`` (one search's candidates, best first) in document-aware order.

    Documents are told apart by ``Hit.source``. ``document_scores``: the query's similarity to
    each candidate document as a whole (source → cosine with its centroid), where the store
    gives it. Ties keep the store's order."""
    cfg = config or DEFAULT_DOCUMENT_RANKING
    if k <= 0 or not hits:
        return []
    z = _zscores([h.score for h in hits])
    z_min = min(z)
    by_doc: dict[str, list[int]] = {}
    for i, h in enumerate(hits):
        by_doc.setdefault(h.source, []).append(i)
    doc_z: dict[str, float] = {}
    if document_scores and cfg.document_weight:
        known = [d for d in by_doc if d in document_scores]
        if known:
            doc_z = dict(zip(known, _zscores([document_scores[d] for d in known]), strict=True))
    ranked: list[tuple[float, int]] = []
    for doc, members in by_doc.items():
        members.sort(key=lambda i: (-z[i], i))
        best = members[0]
        support = sum(z[i] - z_min for i in members[1:1 + cfg.support_hits])
        ranked.append((z[best] + cfg.support_weight * support
                       + cfg.document_weight * doc_z.get(doc, 0.0), best))
        for j, i in enumerate(members[1:], 1):
            ranked.append((z[i] - cfg.repeat_penalty * j, i))
    ranked.sort(key=lambda t: (-t[0], t[1]))
    return [hits[i] for _, i in ranked[:k]]
