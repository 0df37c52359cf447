"""Types shared by every loader: :class:`Skip`, :class:`LoadResult` and the :class:`Loader` protocol."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..documents import Document

__all__ = ["LoadResult", "Loader", "Skip", "display_path", "find_display_path"]


def display_path(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """``path`` as valid text: bytes of the name that are not UTF-8 are written ``\\xNN``.

    On POSIX a file name is bytes; Python hands back the bytes that do not decode as lone
    surrogates (``b"caf\\xe9.txt"`` → ``"caf\\udce9.txt"``), which JSON, SQLite, PostgreSQL and
    a UTF-8 terminal refuse. This is the form documents are keyed, reported and shown under:
    the same on every run, different for names that differ in any undecodable byte, and a
    valid name is returned unchanged (so the function is idempotent). Only a valid name that
    spells the escape itself (a literal backslash, ``x`` and two hex digits) can collide with
    one; an ingest reports the second as a duplicate. The result cannot be opened as a path
    when it differs from the name: keep the original for that.
    """
    s = os.fsdecode(os.fspath(path))
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        pass
    try:  # the file system's undecodable bytes (U+DC80..U+DCFF) back to bytes, shown as \xNN
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # other lone surrogates: \uDXXX
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


def find_display_path(display: str | os.PathLike[str]) -> Path | None:
    """The existing path whose :func:`display_path` is ``display``, or None when there is none.

    The way back from a stored key to the file: a component written with ``\\xNN`` escapes is
    looked up among the names of its directory (only such components are; a valid path is
    checked as it is)."""
    p = Path(display)
    if p.exists():
        return p
    if "\\" not in str(p):
        return None
    cur = Path(p.parts[0])
    for part in p.parts[1:]:
        cand = cur / part
        if "\\" in part and not os.path.lexists(cand):
            try:
                names = os.listdir(cur)
            except OSError:
                return None
            match = next((n for n in names if display_path(n) == part), None)
            if match is None:
                return None
            cand = cur / match
        cur = cand
    return cur if cur.exists() else None


@dataclass(frozen=True, slots=True)
class Skip:
    """A source that was not loaded, and why (``"binary"``, ``"empty"``, ``"symlink loop"``, ...).

    ``path`` and ``reason`` are valid text (see :func:`display_path`), safe to print or store."""

    path: str
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", display_path(self.path))
        object.__setattr__(self, "reason", display_path(self.reason))


@dataclass(slots=True)
class LoadResult:
    """The outcome of loading one file.

    ``path`` is the file's path as the OS gives it (it may hold surrogate escapes for bytes of
    the name that are not UTF-8: use :func:`display_path` to show or store it).

    ``documents`` is empty exactly when ``skip`` is set. ``content_hash`` is the sha256 hex digest
    of the file's bytes; it is ``None`` when the file was skipped before it was read (too large,
    broken symlink, ...). ``replacements`` counts the U+FFFD characters that decoding put in
    place of bad bytes (a mostly-UTF-8 file with a few damaged bytes is kept, not dropped).
    """

    path: str
    documents: list[Document] = field(default_factory=list)
    skip: Skip | None = None
    content_hash: str | None = None
    replacements: int = 0

    @property
    def ok(self) -> bool:
        return self.skip is None


class Loader(Protocol):
    """A file-type loader: ``loader(path, data, **options) -> list[Document]``.

    ``data`` is the file's bytes (already read, so the file is read once). ``options`` holds the
    caller's options that were set (today only ``text_field``); a loader should accept and ignore
    unknown ones. Raise :class:`parallelrag.errors.LoaderError` to skip the file with the error's
    message as the reason. ``source`` and the metadata keys ``mime``, ``title``, ``bytes`` and
    ``mtime`` are filled in afterwards when the loader leaves them out.
    """

    def __call__(self, path: Path, data: bytes, /, **options: Any) -> list[Document]: ...
