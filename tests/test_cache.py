"""EmbeddingCache: one connection per process under a lock, fixed lookup shapes, fork safety."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path

import numpy as np

from parallelrag.cache import EmbeddingCache, cache_key


def _vec(i: int) -> np.ndarray:
    return np.full(8, i, dtype=np.float32)


def test_threads_share_one_connection_and_see_each_others_writes(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            items = [(cache_key("ns", f"t{t}-{i}"), _vec(t * 1000 + i)) for i in range(300)]
            cache.put_many(items)
            got = cache.get_many([k for k, _ in items])
            assert len(got) == 300
            for k, v in items:
                assert np.array_equal(got[k], v)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert len(cache) == 2400
    # lookups of any length (padded to a fixed set of statement shapes) return exactly the hits
    keys = [cache_key("ns", f"t3-{i}") for i in range(37)] + [cache_key("ns", "missing")]
    got = cache.get_many(keys)
    assert len(got) == 37 and cache_key("ns", "missing") not in got
    cache.close()


def test_async_twins_run_on_the_cache_thread(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    names: list[str] = []
    real_put = cache.put_many

    def put(items: object) -> None:
        names.append(threading.current_thread().name)
        real_put(items)  # type: ignore[arg-type]

    cache.put_many = put  # type: ignore[method-assign]

    async def main() -> dict[bytes, np.ndarray]:
        await cache.aput_many([(b"k" * 32, _vec(1))])
        await cache.aput_many([(b"j" * 32, _vec(2))])
        return await cache.aget_many([b"k" * 32, b"j" * 32])

    got = asyncio.run(main())
    assert np.array_equal(got[b"j" * 32], _vec(2))
    assert len(set(names)) == 1 and names[0].startswith("parallelrag-embedding-cache")
    cache.close()


def test_old_layout_is_replaced(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE emb (key BLOB PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID")
    con.commit()
    con.close()
    cache = EmbeddingCache(db)
    cache.put_many([(b"a" * 32, _vec(5))])
    assert len(cache) == 1
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert "emb" not in tables and "vectors" in tables
    cache.close()


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c")
    cache.put_many([(b"p" * 32, _vec(7))])
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's connection
        code = 1
        try:
            cache.put_many([(b"c" * 32, _vec(8))])
            code = 0 if len(cache.get_many([b"p" * 32, b"c" * 32])) == 2 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(cache.get_many([b"p" * 32, b"c" * 32])) == 2  # the child's write is visible
    cache.close()
