"""Result types of the pipeline: ingest reports, progress events, answers with citations."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..store import Hit

__all__ = ["Answer", "Citation", "IngestProgress", "IngestReport"]


@dataclass
class IngestReport:
    """What one ``Index.ingest`` did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    documents: int = 0  # sources seen (files, or records of JSON files)
    chunks: int = 0  # chunks written
    embedded: int = 0  # chunk texts sent to the embedder (after dedupe and cache)
    cache_hits: int = 0
    tokens: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    wall_s: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)  # busy seconds per stage

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


@dataclass
class IngestProgress:
    """Progress of an ingest, passed to the ``progress`` callback (from the runtime thread)."""

    files_seen: int
    documents_done: int
    chunks: int
    embedded: int
    elapsed_s: float
    scan_done: bool
    files_total: int | None = None

    @property
    def embeddings_per_s(self) -> float:
        return self.embedded / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class Citation:
    """A numbered source of an answer: the chunk it points at, with offsets into its document."""

    number: int
    source: str
    start: int
    end: int
    chunk_id: int
    text: str


@dataclass
class Answer:
    """An answer with numbered citations; ``extractive`` when no LLM wrote it."""

    question: str
    text: str
    citations: list[Citation]
    hits: list[Hit]
    usage: dict[str, int] = field(default_factory=dict)
    extractive: bool = False
