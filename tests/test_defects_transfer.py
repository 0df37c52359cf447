"""``store.transfer._export_embedded`` on an embedded store that keeps its vectors in the vector
file (the default layout): the chunk rows hold no vector there, so reading them from SQLite alone
cannot work; the export must return the vectors that were stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from parallelrag.documents import Chunk
from parallelrag.store import EmbeddedStore, transfer

DIM = 8


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    m = rng.standard_normal((n, DIM)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _chunks(texts: list[str]) -> list[Chunk]:
    out, pos = [], 0
    for i, t in enumerate(texts):
        out.append(Chunk(t, pos, pos + len(t), i, {}))
        pos += len(t) + 1
    return out


def test_export_embedded_reads_vectors_from_the_vector_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    vecs = _unit(rng, 5)
    with EmbeddedStore.open(tmp_path / "s", dimension=DIM, model_id="m", vector_file=True) as s:
        s.replace_documents([("x", "h1", _chunks(["a0", "a1"]), vecs[:2], {"k": 1}),
                             ("y", "h2", _chunks(["b0", "b1", "b2"]), vecs[2:], None)])
        got = transfer._export_embedded(s, ["y", "missing", "x"])
    assert [(r.source, r.content_hash) for r, _, _ in got] == [("y", "h2"), ("x", "h1")]
    assert [c.text for c in got[0][1]] == ["b0", "b1", "b2"]
    assert [c.text for c in got[1][1]] == ["a0", "a1"]
    assert got[0][2].dtype == np.float32 and got[0][2].shape == (3, DIM)
    assert np.array_equal(got[0][2], vecs[2:]) and np.array_equal(got[1][2], vecs[:2])
    assert got[1][0].metadata == {"k": 1}


def test_export_embedded_still_reads_a_store_with_vectors_in_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vecs = _unit(rng, 3)
    with EmbeddedStore.open(tmp_path / "s", dimension=DIM, model_id="m", vector_file=False) as s:
        s.replace_documents([("x", "h1", _chunks(["a0", "a1", "a2"]), vecs, None)])
        got = transfer._export_embedded(s, ["x"])
    assert len(got) == 1 and np.array_equal(got[0][2], vecs)
