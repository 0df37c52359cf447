"""``parallelrag pg start|stop|status`` (a local PostgreSQL with pgvector) and ``parallelrag copy``.

``pg start`` prints the server's connection URL on stdout (one line, or a JSON document with
``--json``), so ``export PARALLELRAG_PG_URL=$(parallelrag pg start)`` works.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import click

from .cli_support import EXIT_FAILURE, CliError, OpeningError, echo, echo_json, hide_credentials
from .errors import StoreError

__all__ = ["copy", "pg"]

_DATA_OPTION = click.option(
    "--data", "data_dir", default=None, metavar="DIR", envvar="PARALLELRAG_PG_DATA",
    show_envvar=True, help="the server's data folder  [default: ~/.parallelrag/pgdata]")
_JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="print one JSON document")


@click.group()
def pg() -> None:
    """A local PostgreSQL + pgvector server for the postgres store (needs the postgres extra).

    The server listens on a unix socket in its data folder only (no TCP port) and keeps running
    after the command exits, until `parallelrag pg stop`.
    """


@pg.command("start")
@_DATA_OPTION
@_JSON_OPTION
def pg_start(data_dir: str | None, as_json: bool) -> None:
    """Start the server (initialising DIR the first time) and print its URL."""
    from .store import pgserver

    url = pgserver.start(data_dir)
    if as_json:
        echo_json({"command": "pg start", "ok": True, "warnings": [], "url": url,
                   "data": str(Path(data_dir or pgserver.default_data_dir()).expanduser()
                               .resolve())})
    else:
        echo(url)


@pg.command("stop")
@_DATA_OPTION
@_JSON_OPTION
def pg_stop(data_dir: str | None, as_json: bool) -> None:
    """Stop the server running in DIR (the data is kept)."""
    from .store import pgserver

    was_running = pgserver.stop(data_dir)
    if as_json:
        echo_json({"command": "pg stop", "ok": True, "warnings": [], "stopped": was_running})
    else:
        echo("stopped" if was_running else "no server was running")


@pg.command("status")
@_DATA_OPTION
@_JSON_OPTION
def pg_status(data_dir: str | None, as_json: bool) -> None:
    """Print the URL of the server running in DIR; exit code 1 when none runs."""
    from .store import pgserver

    url = pgserver.status(data_dir)
    if as_json:
        echo_json({"command": "pg status", "ok": url is not None, "warnings": [],
                   "running": url is not None, "url": url})
    else:
        echo(url or "not running")
    if url is None:
        click.get_current_context().exit(EXIT_FAILURE)


@click.command("copy")
@click.argument("src")
@click.argument("dst")
@click.option("--prune", is_flag=True,
              help="also remove documents of DST that SRC does not have")
@_JSON_OPTION
def copy(src: str, dst: str, prune: bool, as_json: bool) -> None:
    """Copy an index from SRC to DST without re-embedding: vectors, chunks, metadata, settings.

    SRC and DST are index folders or postgresql:// URLs (e.g. the URL `parallelrag pg start`
    prints, plus &index=NAME). Documents already in DST are replaced; running it again after an
    interruption finishes the copy.
    """
    from .store import transfer

    if "://" not in src and not Path(src).is_dir():
        raise CliError(f"no index at {src}")
    if "://" not in src:
        report = _copy_from_folder(src, dst, prune)
    else:
        report = transfer.copy_index(src, dst, prune=prune)
    if as_json:
        echo_json({"command": "copy", "ok": True, "warnings": [], "src": _safe(src),
                   "dst": _safe(dst), "documents": report.documents, "chunks": report.chunks,
                   "removed": report.removed, "config_copied": report.config_copied})
    else:
        echo(f"copied {report.documents} documents ({report.chunks} chunks) from {_safe(src)} "
             f"to {_safe(dst)}" + (f"; {report.removed} removed from the copy" if prune else ""))


def _copy_from_folder(src: str, dst: str, prune: bool) -> Any:
    """``copy`` from an index folder: the source opened read-only (it is never written, and may
    be on read-only media such as a backup), a destination folder opened here; either one
    that cannot be opened is a configuration error (exit 2) naming it."""
    from .store import EmbeddedStore, transfer

    try:
        source = EmbeddedStore.open_read_only(src)
    except (OSError, sqlite3.Error, StoreError) as exc:
        raise OpeningError(src, exc) from exc
    with source:
        if "://" in dst:
            return transfer.copy_index(source, dst, prune=prune)
        try:
            target = transfer.open_location(dst, dimension=source.dimension,
                                            model_id=source.model_id)
        except (OSError, sqlite3.Error, StoreError) as exc:
            raise OpeningError(dst, exc) from exc
        try:
            return transfer.copy_index(source, target, prune=prune)
        finally:
            target.close()


def _safe(location: str) -> str:
    """A location fit to print: a database URL without its user and password (in the user part
    or a ``password=`` parameter)."""
    return hide_credentials(location)
