"""Types shared by every loader: :class:`Skip`, :class:`LoadResult` and the :class:`Loader` protocol."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..documents import Document

__all__ = ["LoadResult", "Loader", "Skip", "display_path", "find_display_path"]


# What display_path writes for a lone surrogate: \xNN (a file system's undecodable byte,
# U+DC80..U+DCFF) or \uDXXX (any other lone surrogate). A literal backslash run before such
# a spelling, or before a lone surrogate, is doubled so that the two cannot meet.
_ESCAPE_TAIL = r"[xX][89a-fA-F][0-9a-fA-F]|[uU][dD][89a-fA-F][0-9a-fA-F]{2}"
_ENCODE = re.compile(r"(\\+)(?=" + _ESCAPE_TAIL + r"|[\ud800-\udfff])|([\ud800-\udfff])")
_DECODE = re.compile(r"(\\+)([xX]([89a-fA-F][0-9a-fA-F])|[uU]([dD][89a-fA-F][0-9a-fA-F]{2}))")
_NEEDS_ENCODE = re.compile(r"\\(?:" + _ESCAPE_TAIL + r")")


def _encode(m: re.Match[str]) -> str:
    run, ch = m.group(1), m.group(2)
    if run is not None:
        return run * 2
    o = ord(ch)
    return f"\\x{o - 0xDC00:02x}" if 0xDC80 <= o <= 0xDCFF else f"\\u{o:04x}"


def _decode(m: re.Match[str]) -> str:
    n = len(m.group(1))
    lit = "\\" * (n // 2)
    if n % 2 == 0:
        return lit + m.group(2)
    byte, code = m.group(3), m.group(4)
    return lit + (chr(0xDC00 + int(byte, 16)) if byte else chr(int(code, 16)))


def display_path(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """``path`` as valid text: bytes of the name that are not UTF-8 are written ``\\xNN``.

    On POSIX a file name is bytes; Python hands back the bytes that do not decode as lone
    surrogates (``b"caf\\xe9.txt"`` → ``"caf\\udce9.txt"``), which JSON, SQLite, PostgreSQL and
    a UTF-8 terminal refuse. This is the form documents are keyed, reported and shown under
    (a caller's document id with lone surrogates is spelled the same way), the same on every
    run and different for any two different names (the mapping is one-to-one; the way back is
    :func:`find_display_path`). The rule:

    * a lone surrogate U+DC80..U+DCFF (an undecodable byte ``NN``) is written ``\\xNN``, any
      other lone surrogate ``\\uDXXX`` (lower-case hex);
    * a run of literal backslashes right before ``x`` + a hex byte 80..ff, ``u`` + a surrogate
      code point D800..DFFF (either case), or before a lone surrogate, is doubled: the name
      ``caf\\xe9.txt`` (backslash, ``x``, ``e``, ``9``) is keyed ``caf\\\\xe9.txt``, so it
      does not collide with ``b"caf\\xe9.txt"``;
    * everything else is kept, so a valid name without such a backslash (``café.txt``,
      ``C:\\Users\\x41``, ``a\\b``) is returned unchanged.

    So the function is not idempotent on names that spell an escape: apply it once, to the
    name as the OS gives it. The result cannot be opened as a path when it differs from the
    name: keep the original for that.
    """
    s = os.fsdecode(os.fspath(path))
    if "\\" not in s or not _NEEDS_ENCODE.search(s):
        try:
            s.encode("utf-8")
            return s
        except UnicodeEncodeError:
            pass
    return _ENCODE.sub(_encode, s)


def _undisplay(display: str) -> str:
    """The name :func:`display_path` spelled as ``display`` (lone surrogates back in place)."""
    return _DECODE.sub(_decode, display) if "\\" in display else display


def find_display_path(display: str | os.PathLike[str]) -> Path | None:
    """The existing path whose :func:`display_path` is ``display``, or None when there is none.

    The way back from a stored key to the file: the escapes :func:`display_path` writes are
    undone (``\\xNN`` back to the undecodable byte, a doubled backslash run back to one),
    and the resulting path is checked."""
    p = Path(_undisplay(os.fspath(display)))
    try:
        return p if p.exists() else None
    except (OSError, ValueError):  # a lone surrogate no file system name holds
        return None


@dataclass(frozen=True, slots=True)
class Skip:
    """A source that was not loaded, and why (``"binary"``, ``"empty"``, ``"symlink loop"``, ...).

    ``path`` and ``reason`` are valid text (see :func:`display_path`), safe to print or store.
    ``failed``: the source could not be read or loaded (unreadable, damaged, undecodable), as
    opposed to one that holds nothing to index (binary, empty, too large, a duplicate): an
    ingest reports the first kind under ``failed`` (the run is not ok) and the second under
    ``skipped``."""

    path: str
    reason: str
    failed: bool = False

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
