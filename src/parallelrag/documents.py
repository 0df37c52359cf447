"""Documents and chunks: the units that flow through the pipeline."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Chunk", "Document", "content_hash"]


def content_hash(text: str) -> str:
    """sha256 hex digest of ``text`` encoded as UTF-8 (lone surrogates escaped)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(slots=True)
class Document:
    """A loaded source: its text, where it came from, and metadata (title, mime type, ...).

    ``id`` is the caller's identity for the document in an index: ingesting a document with an
    id that is already there replaces it (upsert), and ``Index.remove(id)`` deletes it. Without
    ``id``, ``metadata["id"]`` is used, then ``source``; a document with none of them is keyed
    by its content hash. Loaders leave ``id`` empty (a file's identity is its resolved path).

    ``outline`` lists the document's headings as ``(char offset, level, heading text)``, sorted
    by offset (level 1 = top); loaders that know the structure (HTML, Markdown, PDF) fill it and
    the pipeline derives each chunk's ``context`` from it.
    """

    text: str
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    outline: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def hash(self) -> str:
        return content_hash(self.text)


@dataclass(slots=True)
class Chunk:
    """A span of a text. ``text == original[start:end]`` (character offsets into the str).

    ``context`` is text the chunk is embedded and keyword-indexed with (its document's title and
    heading path, see :mod:`parallelrag.pipeline.context`); it is not part of ``text`` or the
    offsets.
    """

    text: str
    start: int
    end: int
    index: int
    metadata: dict[str, Any] = field(default_factory=dict)
    context: str = ""

    def __len__(self) -> int:
        return len(self.text)
