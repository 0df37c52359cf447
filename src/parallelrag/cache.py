"""A persistent embedding cache: SQLite in WAL mode, safe from many threads and processes.

Key = sha256(provider + model + dimensions + text). Values are float32 blobs.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache", "cache_key"]


def cache_key(namespace: str, text: str) -> bytes:
    h = hashlib.sha256(namespace.encode("utf-8"))
    h.update(b"\x00")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.digest()


class EmbeddingCache:
    """Embeddings by content key. Each thread uses its own connection; writes are batched."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        if p.suffix == "" and (p.is_dir() or not p.exists()):
            p.mkdir(parents=True, exist_ok=True)
            p = p / "embeddings.sqlite"
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
        self.path = p
        self._local = threading.local()
        self.hits = 0
        self.misses = 0
        con = self._con()
        con.execute(
            "CREATE TABLE IF NOT EXISTS emb (key BLOB PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID"
        )
        con.commit()

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"

    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA busy_timeout=60000")
            self._local.con = con
        return con

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        out: dict[bytes, np.ndarray] = {}
        con = self._con()
        step = 500
        for i in range(0, len(keys), step):
            part = list(keys[i : i + step])
            q = "SELECT key, vec FROM emb WHERE key IN (" + ",".join("?" * len(part)) + ")"
            for key, blob in con.execute(q, part):
                out[bytes(key)] = np.frombuffer(blob, dtype=np.float32)
        self.hits += len(out)
        self.misses += len(keys) - len(out)
        return out

    def put_many(self, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        if not items:
            return
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany(
                "INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)",
                [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def __len__(self) -> int:
        row = self._con().execute("SELECT COUNT(*) FROM emb").fetchone()
        return int(row[0])
