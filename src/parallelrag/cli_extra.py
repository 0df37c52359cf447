"""Commands of the ``parallelrag`` CLI whose functions live in optional modules.

``pg start`` / ``pg stop`` (a local PostgreSQL with pgvector, :mod:`parallelrag.store.pgserver`)
and ``copy SRC DST`` (:func:`parallelrag.store.transfer.copy_index`) are attached only when their
modules are part of this installation.
"""

from __future__ import annotations

import importlib.util

import click

__all__ = ["attach"]


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def attach(group: click.Group) -> None:
    """Add the optional commands whose modules exist to ``group``."""
    if _has("parallelrag.store.pgserver"):
        from . import cli_pg

        group.add_command(cli_pg.pg)
    if _has("parallelrag.store.transfer"):
        from . import cli_pg

        group.add_command(cli_pg.copy)
