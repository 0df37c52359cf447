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
    """A loaded source: its text, where it came from, and metadata (title, mime type, ...)."""

    text: str
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return content_hash(self.text)


@dataclass(slots=True)
class Chunk:
    """A span of a text. ``text == original[start:end]`` (character offsets into the str)."""

    text: str
    start: int
    end: int
    index: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.text)
