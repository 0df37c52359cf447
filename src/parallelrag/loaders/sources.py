"""Walking sources: files and directories → file paths, in a deterministic order.

Rules (:func:`iter_sources`):

* Files named directly are always yielded (no pattern filters them); directories are walked
  recursively, entries sorted by name at every level, depth first.
* ``include`` / ``exclude`` are glob patterns over the path relative to the directory given
  (``/``-separated) and, for patterns without ``/``, over the bare name too, so ``*.md`` matches
  at any depth. ``*`` and ``?`` stop at ``/``; ``**`` crosses directories (``docs/**/*.md``,
  ``**/drafts``); ``[abc]`` and ``[!abc]`` are classes; a trailing ``/`` restricts a pattern to
  directories; a leading ``/`` anchors it at the root. Matching is case-sensitive. ``include``
  applies to files; ``exclude`` to files and directories (an excluded directory is not entered).
* ``default_excludes`` (hidden names such as ``.git``, ``.venv``, ``.parallelrag`` or ``.env``,
  plus ``__pycache__`` and ``node_modules``) are added to ``exclude``; pass ``()`` to walk them.
* Skipped entries are reported as :class:`Skip` through ``on_skip``, never raised: ``"not
  found"`` (with a hint when the path holds glob characters: paths are not expanded),
  ``"broken symlink"``, ``"symlink loop"`` (a directory that is its own ancestor, or a
  symlink chain that never resolves), ``"duplicate of P"`` (a file or directory already reached
  through another path), ``"too large (N bytes > max_bytes M)"``, ``"not a regular file"`` (FIFOs,
  sockets, devices: opening them could block), ``"unreadable: ..."``. Entries filtered out by
  patterns, and symlinks when ``follow_symlinks`` is false, are left out silently.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .base import Skip

__all__ = ["DEFAULT_EXCLUDES", "DEFAULT_MAX_BYTES", "PathFilter", "glob_to_regex", "iter_sources"]

DEFAULT_EXCLUDES: tuple[str, ...] = (".*", "__pycache__", "node_modules")
DEFAULT_MAX_BYTES = 50_000_000

PathsArg = str | os.PathLike[str] | Iterable[str | os.PathLike[str]]


def glob_to_regex(pattern: str) -> str:
    """Translate a ``**``-aware glob into a regular expression for :func:`re.fullmatch`."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                if pattern.startswith("**/", i):
                    out.append("(?:.*/)?")
                    i += 3
                else:
                    out.append(".*")
                    i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[{'^/' if negate else ''}{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _Pattern:
    regex: re.Pattern[str]
    name_only: bool  # no '/' in the pattern: also matched against the bare name
    dir_only: bool

    def matches(self, name: str, rel: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        if self.name_only and self.regex.fullmatch(name):
            return True
        if self.regex.fullmatch(rel):
            return True
        return is_dir and self.regex.fullmatch(rel + "/") is not None


def _compile(pattern: str) -> _Pattern:
    dir_only = pattern.endswith("/") and len(pattern) > 1
    p = pattern.rstrip("/") if dir_only else pattern
    anchored = p.startswith("/")
    p = p.lstrip("/")
    return _Pattern(re.compile(glob_to_regex(p), re.DOTALL), "/" not in p and not anchored, dir_only)


class PathFilter:
    """Compiled include/exclude patterns (see the module docstring)."""

    def __init__(self, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None,
                 default_excludes: Sequence[str] = DEFAULT_EXCLUDES) -> None:
        if isinstance(include, str) or isinstance(exclude, str):
            raise TypeError("include/exclude take a sequence of patterns, not a single string")
        self.include = [_compile(p) for p in include] if include is not None else None
        self.exclude = [_compile(p) for p in (*default_excludes, *(exclude or ()))]

    def dir_ok(self, name: str, rel: str) -> bool:
        return not any(p.matches(name, rel, True) for p in self.exclude)

    def file_ok(self, name: str, rel: str) -> bool:
        if any(p.matches(name, rel, False) for p in self.exclude):
            return False
        return self.include is None or any(p.matches(name, rel, False) for p in self.include)


def _as_list(paths: PathsArg) -> list[Path]:
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _reason(exc: OSError) -> str:
    return f"unreadable: {exc.strerror or type(exc).__name__}"


def _not_found(path: str) -> str:
    """``"not found"``; for a path with glob characters (``docs/*.md``), also that paths are
    not expanded and how to select files by pattern."""
    if any(c in path for c in "*?["):
        return ("not found (paths are not glob-expanded: pass the folder with "
                "include=['*.md'] patterns)")
    return "not found"


def _too_large(size: int, max_bytes: int) -> str:
    return f"too large ({size} bytes > max_bytes {max_bytes})"


def walk_sources(paths: PathsArg, *, include: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None, follow_symlinks: bool = True,
                 max_bytes: int | None = DEFAULT_MAX_BYTES,
                 default_excludes: Sequence[str] = DEFAULT_EXCLUDES) -> Iterator[Path | Skip]:
    """Like :func:`iter_sources`, but yields each :class:`Skip` in its place in the order."""
    filt = PathFilter(include, exclude, default_excludes)
    seen_files: dict[tuple[int, int], str] = {}
    seen_dirs: dict[tuple[int, int], str] = {}

    def file_or_skip(p: Path, st: os.stat_result) -> Path | Skip | None:
        ident = (st.st_dev, st.st_ino)
        first = seen_files.get(ident)
        if first is not None:
            return None if first == str(p) else Skip(str(p), f"duplicate of {first}")
        if max_bytes is not None and st.st_size > max_bytes:
            return Skip(str(p), _too_large(st.st_size, max_bytes))
        seen_files[ident] = str(p)
        return p

    for root in _as_list(paths):
        try:
            if not follow_symlinks and root.is_symlink():
                continue
            st = root.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                yield Skip(str(root), "symlink loop")
            elif isinstance(exc, FileNotFoundError):
                yield Skip(str(root), "broken symlink" if root.is_symlink() else
                           _not_found(str(root)))
            else:
                yield Skip(str(root), _reason(exc), True)
            continue
        if stat.S_ISREG(st.st_mode):
            item = file_or_skip(root, st)
            if item is not None:
                yield item
            continue
        if not stat.S_ISDIR(st.st_mode):
            yield Skip(str(root), "not a regular file")
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen_dirs:
            if seen_dirs[ident] != str(root):
                yield Skip(str(root), f"duplicate of {seen_dirs[ident]}")
            continue
        seen_dirs[ident] = str(root)
        try:
            with os.scandir(root) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            yield Skip(str(root), _reason(exc), True)
            continue
        # Iterative depth-first walk: (directory path, relative path, identity, entries left).
        stack: list[tuple[Path, str, tuple[int, int], Iterator[os.DirEntry[str]]]] = [
            (root, "", ident, iter(entries))
        ]
        ancestors = {ident}
        while stack:
            dpath, drel, dident, remaining = stack[-1]
            entry = next(remaining, None)
            if entry is None:
                stack.pop()
                ancestors.discard(dident)
                continue
            name = entry.name
            rel = f"{drel}/{name}" if drel else name
            p = dpath / name
            try:
                is_link = entry.is_symlink()
                if is_link and not follow_symlinks:
                    continue
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                if not filt.file_ok(name, rel):
                    continue
                if exc.errno == errno.ELOOP:
                    yield Skip(str(p), "symlink loop")
                elif isinstance(exc, FileNotFoundError):
                    yield Skip(str(p), "broken symlink" if entry.is_symlink() else "not found")
                else:
                    yield Skip(str(p), _reason(exc), True)
                continue
            if stat.S_ISDIR(st.st_mode):
                if not filt.dir_ok(name, rel):
                    continue
                ident = (st.st_dev, st.st_ino)
                if ident in ancestors:
                    yield Skip(str(p), "symlink loop")
                    continue
                if ident in seen_dirs:
                    yield Skip(str(p), f"duplicate of {seen_dirs[ident]}")
                    continue
                seen_dirs[ident] = str(p)
                try:
                    with os.scandir(p) as it:
                        children = sorted(it, key=lambda e: e.name)
                except OSError as exc:
                    yield Skip(str(p), _reason(exc), True)
                    continue
                stack.append((p, rel, ident, iter(children)))
                ancestors.add(ident)
            elif not filt.file_ok(name, rel):
                continue
            elif stat.S_ISREG(st.st_mode):
                item = file_or_skip(p, st)
                if item is not None:
                    yield item
            else:
                yield Skip(str(p), "not a regular file")


def iter_sources(paths: PathsArg, *, include: Sequence[str] | None = None,
                 exclude: Sequence[str] | None = None, follow_symlinks: bool = True,
                 max_bytes: int | None = DEFAULT_MAX_BYTES,
                 on_skip: Callable[[Skip], None] | None = None,
                 default_excludes: Sequence[str] = DEFAULT_EXCLUDES) -> Iterator[Path]:
    """Yield the files under ``paths`` (files and directories) in a deterministic order.

    See the module docstring for patterns, ordering and the skip reasons passed to ``on_skip``.
    """
    for item in walk_sources(paths, include=include, exclude=exclude,
                             follow_symlinks=follow_symlinks, max_bytes=max_bytes,
                             default_excludes=default_excludes):
        if isinstance(item, Skip):
            if on_skip is not None:
                on_skip(item)
        else:
            yield item
