"""The loader registry and the load functions: one file, or whole trees, with skips reported."""

from __future__ import annotations

import hashlib
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..documents import Document
from ..errors import LoaderError
from .base import Loader, LoadResult, Skip, display_path
from .encoding import replacements
from .html import load_html
from .jsonfile import load_json, load_jsonl
from .pdf import load_pdf
from .sources import DEFAULT_EXCLUDES, DEFAULT_MAX_BYTES, PathsArg, walk_sources
from .text import load_markdown, load_rst, load_text

__all__ = ["LOADERS", "MIME_TYPES", "load_bytes", "load_file", "load_path", "load_source",
           "loader_for", "register_loader"]

#: Loaders by lower-case suffix (``".md"``); compound suffixes (``".tar.gz"``) work too, the
#: longest registered one wins. Files whose suffix is not here are sniffed: text when they have
#: no NUL byte in the first 8 KiB and decode, otherwise skipped as ``"binary"``.
LOADERS: dict[str, Loader] = {
    ".txt": load_text, ".text": load_text, ".log": load_text, ".csv": load_text,
    ".tsv": load_text,
    ".md": load_markdown, ".markdown": load_markdown, ".mdown": load_markdown,
    ".mkd": load_markdown,
    ".rst": load_rst,
    ".html": load_html, ".htm": load_html, ".xhtml": load_html,
    ".pdf": load_pdf,
    ".json": load_json,
    ".jsonl": load_jsonl, ".ndjson": load_jsonl,
}

#: ``metadata["mime"]`` for documents whose loader did not set one.
MIME_TYPES: dict[str, str] = {
    ".txt": "text/plain", ".md": "text/markdown", ".rst": "text/x-rst", ".html": "text/html",
    ".htm": "text/html", ".pdf": "application/pdf", ".json": "application/json",
    ".jsonl": "application/x-ndjson",
}


def register_loader(suffixes: str | Iterable[str], loader: Loader) -> None:
    """Register ``loader`` for one or more suffixes (``".org"`` or ``"org"``), replacing any."""
    for suffix in [suffixes] if isinstance(suffixes, str) else suffixes:
        key = suffix.lower()
        LOADERS[key if key.startswith(".") else "." + key] = loader


def loader_for(path: Path) -> Loader | None:
    """The registered loader for ``path``'s suffix (longest compound suffix first), or None."""
    suffixes = path.suffixes
    for i in range(len(suffixes)):
        loader = LOADERS.get("".join(suffixes[i:]).lower())
        if loader is not None:
            return loader
    return None


def load_bytes(path: Path, data: bytes, *, text_field: str | None = None,
               mtime: float | None = None) -> list[Document] | Skip:
    """Load already-read bytes as if they were the file at ``path``.

    Documents get ``source`` = the path and ``title`` = its stem as valid text (bytes of the
    name that are not UTF-8 written ``\\xNN``, see :func:`display_path`), so they can be stored."""
    key = display_path(path)
    raw = str(path)  # Skip spells it as key is spelled (display_path is applied once)
    if not data.strip():
        return Skip(raw, "empty")
    loader = loader_for(path) or load_text
    options: dict[str, Any] = {}
    if text_field is not None:
        options["text_field"] = text_field
    try:
        docs = loader(path, data, **options)
    except LoaderError as exc:
        return Skip(raw, exc.message, exc.failed)
    except Exception as exc:  # a damaged file must not stop an ingest of thousands
        return Skip(raw, f"loader error: {type(exc).__name__}: {exc}", True)
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        return Skip(raw, "empty")
    mime = MIME_TYPES.get(path.suffix.lower(), "text/plain")
    for doc in docs:
        if not doc.source:
            doc.source = key
        md = doc.metadata
        md.setdefault("mime", mime)
        if not md.get("title"):
            md["title"] = display_path(path.stem)
        md["bytes"] = len(data)
        md["mtime"] = mtime
    return docs


def load_source(path: str | os.PathLike[str], *, text_field: str | None = None,
                max_bytes: int | None = None) -> LoadResult:
    """Read one file once, hash its bytes and load it: the unit of work for a loader thread."""
    p = Path(path)
    key = str(p)
    try:
        st = p.stat()
    except FileNotFoundError:
        return LoadResult(key, skip=Skip(key, "broken symlink" if p.is_symlink() else "not found"))
    except OSError as exc:
        return LoadResult(key, skip=Skip(key, f"unreadable: {exc.strerror or type(exc).__name__}",
                                         True))
    if not stat.S_ISREG(st.st_mode):
        return LoadResult(key, skip=Skip(key, "not a regular file"))
    if max_bytes is not None and st.st_size > max_bytes:
        return LoadResult(key, skip=Skip(key, f"too large ({st.st_size} bytes > max_bytes {max_bytes})"))
    try:
        with open(p, "rb") as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except OSError as exc:
        return LoadResult(key, skip=Skip(key, f"unreadable: {exc.strerror or type(exc).__name__}",
                                         True))
    if max_bytes is not None and len(data) > max_bytes:  # grew since stat
        return LoadResult(key, skip=Skip(key, f"too large (> max_bytes {max_bytes})"))
    digest = hashlib.sha256(data).hexdigest()
    replacements(reset=True)
    out = load_bytes(p, data, text_field=text_field, mtime=st.st_mtime)
    replaced = replacements(reset=True)
    if isinstance(out, Skip):
        return LoadResult(key, skip=out, content_hash=digest)
    return LoadResult(key, documents=out, content_hash=digest, replacements=replaced)


def load_file(path: str | os.PathLike[str], *, text_field: str | None = None) -> list[Document] | Skip:
    """Load one file: its documents, or a :class:`Skip` saying why there are none."""
    result = load_source(path, text_field=text_field)
    return result.skip if result.skip is not None else result.documents


def load_path(paths: PathsArg, *, include: Sequence[str] | None = None,
              exclude: Sequence[str] | None = None, follow_symlinks: bool = True,
              max_bytes: int | None = DEFAULT_MAX_BYTES, text_field: str | None = None,
              on_skip: Callable[[Skip], None] | None = None,
              default_excludes: Sequence[str] = DEFAULT_EXCLUDES,
              workers: int = 1) -> Iterator[LoadResult]:
    """Walk ``paths`` (as :func:`iter_sources`) and load every file, in the walk's order.

    Every file and every skip yields one :class:`LoadResult` (skips also go to ``on_skip``).
    ``workers > 1`` loads in a thread pool with at most ``2 * workers`` files in flight; the
    order of results is unchanged.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    walk = walk_sources(paths, include=include, exclude=exclude, follow_symlinks=follow_symlinks,
                        max_bytes=max_bytes, default_excludes=default_excludes)

    def report(result: LoadResult) -> LoadResult:
        if result.skip is not None and on_skip is not None:
            on_skip(result.skip)
        return result

    if workers == 1:
        for item in walk:
            if isinstance(item, Skip):
                yield report(LoadResult(item.path, skip=item))
            else:
                yield report(load_source(item, text_field=text_field, max_bytes=max_bytes))
        return

    pending: deque[Future[LoadResult] | LoadResult] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="parallelrag-load")
    try:
        for item in walk:
            if isinstance(item, Skip):
                pending.append(LoadResult(item.path, skip=item))
            else:
                pending.append(pool.submit(load_source, item, text_field=text_field,
                                           max_bytes=max_bytes))
            while len(pending) > 2 * workers or (pending and isinstance(pending[0], LoadResult)):
                head = pending.popleft()
                yield report(head if isinstance(head, LoadResult) else head.result())
        while pending:
            head = pending.popleft()
            yield report(head if isinstance(head, LoadResult) else head.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
