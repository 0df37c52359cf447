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
    documents: int = 0  # documents seen (a file's, a JSON file's records, a caller's)
    chunks: int = 0  # chunks written
    embedded: int = 0  # vectors written that the embedder computed in this run
    cache_hits: int = 0  # chunk vectors reused (found in the store or the embedder's cache)
    texts_sent: int = 0  # texts sent to the embedding provider (after dedupe and reuse)
    decode_replaced_files: int = 0  # files kept with U+FFFD in place of a few bad bytes
    decode_replacements: int = 0  # U+FFFD characters put in for bad bytes, all files
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
    """Progress of an ingest, passed to the ``progress`` callback (in order, on a worker thread:
    the callback may call any sync parallelrag API)."""

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
    """An answer with numbered citations; ``extractive`` when no LLM wrote it.

    ``supported`` is False when retrieval found nothing that supports an answer (no hits, or
    the best hit's similarity under the embedder's calibrated threshold, see
    :mod:`parallelrag.pipeline.support`): ``text`` then says so and no LLM was asked."""

    question: str
    text: str
    citations: list[Citation]
    hits: list[Hit]
    usage: dict[str, int] = field(default_factory=dict)
    extractive: bool = False
    supported: bool = True
