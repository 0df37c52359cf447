"""A persistent embedding cache: SQLite in WAL mode, safe from many threads and processes.

Key = sha256(provider + model + dimensions + text). Values are float32 blobs.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .runtime import WorkerPool

__all__ = ["EmbeddingCache", "cache_key"]


def cache_key(namespace: str, text: str) -> bytes:
    h = hashlib.sha256(namespace.encode("utf-8"))
    h.update(b"\x00")
    h.update(text.encode("utf-8", "surrogatepass"))
    return h.digest()


#: the IN-list sizes of lookup statements (a short list is padded by repeating its last key), so
#: a connection caches three prepared statements instead of one per distinct batch length
_LOOKUP_SIZES = (16, 128, 512)


class EmbeddingCache:
    """Embeddings by content key. Thread-safe: one connection per process, used under a lock
    (lookups and batched writes are short); other processes share the file through WAL."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        if p.suffix == "" and (p.is_dir() or not p.exists()):
            p.mkdir(parents=True, exist_ok=True)
            p = p / "embeddings.sqlite"
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
        self.path = p
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._executor: WorkerPool | None = None
        self._executor_pid = 0
        self.hits = 0
        self.misses = 0
        with self._lock:
            con = self._con()
            # a rowid table: vectors are appended in insertion order and only the 32-byte keys
            # go into a random-order B-tree (a WITHOUT ROWID table keyed by the hash kept the
            # 1-6 KB vectors in its leaves and split pages on every insert: 5x slower)
            con.execute(
                "CREATE TABLE IF NOT EXISTS vectors "
                "(id INTEGER PRIMARY KEY, key BLOB NOT NULL UNIQUE, vec BLOB NOT NULL)"
            )
            con.execute("DROP TABLE IF EXISTS emb")  # the layout before 0.1.1

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"

    def _con(self) -> sqlite3.Connection:
        """The process's connection (call with the lock held); a forked child opens its own."""
        con = self._conn
        if con is None or self._pid != os.getpid():
            con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None,
                                  check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA busy_timeout=60000")
            self._conn = con
            self._pid = os.getpid()
        return con

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        out: dict[bytes, np.ndarray] = {}
        step = _LOOKUP_SIZES[-1]
        with self._lock:
            con = self._con()
            for i in range(0, len(keys), step):
                part = list(keys[i : i + step])
                size = next(n for n in _LOOKUP_SIZES if n >= len(part))
                part.extend([part[-1]] * (size - len(part)))
                q = "SELECT key, vec FROM vectors WHERE key IN (" + ",".join("?" * size) + ")"
                for key, blob in con.execute(q, part):
                    out[bytes(key)] = np.frombuffer(blob, dtype=np.float32)
        self.hits += len(out)
        self.misses += len(keys) - len(out)
        return out

    def put_many(self, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        if not items:
            return
        rows = [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in items]
        with self._lock:
            con = self._con()
            con.execute("BEGIN IMMEDIATE")
            try:
                con.executemany("INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)", rows)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    # async twins: every call runs on this cache's own single worker thread, so SQLite's
    # allocations stay in one thread (and one malloc arena) instead of spreading over a pool
    def _worker(self) -> WorkerPool:
        # the runtime's pool: it keeps taking work after the main thread returned
        with self._lock:
            ex = self._executor
            if ex is None or self._executor_pid != os.getpid():
                ex = WorkerPool(1, "parallelrag-embedding-cache", idle_s=None)
                self._executor = ex
                self._executor_pid = os.getpid()
            return ex

    async def aget_many(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        return await asyncio.get_running_loop().run_in_executor(
            self._worker(), self.get_many, keys
        )

    async def aput_many(self, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._worker(), self.put_many, items)

    def __len__(self) -> int:
        with self._lock:
            row = self._con().execute("SELECT COUNT(*) FROM vectors").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Close this process's connection and worker thread (a later call opens new ones)."""
        with self._lock:
            ex, self._executor = self._executor, None
        if ex is not None and self._executor_pid == os.getpid():
            ex.shutdown(wait=True)
        with self._lock:
            con, self._conn = self._conn, None
            if con is not None and self._pid == os.getpid():
                con.close()
