"""Checks and steps that the embedded and PostgreSQL stores share, kept in one place so the
two backends accept the same inputs, raise the same errors and rank the same way."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from parallelrag.documents import Chunk
from parallelrag.errors import ConfigError, StoreError

from .base import DocumentItem, DocumentRecord, Filter, Hit
from .fusion import Fused

__all__ = [
    "apply_fused",
    "check_manifest",
    "document_record",
    "fetch_document_row",
    "filter_items",
    "loads_metadata",
    "unpack_item",
]


def unpack_item(
    item: DocumentItem, dimension: int
) -> tuple[str, str, Sequence[Chunk], npt.NDArray[np.float32], Mapping[str, Any] | None]:
    """Validate one ``replace_documents`` item against a store of ``dimension``.

    Returns ``(source, content_hash, chunks, vectors, metadata)`` with ``vectors`` as a
    ``(len(chunks), dimension)`` float32 array; raises :class:`ConfigError` on a malformed
    item, a wrong vector shape or a non-finite vector.
    """
    try:
        source, content_hash, chunks, vectors, metadata = item
    except (TypeError, ValueError) as e:
        raise ConfigError(
            "replace_documents items are (source, content_hash, chunks, vectors, metadata)"
        ) from e
    if not isinstance(source, str) or not source:
        raise ConfigError(f"source must be a non-empty string, got {source!r}")
    if not isinstance(content_hash, str):
        raise ConfigError(f"{source}: content_hash must be a string")
    vecs = np.asarray(vectors, dtype=np.float32)
    if len(chunks) == 0 and vecs.size == 0:
        vecs = vecs.reshape(0, dimension)
    if vecs.ndim != 2 or vecs.shape != (len(chunks), dimension):
        raise ConfigError(
            f"{source}: vectors have shape {vecs.shape}, expected ({len(chunks)}, {dimension})"
        )
    if not bool(np.isfinite(vecs).all()):
        raise ConfigError(f"{source}: vectors contain NaN or infinity")
    return source, content_hash, chunks, vecs, metadata


def apply_fused(fused: Iterable[Fused], present: Mapping[int, Hit]) -> list[Hit]:
    """The hits of a fused ranking, in its order, each given its fused and per-list scores."""
    hits: list[Hit] = []
    for f in fused:
        hit = present[f.id]
        hit.score = f.score
        hit.vector_score = f.vector_score
        hit.keyword_score = f.keyword_score
        hits.append(hit)
    return hits


def loads_metadata(text: str | None) -> dict[str, Any]:
    """A metadata JSON column of the embedded store as a dict (``{}`` when empty or not a dict)."""
    if not text:
        return {}
    value = orjson.loads(text)
    return value if isinstance(value, dict) else {}


def fetch_document_row(conn: sqlite3.Connection, source: str) -> Any:
    """The embedded store's ``documents`` row of ``source`` (None if absent), with the columns
    :func:`document_record` reads."""
    return conn.execute(
        "SELECT source, content_hash, n_chunks, metadata, updated_at FROM documents "
        "WHERE source = ?",
        (source,),
    ).fetchone()


def document_record(row: Sequence[Any]) -> DocumentRecord:
    """A :class:`DocumentRecord` from an embedded store's ``documents`` row."""
    return DocumentRecord(
        source=row[0],
        content_hash=row[1],
        n_chunks=int(row[2]),
        metadata=loads_metadata(row[3]),
        updated_at=float(row[4]),
    )


def filter_items(where: Filter | None) -> Iterator[tuple[str, Any]]:
    """The ``(key, value)`` pairs of a filter, each checked as it is reached: keys must be
    strings and a ``source`` value a glob string (:class:`ConfigError` otherwise)."""
    for key, value in (where or {}).items():
        if not isinstance(key, str):
            raise ConfigError(f"filter keys must be strings, got {key!r}")
        if key == "source" and not isinstance(value, str):
            raise ConfigError("filter 'source' must be a glob string")
        yield key, value


def _same_model(saved: object, requested: str) -> bool:
    """``saved`` (a manifest's model id) names the ``requested`` model. A local folder's or hub
    model's id carries a fingerprint of what it holds (``PATH@sha256-...``, ``org/name@rev-...``);
    an index saved before ids had one holds the bare ``PATH`` and opens with that folder's model
    as it always did (it cannot tell which model built it)."""
    if saved == requested:
        return True
    base, sep, tag = requested.rpartition("@")
    return bool(sep) and tag.startswith(("sha256-", "rev-")) and saved == base


def check_manifest(
    rows: Mapping[str, Any],
    *,
    schema_version: int,
    model_id: str,
    dimension: int,
    kind: str,
    subject: str,
    remedy: str,
) -> None:
    """Refuse an index whose saved manifest ``rows`` has a newer schema than ``schema_version``
    (:class:`StoreError`) or another model or dimension than requested (:class:`ConfigError`).

    ``kind`` ("index", "store"), ``subject`` (what was opened, where) and ``remedy`` (the
    alternative to the same embedder) word the messages for the backend.
    """
    version = int(rows.get("schema_version", "0"))
    if version > schema_version:
        raise StoreError(
            f"{kind} schema version {version} is newer than this parallelrag supports ({schema_version})"
        )
    rec_model, rec_dim = rows.get("model_id"), int(rows.get("dimension", "0"))
    if not _same_model(rec_model, model_id) or rec_dim != dimension:
        raise ConfigError(
            f"{subject} was built with model {rec_model!r} (dimension {rec_dim}), "
            f"but model {model_id!r} (dimension {dimension}) was requested; "
            f"use the same embedder or {remedy}"
        )
