"""The store contract (``contract.py``) run against PostgresStore on a PostgreSQL started by the
test run (``pg_helpers``): exact search, and with the HNSW index from the first chunk on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pg_helpers
import pytest
from pg_helpers import index_url

from parallelrag.store import VectorStore
from parallelrag.store.postgres import PostgresStore

from .contract import *  # noqa: F403
from .contract import StoreFactory

pg_server = pg_helpers.pg_server  # this module's server fixture


@pytest.fixture(params=["exact", "hnsw"])
def store_factory(request: pytest.FixtureRequest, pg_server: str) -> StoreFactory:
    """One index (schema) per ``tmp_path``: calling again with the same path reopens it."""
    threshold = 1 if request.param == "hnsw" else 10**9

    def make(tmp_path: Path, dimension: int, model_id: str) -> VectorStore:
        name = "c_" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:20]
        return PostgresStore.open(index_url(pg_server, name), dimension=dimension,
                                  model_id=model_id, ann_threshold=threshold)

    return make
