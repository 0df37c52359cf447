"""Plumbing of the ``parallelrag`` command: exit codes, one-line errors, plain output, JSON.

Exit codes (the contract the docs state):

* ``0``: the command did what was asked.
* ``1``: a provider failed (after its retries), or part of the work failed (an ingest with failed
  documents); the failures are listed.
* ``2``: usage or configuration: a bad option value, a missing or unusable index folder, an index
  built with another model, a missing optional dependency.

Errors print as one line on stderr (``error: ...``); ``--debug`` (or ``PARALLELRAG_DEBUG=1``)
adds the traceback. Output on stdout is plain text that never depends on the terminal's width,
so piped output is complete; ``--json`` prints one JSON document (schemas in the CLI docs).
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import orjson

from .errors import (
    BadRequestError,
    ConfigError,
    ParallelRagError,
    ProviderError,
)

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "WarningCollector",
    "echo",
    "echo_json",
    "exit_code_for",
    "hide_credentials",
    "report_error",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CliError(Exception):
    """An error the CLI reports as one line with a chosen exit code (not a library error)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_URL_PASSWORD_PARAM = re.compile(r"(?i)([?&](?:ssl)?password=)[^&\s]+")


def hide_credentials(text: str) -> str:
    """``scheme://user:password@host`` → ``scheme://***@host`` and ``?password=...`` →
    ``?password=***`` (``sslpassword=`` too) anywhere in ``text``."""
    return _URL_PASSWORD_PARAM.sub(r"\1***", _URL_CREDENTIALS.sub(r"\1***@", text))


class OpeningError(Exception):
    """An OS, SQLite or store error met while opening (or creating) the index: configuration."""

    def __init__(self, path: str, cause: BaseException) -> None:
        where = f"the index at {path}" if "://" in path else f"the index folder {path}"
        super().__init__(f"cannot use {where}: {_os_reason(cause)}")
        self.path = path
        self.cause = cause


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def _first_leaf(exc: BaseException) -> tuple[BaseException, int]:
    """The first exception inside an exception group (a task group of the library that failed)
    and how many there are in all; ``(exc, 1)`` for any other exception."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc, 1
    leaves = [_first_leaf(e) for e in exc.exceptions]
    if not leaves:
        return exc, 1
    return leaves[0][0], sum(n for _, n in leaves)


def exit_code_for(exc: BaseException) -> int:
    """The exit code for an exception that ended a command (see module doc)."""
    exc = _first_leaf(exc)[0]
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, OpeningError | ConfigError):
        return EXIT_USAGE
    if isinstance(exc, BadRequestError) and exc.status_code is None:
        return EXIT_USAGE  # rejected before anything was sent: the input is at fault
    if isinstance(exc, ProviderError | ParallelRagError):
        return EXIT_FAILURE
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return EXIT_FAILURE


def error_line(exc: BaseException) -> str:
    """The one line that describes ``exc`` to a user (no traceback, no secrets); an exception
    group is described by its first exception."""
    leaf, count = _first_leaf(exc)
    if leaf is not exc:
        more = f" (and {count - 1} more error{'s' if count > 2 else ''})" if count > 1 else ""
        return error_line(leaf) + more
    if isinstance(exc, CliError | OpeningError):
        return str(exc)
    if isinstance(exc, ParallelRagError):
        kind = type(exc).__name__
        text = str(exc)
        return f"{text} [{kind}]" if kind not in ("ParallelRagError",) else text
    if isinstance(exc, sqlite3.Error | OSError):
        return f"{type(exc).__name__}: {_os_reason(exc)}"
    return f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"


def report_error(exc: BaseException, debug: bool) -> int:
    """Print ``exc`` as one line on stderr (the traceback first with ``debug``); its exit code."""
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    line = hide_credentials(" ".join(error_line(exc).split()))
    click.echo(click.style("error:", fg="red", bold=True) + " " + line, err=True)
    return exit_code_for(exc)


def echo(text: str = "", *, err: bool = False) -> None:
    """Print plain text (no markup, no wrapping: piped output is complete)."""
    click.echo(text, err=err)


def echo_json(obj: Any) -> None:
    """Print one JSON document on stdout (indented, UTF-8, non-finite floats as null)."""
    click.echo(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY,
                            default=str).decode())


class WarningCollector(logging.Handler):
    """Holds library warnings (``logging`` records and ``warnings.warn``) during a command.

    With ``--json`` they go into the document's ``warnings`` list instead of stderr, so stdout
    parses and stderr stays empty; otherwise each prints as one ``warning:`` line on stderr.
    A warning met again (the same damage in many files) is kept once: :meth:`finish` adds how
    many times it came (``(N times)``) and, on stderr, says so in one more line.
    """

    def __init__(self, quiet: bool) -> None:
        super().__init__(level=logging.WARNING)
        self.quiet = quiet
        self.messages: list[str] = []
        self._counts: dict[str, int] = {}

    def finish(self) -> None:
        """Mark the warnings that came more than once with their count (end of the command)."""
        for i, text in enumerate(self.messages):
            n = self._counts.get(text, 1)
            if n > 1:
                self.messages[i] = f"{text} ({n} times)"
                if not self.quiet:
                    click.echo(click.style("warning:", fg="yellow") + f" {text} ({n} times in "
                               "all)", err=True)
        self._counts.clear()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage().strip().splitlines()
            text = msg[0] if msg else ""
            if record.name == "py.warnings":
                # "path:line: Category: message" -> "Category: message"
                parts = text.split(": ", 1)
                text = parts[1] if len(parts) == 2 and ":" in parts[0] else text
            name = record.name.split(".")[0]
            if name not in ("py", "root") and not text.startswith(name):
                text = f"{name}: {text}"
        except Exception:  # a warning must never break a command
            return
        # (emit runs under the handler's lock: records come from loader threads too)
        seen = text in self._counts
        self._counts[text] = self._counts.get(text, 0) + 1
        if seen:
            return
        self.messages.append(text)
        if not self.quiet:
            click.echo(click.style("warning:", fg="yellow") + " " + text, err=True)


@contextmanager
def collect_warnings(quiet: bool) -> Iterator[WarningCollector]:
    """Route library warnings to a :class:`WarningCollector` for the duration of a command."""
    handler = WarningCollector(quiet)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    if root.level > logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.WARNING)
    logging.captureWarnings(True)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            yield handler
        finally:
            handler.finish()
            logging.captureWarnings(False)
            root.removeHandler(handler)
            root.setLevel(old_level)


def debug_from_env() -> bool:
    return os.environ.get("PARALLELRAG_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
