"""Shared helpers for the store tests (imported by name; pytest puts this folder on sys.path)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from parallelrag.documents import Chunk


def unit(rng: np.random.Generator, n: int, dim: int) -> npt.NDArray[np.float32]:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def make_chunks(texts: list[str], metadata: dict[str, object] | None = None) -> list[Chunk]:
    out = []
    pos = 0
    for i, t in enumerate(texts):
        out.append(Chunk(t, pos, pos + len(t), i, dict(metadata or {})))
        pos += len(t) + 1
    return out
