"""The splitter is saved with the index: a plain reopen uses it, another one is a ConfigError
unless ``rebuild=True``, which re-splits on the next ingest and reuses stored vectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from parallelrag import EmbeddingClient
from parallelrag.errors import ConfigError
from parallelrag.pipeline import Index
from parallelrag.splitters import RecursiveSplitter


def test_changing_length_unit_needs_rebuild_then_resplits(tmp_path: Path) -> None:
    doc = tmp_path / "c" / "a.txt"
    doc.parent.mkdir()
    doc.write_text("Alpha beta gamma delta. " * 200)
    emb = EmbeddingClient.local("wordllama")
    first = Index.open(tmp_path / "idx", embedder=emb,
                       splitter=RecursiveSplitter(200, 20))
    r1 = first.ingest([doc.parent])
    first.close()
    again = Index.open(tmp_path / "idx", embedder=emb,
                       splitter=RecursiveSplitter(200, 20))
    assert again.ingest([doc.parent]).unchanged == 1
    again.close()
    with pytest.raises(ConfigError, match=r"length: 'chars' -> 'minilm'"):
        Index.open(tmp_path / "idx", embedder=emb,
                   splitter=RecursiveSplitter(200, 20, length="minilm"))
    tokens = Index.open(tmp_path / "idx", embedder=emb,
                        splitter=RecursiveSplitter(200, 20, length="minilm"), rebuild=True)
    assert tokens.stats()["documents_with_other_settings"] == 1
    r3 = tokens.ingest([doc.parent])
    assert r3.updated == 1 and r3.unchanged == 0
    assert r3.chunks != r1.chunks
    assert r3.stages["load"] > 0
    assert tokens.stats()["documents_with_other_settings"] == 0
    tokens.close()
    # a plain reopen now uses the saved (token) settings: nothing is re-split
    plain = Index.open(tmp_path / "idx")
    assert plain.splitter.length.name == "minilm" and plain.splitter.chunk_size == 200
    assert plain.ingest([doc.parent]).unchanged == 1
    plain.close()
