"""The store contract (``contract.py``) run against the embedded SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

from parallelrag.store import EmbeddedStore, VectorStore

from .contract import *  # noqa: F403
from .contract import StoreFactory


@pytest.fixture(params=["exact", "ann", "no-vector-file"])
def store_factory(request: pytest.FixtureRequest) -> StoreFactory:
    """Exact search; the HNSW graph from the first vector on (ann_threshold=1); and vectors
    kept only in the database (no mapped vector file in the directory)."""
    threshold = 1 if request.param == "ann" else 10**9
    vector_file = request.param != "no-vector-file"

    def make(tmp_path: Path, dimension: int, model_id: str) -> VectorStore:
        return EmbeddedStore.open(tmp_path / "store", dimension=dimension, model_id=model_id,
                                  ann_threshold=threshold, vector_file=vector_file)

    return make
