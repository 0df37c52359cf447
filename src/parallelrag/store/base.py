"""The store contract: :class:`VectorStore`, and the records it returns (:class:`Hit`, :class:`DocumentRecord`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from parallelrag.documents import Chunk

__all__ = ["DocumentItem", "DocumentRecord", "Filter", "Hit", "VectorStore"]

#: ``{"source": "docs/*.md", "lang": "en"}``: ``source`` is an fnmatch glob on the document's
#: source; every other key must equal the chunk's metadata value (str, int, float, bool or None).
Filter = Mapping[str, Any]

#: One document for :meth:`VectorStore.replace_documents`:
#: ``(source, content_hash, chunks, vectors, metadata)``.
DocumentItem = tuple[str, str, Sequence[Chunk], "npt.NDArray[np.float32]", Mapping[str, Any] | None]


@dataclass(slots=True)
class Hit:
    """One retrieved chunk.

    ``score`` is the ranking score of the search that produced it: cosine similarity for vector
    search, BM25 (higher is better) for keyword search, the fused RRF score for hybrid search.
    ``vector_score`` / ``keyword_score`` hold the per-list scores where the chunk was in that list.
    """

    chunk_id: int
    text: str
    score: float
    source: str
    start: int
    end: int
    index: int
    metadata: dict[str, Any] = field(default_factory=dict)
    vector_score: float | None = None
    keyword_score: float | None = None


@dataclass(slots=True, frozen=True)
class DocumentRecord:
    """What the store knows about one document (its chunks live separately)."""

    source: str
    content_hash: str
    n_chunks: int
    metadata: dict[str, Any]
    updated_at: float


@runtime_checkable
class VectorStore(Protocol):
    """What the pipeline and retrieval need from a store (embedded SQLite, pgvector, ...)."""

    @property
    def dimension(self) -> int: ...

    @property
    def model_id(self) -> str: ...

    def get_document(self, source: str) -> DocumentRecord | None: ...

    def documents(self) -> list[DocumentRecord]: ...

    def replace_document(
        self,
        source: str,
        content_hash: str,
        chunks: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> None: ...

    def replace_documents(self, items: Sequence[DocumentItem]) -> None: ...

    def remove_document(self, source: str) -> bool: ...

    def search_vector(
        self, query: npt.NDArray[np.float32], k: int = 5, *, where: Filter | None = None
    ) -> list[Hit]: ...

    def search_keyword(self, query: str, k: int = 5, *, where: Filter | None = None) -> list[Hit]: ...

    def search_hybrid(
        self,
        query: str,
        query_vec: npt.NDArray[np.float32],
        k: int = 5,
        *,
        where: Filter | None = None,
        rrf_k: int = 60,
        candidates: int = 50,
    ) -> list[Hit]: ...

    def get_chunks(self, ids: Iterable[int]) -> list[Hit]: ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...

    def __enter__(self) -> VectorStore: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
