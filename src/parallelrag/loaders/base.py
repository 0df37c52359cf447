"""Types shared by every loader: :class:`Skip`, :class:`LoadResult` and the :class:`Loader` protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..documents import Document

__all__ = ["LoadResult", "Loader", "Skip"]


@dataclass(frozen=True, slots=True)
class Skip:
    """A source that was not loaded, and why (``"binary"``, ``"empty"``, ``"symlink loop"``, ...)."""

    path: str
    reason: str


@dataclass(slots=True)
class LoadResult:
    """The outcome of loading one file.

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
