"""The Ray engine writing straight from its actors into a PostgreSQL index (pgserver)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_ray_engine import assert_same, dump, make_corpus

from parallelrag import EmbeddingClient, Index
from parallelrag.distributed import RayOptions
from store.pg_helpers import pg_server, pg_url  # noqa: F401  (fixtures)


def test_ray_engine_into_postgres_matches_local_engine(ray_cluster: Any, tmp_path: Path,
                                                       pg_url: str) -> None:  # noqa: F811
    corpus = make_corpus(tmp_path, n=10)
    local = Index.open(tmp_path / "local", embedder=EmbeddingClient.local("wordllama"))
    rl = local.ingest([corpus])
    # the same file keys as the local index (relative to the folder holding it)
    pg = Index.open(pg_url, embedder=EmbeddingClient.local("wordllama"), root=tmp_path)
    rr = pg.ingest([corpus], engine="ray", ray_options=RayOptions(num_actors=1,
                                                                  files_per_batch=3))
    assert not rr.failed and rr.added == rl.added == 13
    assert rr.chunks == rl.chunks
    assert_same(dump(local), dump(pg))
    again = pg.ingest([corpus], engine="ray", ray_options=RayOptions(num_actors=1))
    assert again.unchanged == 13 and again.added == 0
    assert pg.search("term3 doc1", k=1)[0].source.endswith(".md")
