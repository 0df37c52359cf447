"""Fixtures for the framework adapter tests: a small index on disk over the sim."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from parallelrag.pipeline import Index
from parallelrag.sim import SimServer

from ._helpers import embed_client, write_corpus


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def sim_index(sim: SimServer, corpus: Path, tmp_path: Path) -> Iterator[Index]:
    """An index over the three fact files, embedded by the sim. The sim's vectors carry no
    meaning, so tests that need the right file search by keyword (hybrid search weighs the
    vectors 0.8)."""
    index = Index.open(tmp_path / "index", embedder=embed_client(sim))
    report = index.ingest([corpus])
    assert report.ok and report.chunks >= 3, report
    yield index
    index.close()
