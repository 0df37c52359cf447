"""Move an index between stores (embedded directory ↔ PostgreSQL) without re-embedding.

:func:`copy_index` reads documents, chunks (text, offsets, metadata, context), their vectors and
the index config from one store and writes them into another, a batch of documents per
transaction on the destination (an interrupted copy leaves whole documents; running it again
finishes it). The vectors are copied bit for bit, so search results are the same on both
sides, and the destination records the same model id and dimension::

    copy_index(".parallelrag", "postgresql://user@host/db?index=docs")
    copy_index("postgresql://user@host/db?index=docs", "./restored")

Sources and destinations are open stores or locations (a directory for the embedded store, a
``postgresql://`` URL); a location source must exist, its model and dimension are read from it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from parallelrag.documents import Chunk
from parallelrag.errors import ConfigError, StoreError

from .base import DocumentRecord, VectorStore
from .embedded import DB_NAME, EmbeddedStore

__all__ = ["CopyReport", "copy_index", "open_location", "read_manifest"]

F32 = npt.NDArray[np.float32]
Exported = tuple[DocumentRecord, list[Chunk], F32]
Location = str | os.PathLike[str]


@dataclass(slots=True, frozen=True)
class CopyReport:
    """What :func:`copy_index` did."""

    documents: int
    chunks: int
    removed: int
    config_copied: bool


def _is_url(loc: object) -> bool:
    from .postgres import is_postgres_url

    return is_postgres_url(loc)


def read_manifest(location: Location) -> tuple[str, int]:
    """(model id, dimension) recorded by the index at ``location``, without opening it for writing."""
    if _is_url(location):
        from .postgres import read_manifest as pg_manifest

        return pg_manifest(str(location))
    db = Path(location) / DB_NAME
    if not db.exists():
        raise StoreError(f"no index at {location} (missing {DB_NAME})")
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        try:
            rows = dict(conn.execute("SELECT key, value FROM manifest").fetchall())
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"cannot read the index at {location}: {e}") from e
    try:
        return str(rows["model_id"]), int(rows["dimension"])
    except (KeyError, ValueError) as e:
        raise StoreError(f"the index at {location} has no model id or dimension") from e


def open_location(
    location: Location, *, dimension: int, model_id: str, create: bool = True
) -> VectorStore:
    """Open the store at ``location``: a ``postgresql://`` URL or an embedded-store directory."""
    if _is_url(location):
        from .postgres import PostgresStore

        return PostgresStore.open(str(location), dimension=dimension, model_id=model_id, create=create)
    return EmbeddedStore.open(location, dimension=dimension, model_id=model_id, create=create)


def _export_embedded(store: EmbeddedStore, sources: Sequence[str]) -> list[Exported]:
    """Documents of an embedded store with chunks and vectors, from one snapshot.

    The store reads them itself (:meth:`EmbeddedStore.export_documents`): with the vector file
    (the default layout) the chunk rows hold no vector, only the store's index knows where each
    one lives; a store that keeps them in the rows is read from there. Unknown sources are left
    out. Raises :class:`StoreError` when a document changes while being read."""
    return store.export_documents(sources)


def _export(store: VectorStore, sources: Sequence[str]) -> list[Exported]:
    export = getattr(store, "export_documents", None)
    if export is not None:
        result: list[Exported] = export(sources)
        return result
    if isinstance(store, EmbeddedStore):
        return _export_embedded(store, sources)
    raise ConfigError(f"{type(store).__name__} cannot export its documents (no export_documents)")


def _batches(items: Sequence[DocumentRecord], max_docs: int, max_chunks: int) -> Iterator[list[str]]:
    batch: list[str] = []
    n = 0
    for rec in items:
        if batch and (len(batch) >= max_docs or n + rec.n_chunks > max_chunks):
            yield batch
            batch, n = [], 0
        batch.append(rec.source)
        n += rec.n_chunks
    if batch:
        yield batch


def copy_index(
    src: VectorStore | Location,
    dst: VectorStore | Location,
    *,
    prune: bool = False,
    batch_docs: int = 256,
    batch_chunks: int = 20_000,
    progress: Callable[[int, int], None] | None = None,
) -> CopyReport:
    """Copy every document of ``src`` (with its chunks, vectors and metadata) and the index
    config into ``dst``, without re-embedding.

    Documents already in ``dst`` under the same source are replaced; with ``prune``, documents
    of ``dst`` that ``src`` lacks are removed. ``progress(done, total)`` is called after each
    batch (documents). Stores passed open stay open; locations are opened and closed here.
    Raises :class:`ConfigError` when the two stores hold different models or dimensions.
    """
    opened: list[VectorStore] = []
    try:
        if isinstance(src, VectorStore):
            source = src
        else:
            model_id, dim = read_manifest(src)
            source = open_location(src, dimension=dim, model_id=model_id, create=False)
            opened.append(source)
        if isinstance(dst, VectorStore):
            target = dst
        else:
            target = open_location(dst, dimension=source.dimension, model_id=source.model_id)
            opened.append(target)
        if (source.model_id, source.dimension) != (target.model_id, target.dimension):
            raise ConfigError(
                f"cannot copy: source holds {source.model_id!r} ({source.dimension} dims), "
                f"destination {target.model_id!r} ({target.dimension} dims)"
            )
        config = source.load_config()
        if config is not None:
            target.save_config(config)
        records = source.documents()
        n_docs = n_chunks = 0
        for names in _batches(records, max(1, batch_docs), max(1, batch_chunks)):
            exported = _export(source, names)
            target.replace_documents(
                [(rec.source, rec.content_hash, chunks, mat, rec.metadata) for rec, chunks, mat in exported]
            )
            n_docs += len(exported)
            n_chunks += sum(len(c) for _, c, _ in exported)
            if progress is not None:
                progress(n_docs, len(records))
        removed = 0
        if prune:
            keep = {r.source for r in records}
            for rec in target.documents():
                if rec.source not in keep and target.remove_document(rec.source):
                    removed += 1
        return CopyReport(n_docs, n_chunks, removed, config is not None)
    finally:
        for store in reversed(opened):
            with contextlib.suppress(Exception):
                store.close()
