"""The store contract: :class:`VectorStore`, and the records it returns (:class:`Hit`, :class:`DocumentRecord`).

Every store (embedded SQLite, PostgreSQL, a user's own) passes the one contract suite in
``tests/store/contract.py``. What a store must do:

* **Documents** are keyed by ``source`` (a file's key or a caller's document id: the store treats
  it as an opaque non-empty string). :meth:`VectorStore.replace_documents` replaces each listed
  document (its record and all its chunks) in ONE transaction: after a crash or a ``close()``
  without commit, a reader sees either the old or the new version of every document, never a mix.
* **Chunks** carry ``text``, offsets, ``index``, ``metadata`` (the document's metadata overlaid by
  the chunk's own) and ``context`` (text embedded and keyword-indexed with the chunk, see
  :func:`embed_text`). The store keys each chunk's vector by :func:`text_key` of
  :func:`embed_text` so that :meth:`VectorStore.vectors_by_key` can hand back stored vectors for
  texts that are embedded again (re-ingest, re-split): a store keeps each vector once.
* **Search**: ``search_vector`` (cosine, higher is better), ``search_keyword`` (BM25 over
  ``context`` + ``text``, higher is better), ``search_hybrid`` (reciprocal-rank fusion via
  :mod:`parallelrag.store.fusion`), each with an optional :data:`Filter`. Optionally
  ``document_scores(query, sources)``: the query's cosine with each document's centroid (see
  :class:`CentroidCache`), which the documents-first order of ``Index.search`` uses where a
  store has it.
* **Config**: :meth:`VectorStore.load_config` / :meth:`VectorStore.save_config` keep the index's
  build settings (embedder spec, splitter settings) inside the store, so a server store needs no
  local files. The dict is JSON-serialisable; the store saves it as a whole, atomically.
* **Concurrency**: any number of threads may search while one thread writes; a search sees one
  committed snapshot.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from parallelrag.documents import Chunk

__all__ = [
    "CentroidCache", "DocumentItem", "DocumentRecord", "Filter", "Hit", "VectorStore",
    "centroids", "embed_text", "text_key",
]

#: ``{"source": "docs/*.md", "lang": "en"}``: ``source`` is an fnmatch glob on the document's
#: source; every other key must equal the chunk's metadata value (str, int, float, bool or None).
Filter = Mapping[str, Any]

#: One document for :meth:`VectorStore.replace_documents`:
#: ``(source, content_hash, chunks, vectors, metadata)``.
DocumentItem = tuple[str, str, Sequence[Chunk], "npt.NDArray[np.float32]", Mapping[str, Any] | None]


def embed_text(chunk: Chunk) -> str:
    """What is embedded for ``chunk``: ``context + "\n\n" + text``, or the text alone."""
    return f"{chunk.context}\n\n{chunk.text}" if chunk.context else chunk.text


def centroids(rows: Iterable[tuple[str, npt.NDArray[np.float32]]]) -> dict[str, npt.NDArray[np.float32]]:
    """source → the normalised mean of that source's vectors in ``rows`` (``(source, vector)``
    pairs; a pre-averaged vector per source works too)."""
    sums: dict[str, npt.NDArray[np.float64]] = {}
    for src, vec in rows:
        acc = sums.get(src)
        sums[src] = np.asarray(vec, np.float64) if acc is None else acc + vec
    out: dict[str, npt.NDArray[np.float32]] = {}
    for src, total in sums.items():
        n = float(np.linalg.norm(total))
        out[src] = (total / n if n > 0 else total).astype(np.float32)
    return out


class CentroidCache:
    """Document centroids by ``(source, content hash)``, so that ranking by document reads a
    document's chunk vectors once, not on every search; a replaced document has a new hash and
    is read again. Thread-safe; keeps the ``max_docs`` most recently used."""

    def __init__(self, max_docs: int = 20_000) -> None:
        self._max = max_docs
        self._data: OrderedDict[str, tuple[str, npt.NDArray[np.float32]]] = OrderedDict()
        self._lock = threading.Lock()

    def has(self, source: str, content_hash: str) -> bool:
        """Whether the centroid of this version of ``source`` is cached."""
        with self._lock:
            got = self._data.get(source)
            return got is not None and got[0] == content_hash

    def scores(
        self,
        query: npt.NDArray[np.float32],
        hashes: Mapping[str, str],
        compute: Callable[[list[str]], dict[str, npt.NDArray[np.float32]]],
    ) -> dict[str, float]:
        """source → cosine of ``query`` with its centroid, for the sources of ``hashes``
        (source → content hash); ``compute(missing sources)`` gives the centroids not cached."""
        found: dict[str, npt.NDArray[np.float32]] = {}
        with self._lock:
            for src, h in hashes.items():
                got = self._data.get(src)
                if got is not None and got[0] == h:
                    self._data.move_to_end(src)
                    found[src] = got[1]
        missing = [src for src in hashes if src not in found]
        if missing:
            fresh = compute(missing)
            found.update(fresh)
            with self._lock:
                for src, c in fresh.items():
                    self._data[src] = (hashes[src], c)
                    self._data.move_to_end(src)
                while len(self._data) > self._max:
                    self._data.popitem(last=False)
        q = np.asarray(query, np.float32).reshape(-1)
        qn = float(np.linalg.norm(q)) or 1.0
        return {src: float(c @ q) / qn for src, c in found.items()}


def text_key(text: str) -> bytes:
    """The 16-byte key a vector is stored and looked up under: sha256 of the embedded text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


@dataclass(slots=True)
class Hit:
    """One retrieved chunk.

    ``score`` is the ranking score of the search that produced it: cosine similarity for vector
    search, BM25 (higher is better) for keyword search, the fused score for hybrid search
    (:mod:`parallelrag.store.fusion`).
    ``vector_score`` / ``keyword_score`` hold the per-list scores where the chunk was in that list.
    ``context`` is the text the chunk was embedded with besides its own (title, headings).
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
    context: str = ""


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

    def replace_documents(self, items: Sequence[DocumentItem]) -> None:
        """Replace every listed document (record + chunks) in one transaction, all or nothing."""
        ...

    def remove_document(self, source: str) -> bool:
        """Delete ``source`` and its chunks; whether it existed."""
        ...

    def vectors_by_key(
        self, keys: Sequence[bytes]
    ) -> dict[bytes, npt.NDArray[np.float32]]:
        """Stored vectors of chunks whose :func:`text_key` of :func:`embed_text` is in ``keys``
        (missing keys are left out): what lets a re-ingest skip embedding unchanged texts."""
        ...

    def load_config(self) -> dict[str, Any] | None:
        """The index config saved with :meth:`save_config`, or None when none was saved."""
        ...

    def save_config(self, config: Mapping[str, Any]) -> None:
        """Save the index config (a JSON-serialisable dict), replacing any saved before."""
        ...

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
