"""Vector stores: the :class:`VectorStore` contract and the embedded SQLite default.

>>> store = EmbeddedStore.open("./index", dimension=384, model_id="minilm")   # doctest: +SKIP
>>> store.replace_document("a.md", h, chunks, vectors)                          # doctest: +SKIP
>>> store.search_hybrid("question", qvec, k=5)                                  # doctest: +SKIP
"""

from __future__ import annotations

import os

from parallelrag.documents import Chunk

from .base import DocumentItem, DocumentRecord, Filter, Hit, VectorStore, embed_text, text_key
from .embedded import SCHEMA_VERSION, EmbeddedStore, fts5_available
from .vectors import DEFAULT_ANN_THRESHOLD, VectorIndex, ann_available


def open_store(location: str | os.PathLike[str], *, dimension: int, model_id: str,
               create: bool = True) -> VectorStore:
    """Open the store at ``location``: a ``postgresql://`` / ``postgres://`` URL
    (:class:`~parallelrag.store.postgres.PostgresStore`), else a directory
    (:class:`EmbeddedStore`). Raises what the store's ``open`` raises."""
    if isinstance(location, str) and location.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        pg: VectorStore = PostgresStore.open(location, dimension=dimension, model_id=model_id,
                                             create=create)
        return pg
    return EmbeddedStore.open(location, dimension=dimension, model_id=model_id, create=create)

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
    "embed_text",
    "fts5_available",
    "open_store",
    "text_key",
]
