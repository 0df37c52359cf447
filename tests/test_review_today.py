"""Review of the ingest-failure, own-model, user-database and query-side changes: each test
shows a defect found by running the changed code as a user would (a long query in another
script, a PostgreSQL password written as libpq reads it, ...)."""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "store"))  # the PostgreSQL fixtures live there

import pg_helpers
from pg_helpers import data_dir_of

from parallelrag import Index
from parallelrag.documents import Document
from parallelrag.errors import StoreError

pg_server = pg_helpers.pg_server  # this module's own server
_n = itertools.count()


# ------------------------------------------------------------------ query side
def test_search_with_a_long_query_in_a_dense_script_is_cut_to_the_model_limit(
        tmp_path: Path) -> None:
    """A query over the model's limit is cut, not refused: 600 characters of Japanese are
    about 600 word pieces, over MiniLM's 256, so the first cut alone is not enough."""
    index = Index.open(tmp_path / "ix", embedder="minilm")
    try:
        index.ingest([Document("猫がマットの上に座った。" * 5, source="cat"),
                      Document("Quarterly revenue grew by four percent.", source="revenue")])
        hits = index.search("猫がマットの上に座った。" * 100, k=2, mode="vector")
        assert hits[0].source == "cat"
    finally:
        index.close()


# ------------------------------------------------------------------ PostgreSQL URLs
def test_password_with_a_question_mark_as_libpq_reads_it_never_shows(pg_server: str) -> None:
    """libpq takes everything up to the first ``@`` before any ``/`` as ``user:password``, so
    ``postgresql://u:pa?ss@/db`` logs in with the password ``pa?ss`` (the URL is passed to libpq
    as written); that password must be masked in the store's URL, its repr and its errors."""
    import psycopg

    from parallelrag.store.postgres import PostgresStore, safe_url

    host = data_dir_of(pg_server)
    role, pw = f"qm_{next(_n)}", "Se?cr3t#x"
    with psycopg.connect(f"postgresql://postgres@/postgres?host={host}", autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
        c.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{pw}'")
        c.execute(f"GRANT CREATE ON DATABASE postgres TO {role}")
    pg_helpers.require_password(pg_server, role)
    url = f"postgresql://{role}:{pw}@/postgres?host={host}&index=qm{next(_n)}"
    assert pw not in safe_url(url) and "Se?" not in safe_url(url)
    with PostgresStore.open(url, dimension=4, model_id="m") as s:  # logged in: libpq read pw
        assert "Se?cr3t" not in repr(s) and "Se?cr3t" not in s.url
    # our own option given first: still ours (libpq refuses an unknown URI parameter)
    first = f"postgresql://{role}:{pw}@/postgres?index=qm{next(_n)}&host={host}"
    with PostgresStore.open(first, dimension=4, model_id="m") as s:
        assert s.index_name.startswith("qm")
    with pytest.raises(StoreError) as e:
        PostgresStore.open(url.replace("Se?", "Wrong?"), dimension=4, model_id="m")
    assert "password authentication failed" in str(e.value)
    assert "Wrong?cr3t" not in str(e.value) and "cr3t#x" not in str(e.value), str(e.value)


def test_a_busy_pool_is_not_reported_as_a_lost_connection(pg_server: str) -> None:
    """Every pooled connection busy (here the only one, blocked on a lock the admin holds):
    the call fails after the pool's wait, once, saying so; it is not a dead connection to
    replace (which doubled the wait and blamed the server)."""
    import threading

    import psycopg
    from store_helpers import make_chunks, unit

    from parallelrag.store.postgres import PostgresStore

    host = data_dir_of(pg_server)
    name = f"busy{next(_n)}"
    store = PostgresStore.open(f"{pg_helpers.index_url(pg_server, name)}&pool_size=1",
                               dimension=4, model_id="m", ann=False)
    try:
        store.replace_document("a", "h", make_chunks(["alpha"]), unit(np.random.default_rng(0), 1, 4))
        assert store._pool is not None
        store._pool.timeout = 1.0  # the pool's wait for a free connection (30 s by default)
        with psycopg.connect(f"postgresql://postgres@/postgres?host={host}") as admin:
            admin.execute(f'LOCK TABLE "{name}".chunks IN ACCESS EXCLUSIVE MODE')
            blocked = threading.Thread(target=lambda: store.search_keyword("alpha", k=1))
            blocked.start()  # holds the pool's only connection, waiting for the lock
            for _ in range(400):  # until its statement waits for the lock (not a fixed sleep)
                row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                    "wait_event_type = 'Lock' AND backend_type = "
                                    "'client backend'").fetchone()
                if row and row[0]:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the search never waited for the lock")
            with pytest.raises(StoreError) as e:
                store.remove_document("a")
            admin.rollback()
        blocked.join(30)
        text = str(e.value)
        assert "PoolTimeout" in text and "connection to PostgreSQL was lost" not in text, text
        assert store.get_document("a") is not None  # and nothing was removed
    finally:
        store.close()


# ------------------------------------------------------------------ own model folders
def test_other_frameworks_weights_in_a_model_folder_do_not_change_its_identity(
        tmp_path: Path) -> None:
    """A hub repo's folder holds the same weights for other runtimes (TensorFlow, Flax, Rust,
    ONNX files at the top): the torch model never reads them, so adding or deleting one (to
    save disk) is not another model, and an index built with the folder still opens."""
    import json
    import subprocess

    from model_helpers import build_model

    folder = tmp_path / "model"
    build_model(folder)
    with Index.open(tmp_path / "ix", embedder=str(folder)) as index:
        index.ingest([Document("the cat sat", source="cat"), Document("dog", source="dog")])
    for name in ("tf_model.h5", "flax_model.msgpack", "rust_model.ot", "model.onnx"):
        (folder / name).write_bytes(b"\0" * 64)
    code = (
        "import json, sys\nfrom parallelrag import Index\n"
        "with Index.open(sys.argv[1]) as ix:\n"
        "    print(json.dumps([h.source for h in ix.search('the cat sat', k=1, mode='vector')]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ix")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["cat"]


def test_ssl_key_password_in_the_url_never_shows(pg_server: str) -> None:
    """libpq's ``sslpassword=`` (the passphrase of the client key) is a secret as ``password=``
    is: masked in the store's URL, repr and stats, and in what the CLI prints."""
    from parallelrag.cli_support import hide_credentials
    from parallelrag.store.postgres import PostgresStore

    url = f"{pg_helpers.index_url(pg_server, f'ssl{next(_n)}')}&sslpassword=KeyPass9"
    with PostgresStore.open(url, dimension=4, model_id="m") as s:  # libpq takes the parameter
        shown = [repr(s), s.url, str(s.stats())]
    shown.append(hide_credentials(f"ingest into {url}: 1 added"))
    assert not any("KeyPass9" in t for t in shown), shown


def test_function_returning_a_list_of_torch_tensors_with_grad() -> None:
    """``[model(x) for x in ...]`` (one tensor per text, still in autograd, half precision) is
    taken as a stacked tensor is: not a per-input failure asking for ``.detach()``."""
    torch = pytest.importorskip("torch")
    from parallelrag import EmbeddingClient

    layer = torch.nn.Linear(3, 4)

    def per_text(texts: list[str]) -> list[object]:
        return [layer(torch.full((3,), float(len(t)))).half() for t in texts]

    vecs = EmbeddingClient.from_function(per_text, dim=4).embed_many(["a", "bb"])
    with torch.no_grad():
        want = np.stack([layer(torch.full((3,), float(n))).half().float().numpy() for n in (1, 2)])
    assert vecs.dtype == np.float32 and np.allclose(vecs, want)


def test_unit_rows_scales_tiny_and_huge_vectors() -> None:
    # float32 squares of 1e-30 underflow to 0 and of 3e38 overflow to inf: the norm is taken
    # in float64, so such vectors still come back with length 1 instead of as zeros
    from parallelrag.pipeline.index import unit_rows

    rows = unit_rows(np.array([[1e-30, 1e-30], [3e38, 3e38], [0.0, 0.0]], dtype=np.float32))
    assert rows.dtype == np.float32
    assert np.allclose(rows[:2], np.sqrt(0.5), atol=1e-6) and not rows[2].any()
