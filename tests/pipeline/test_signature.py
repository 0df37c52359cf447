"""A change of splitter (size, overlap or length unit) re-splits unchanged files."""

from __future__ import annotations

from pathlib import Path

from parallelrag import EmbeddingClient
from parallelrag.pipeline import Index
from parallelrag.splitters import RecursiveSplitter


def test_changing_length_unit_resplits(tmp_path: Path) -> None:
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
    tokens = Index.open(tmp_path / "idx", embedder=emb,
                        splitter=RecursiveSplitter(200, 20, length="minilm"))
    r3 = tokens.ingest([doc.parent])
    assert r3.updated == 1 and r3.unchanged == 0
    assert r3.chunks != r1.chunks
    assert r3.stages["load"] > 0
    tokens.close()
