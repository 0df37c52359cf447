"""Vector stores: the :class:`VectorStore` contract and the embedded SQLite default.

>>> store = EmbeddedStore.open("./index", dimension=384, model_id="minilm")   # doctest: +SKIP
>>> store.replace_document("a.md", h, chunks, vectors)                          # doctest: +SKIP
>>> store.search_hybrid("question", qvec, k=5)                                  # doctest: +SKIP
"""

from __future__ import annotations

from parallelrag.documents import Chunk

from .base import DocumentItem, DocumentRecord, Filter, Hit, VectorStore
from .embedded import SCHEMA_VERSION, EmbeddedStore, fts5_available
from .vectors import DEFAULT_ANN_THRESHOLD, VectorIndex, ann_available

__all__ = [
    "DEFAULT_ANN_THRESHOLD",
    "SCHEMA_VERSION",
    "Chunk",
    "DocumentItem",
    "DocumentRecord",
    "EmbeddedStore",
    "Filter",
    "Hit",
    "VectorIndex",
    "VectorStore",
    "ann_available",
    "fts5_available",
]
