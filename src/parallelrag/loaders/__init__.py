"""Document loaders: files and directory trees → :class:`~parallelrag.documents.Document`.

::

    from parallelrag.loaders import load_path
    for result in load_path(["docs/", "notes.md"], exclude=["drafts/**"], text_field="body"):
        if result.skip:
            print("skipped", result.skip.path, result.skip.reason)
        else:
            for doc in result.documents: ...

* :func:`iter_sources` walks files and directories (sorted, depth first; include/exclude globs;
  hidden directories and files excluded by default; symlink loops, broken symlinks, duplicates
  and files over ``max_bytes`` reported as :class:`Skip`).
* :func:`load_file` loads one file by suffix through :data:`LOADERS` (``.txt .text .log .csv
  .tsv .md .markdown .rst .html .htm .xhtml .pdf .json .jsonl .ndjson``); other files are
  sniffed: text if they have no NUL byte in their first 8 KiB and decode, else ``"binary"``.
* :func:`load_source` reads a file once and returns a :class:`LoadResult` with the sha256 of its
  bytes; :func:`load_path` does that for a whole walk, in order, optionally in threads.

Text is decoded as UTF-8 (a BOM is stripped), then a detected fallback (see
:mod:`parallelrag.loaders.encoding`); line ends become ``\\n``. Every document's metadata holds
``mime``, ``title`` (from the document, else the file name's stem), ``bytes`` (the file's size)
and ``mtime``. Skip reasons: ``"empty"``, ``"binary"``, ``"undecodable: ..."``, ``"invalid JSON..."``,
``"no records with text field ..."``, ``"pypdf not installed ..."``, ``"invalid PDF: ..."``,
``"encrypted PDF"``, ``"loader error: ..."`` and the walk's reasons (see
:mod:`parallelrag.loaders.sources`). All functions are thread-safe.

File names that are not valid UTF-8 are loaded like any other; sources, titles and skip paths
show their undecodable bytes as ``\\xNN`` (:func:`display_path`), which keeps them storable
and tells apart names that differ only in those bytes (:func:`find_display_path` finds the
file again). A lone surrogate spelled in JSON
(``"\\udce9"``) becomes U+FFFD, counted like the replacements of bad bytes.
"""

from __future__ import annotations

from .base import Loader, LoadResult, Skip, display_path, find_display_path
from .core import (
    LOADERS,
    MIME_TYPES,
    load_bytes,
    load_file,
    load_path,
    load_source,
    loader_for,
    register_loader,
)
from .encoding import decode_text, looks_binary
from .html import html_to_text
from .sources import DEFAULT_EXCLUDES, DEFAULT_MAX_BYTES, iter_sources, walk_sources

__all__ = [
    "DEFAULT_EXCLUDES",
    "DEFAULT_MAX_BYTES",
    "LOADERS",
    "MIME_TYPES",
    "LoadResult",
    "Loader",
    "Skip",
    "decode_text",
    "display_path",
    "find_display_path",
    "html_to_text",
    "iter_sources",
    "load_bytes",
    "load_file",
    "load_path",
    "load_source",
    "loader_for",
    "looks_binary",
    "register_loader",
    "walk_sources",
]
