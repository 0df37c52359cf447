"""Moving indexes between the embedded store and PostgreSQL; the Index API over a PostgreSQL URL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pg_helpers
import pytest
from pg_helpers import index_url
from store_helpers import make_chunks, unit

from parallelrag.documents import Chunk
from parallelrag.embeddings import EmbeddingClient
from parallelrag.errors import ConfigError
from parallelrag.pipeline.index import Index
from parallelrag.store import EmbeddedStore
from parallelrag.store.base import DocumentItem
from parallelrag.store.postgres import PostgresStore
from parallelrag.store.transfer import _export, copy_index, read_manifest

pg_server = pg_helpers.pg_server  # fixtures of this module
pg_url = pg_helpers.pg_url

DIM = 12


def _fill(store: EmbeddedStore, rng: np.random.Generator, n: int) -> None:
    items: list[DocumentItem] = []
    for d in range(n):
        texts = [f"doc {d} chunk {i} zebra{d}" for i in range(1 + d % 4)]
        chunks = make_chunks(texts, {"part": d % 2} if d % 3 else None)
        chunks = [
            Chunk(c.text, c.start, c.end, c.index, c.metadata, context=f"Title {d}" if d % 2 else "")
            for c in chunks
        ]
        items.append((f"src/{d:03d}.md", f"hash{d}", chunks, unit(rng, len(chunks), DIM), {"d": d, "tag": "x"}))
    items.append(("empty.md", "e", [], np.zeros((0, DIM), np.float32), None))
    store.replace_documents(items)
    store.save_config({"embedder": "sim", "splitter": {"size": 10}})


def _dump(store: EmbeddedStore | PostgresStore) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    records = store.documents()
    for rec, chunks, mat in _export(store, [r.source for r in records]):
        out.append((rec.source, rec.content_hash, rec.n_chunks, rec.metadata))
        for c, v in zip(chunks, mat, strict=True):
            out.append((rec.source, c.text, c.start, c.end, c.index, c.metadata, c.context, v.tobytes()))
    return out


def test_copy_embedded_to_postgres_and_back_is_lossless(pg_url: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    src = EmbeddedStore.open(tmp_path / "a", dimension=DIM, model_id="sim:m")
    _fill(src, rng, 25)
    want = _dump(src)
    q = unit(rng, 1, DIM)[0]
    want_hits = [(h.source, h.index, h.score) for h in src.search_vector(q, k=20)]
    want_kw = {(h.source, h.index) for h in src.search_keyword("zebra3 title", k=20)}
    src.close()

    seen: list[tuple[int, int]] = []
    rep = copy_index(tmp_path / "a", pg_url, batch_docs=7, progress=lambda a, b: seen.append((a, b)))
    assert (rep.documents, rep.config_copied) == (26, True)
    assert seen[-1] == (26, 26) and len(seen) == 4
    assert read_manifest(pg_url) == ("sim:m", DIM)
    with PostgresStore.open(pg_url, dimension=DIM, model_id="sim:m") as pg:
        assert _dump(pg) == want  # bit-identical vectors, same texts, offsets, metadata, context
        assert pg.load_config() == {"embedder": "sim", "splitter": {"size": 10}}
        got_hits = [(h.source, h.index, h.score) for h in pg.search_vector(q, k=20)]
        assert [g[:2] for g in got_hits] == [w[:2] for w in want_hits]
        assert np.allclose([g[2] for g in got_hits], [w[2] for w in want_hits], atol=1e-5)
        assert {(h.source, h.index) for h in pg.search_keyword("zebra3 title", k=20)} == want_kw

    rep = copy_index(pg_url, tmp_path / "b")
    assert rep.documents == 26 and rep.chunks == sum(1 + d % 4 for d in range(25))
    back = EmbeddedStore.open(tmp_path / "b", dimension=DIM, model_id="sim:m")
    try:
        assert _dump(back) == want
        assert back.load_config() == {"embedder": "sim", "splitter": {"size": 10}}
    finally:
        back.close()


def test_copy_prune_and_model_mismatch(pg_server: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    a = EmbeddedStore.open(tmp_path / "a", dimension=DIM, model_id="m")
    a.replace_document("keep", "h", make_chunks(["k"]), unit(rng, 1, DIM))
    dst = PostgresStore.open(index_url(pg_server, "prune_t"), dimension=DIM, model_id="m")
    dst.replace_document("stale", "h", make_chunks(["s"]), unit(rng, 1, DIM))
    try:
        rep = copy_index(a, dst, prune=True)
        assert (rep.documents, rep.removed) == (1, 1)
        assert [d.source for d in dst.documents()] == ["keep"]
        other = PostgresStore.open(index_url(pg_server, "prune_o"), dimension=DIM, model_id="other")
        with pytest.raises(ConfigError):
            copy_index(a, other)
        other.close()
    finally:
        a.close()
        dst.close()


def test_index_api_over_postgres_url(pg_url: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    (corpus / "en").mkdir(parents=True)
    (corpus / "fr").mkdir()
    (corpus / "en" / "lighthouse.txt").write_text(
        "The lighthouse keeper is named Orla. She lights the lamp at dusk every evening."
    )
    (corpus / "en" / "garden.txt").write_text("The garden has seven apple trees and a pond with carp.")
    (corpus / "fr" / "phare.txt").write_text("Le gardien du phare s'appelle Orla. Il allume la lampe.")
    emb = EmbeddingClient.local("wordllama")
    index = Index.open(pg_url, embedder=emb)
    try:
        assert isinstance(index.store, PostgresStore)
        report = index.ingest([corpus])
        assert report.added == 3 and not report.failed
        again = index.ingest([corpus])
        assert again.added == 0  # unchanged files are skipped (hashes stored in PostgreSQL)
        hits = index.search("lighthouse keeper name", k=2)
        assert hits and "Orla" in hits[0].text and hits[0].source.endswith("lighthouse.txt")
        kw = index.search("apple trees", k=1, mode="keyword")
        assert kw and kw[0].source.endswith("garden.txt")
        fr = index.search("Orla", k=5, where={"source": "*/fr/*"})
        assert [h.source.rsplit("/", 1)[-1] for h in fr] == ["phare.txt"]
        st = index.stats()
        assert st["documents"] == 3 and st["keyword_index"] == "postgres-fts"
        src = next(d.source for d in index.store.documents() if d.source.endswith("garden.txt"))
        assert index.remove(src) is True
        assert not any(h.source == src for h in index.search("apple trees", k=5, mode="keyword"))
    finally:
        index.close()
    # reopened from the URL alone: the embedder spec is read from the index's saved config
    reopened = Index.open(pg_url, create=False)
    try:
        assert reopened.embedder.model == emb.model
        assert len(reopened.store.documents()) == 2
    finally:
        reopened.close()
