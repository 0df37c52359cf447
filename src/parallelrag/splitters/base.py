"""The shared base of every splitter: configuration, offsets, overlap, batches.

A splitter computes *spans* ``(start, end)`` of the input ``str``; the base turns them into
:class:`~parallelrag.documents.Chunk` objects whose ``text`` is exactly ``text[start:end]``.

Most splitters run the same greedy engine (:func:`greedy_spans`): from the current position it
takes the longest window that fits ``chunk_size`` (exactly, in characters; for token lengths the
window is placed with the token offsets of one encode of the whole text and then verified by
measuring the chunk), and cuts it at the last boundary of the best *level* found inside the
window (paragraph, line, sentence, word, ..., finally any character). Boundaries are found with
``str.rfind`` / ``bisect`` over precomputed positions, so the Python work is per chunk, not per
character. Chunks are stripped of surrounding whitespace; whitespace-only chunks are dropped.
For character lengths :func:`char_spans` runs the same rules in one loop, and for ladders that
start ``"\n\n", "\n"`` (the character and recursive defaults) a leaner loop still, which also
builds the chunks in the same pass for :meth:`LevelSplitter.split_text`.

Guarantees (tested with hypothesis):

* ``text[c.start:c.end] == c.text``, chunks in order, ``index`` 0..n-1;
* every non-whitespace character is inside some chunk;
* ``length(c.text) <= chunk_size``. The only exception: a chunk of exactly one character whose
  own length exceeds ``chunk_size`` (possible only with token lengths and a tiny chunk_size,
  e.g. an emoji that cl100k encodes as 3 byte tokens with ``chunk_size=2``);
* a chunk overlaps its predecessor by at most ``chunk_overlap`` units;
* deterministic; ``""`` or whitespace-only text gives ``[]``;
* ``ConfigError`` (a ``ValueError``) at construction for non-positive sizes or
  ``chunk_overlap >= chunk_size``; ``TypeError`` for a text that is not a ``str``.

``split_many`` runs large batches in a reused process pool (forkserver/spawn context: the library
keeps a background event-loop thread, so plain fork is unsafe); small batches stay in-process.
As with any forkserver/spawn pool, a script that calls it at import time needs the
``if __name__ == "__main__":`` guard; without it the pool fails to start and ``split_many``
falls back to in-process work for the rest of the process.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import multiprocessing
import os
import pickle
import re
import threading
from abc import ABC, abstractmethod
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import repeat
from typing import Any

from ..documents import Chunk
from ..errors import ConfigError
from .length import LengthFunction, LengthSpec, resolve_length

__all__ = [
    "PARALLEL_MIN_CHARS",
    "HardLevel",
    "Level",
    "LiteralLevel",
    "PositionsLevel",
    "Span",
    "Splitter",
    "char_spans",
    "greedy_spans",
]

Span = tuple[int, int, "dict[str, Any] | None"]

# Crossover, measured on the 2-core dev machine (warm forkserver pool of 2, python-docs pages,
# chunk 1000, best of 3; other jobs were running, load ~5):
#   SentenceSplitter  0.3 MB: pool 0.51x of in-process, 0.5 MB 0.79x, 1.0 MB 0.73x,
#                     2.4 MB 1.74x, 4.0 MB 1.30x
#   RecursiveSplitter 0.3 MB 0.20x, 1.0 MB 0.42x, 2.4 MB 0.53x, 4.0 MB 0.51x
# The pool pays for pickling every text to a worker (~60-100 MB/s through the pipe), so it only
# wins for splitters that spend more than that per byte: the sentence splitter and any splitter
# measuring in tokens. Threshold for those: 2 M characters. Recursive/character/markdown in
# characters split at ~100 MB/s in-process, faster than the texts can be shipped, so they stay
# in-process (their threshold is infinite) unless ``parallel_min_chars`` is set.
PARALLEL_MIN_CHARS = 2_000_000
_NEVER = 1 << 62

_NONSPACE = re.compile(r"\S")
# exactly the characters for which ``str.isspace()`` is true (checked by a test): a set lookup
# is cheaper than a method call in the per-chunk loops
_SPACE = frozenset(
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


# --------------------------------------------------------------------------- levels


class Level:
    """A kind of boundary. A *cut* ``x`` means a chunk may end at ``x`` (exclusive)."""

    hard = False

    def last_cut(self, text: str, lo: int, hi: int) -> int:
        """Largest cut ``x`` with ``lo < x <= hi``, or -1."""
        raise NotImplementedError

    def first_cut(self, text: str, lo: int, hi: int) -> int:
        """Smallest cut ``x`` with ``lo <= x <= hi``, or -1."""
        raise NotImplementedError


class LiteralLevel(Level):
    """Cut right after each occurrence of a literal separator (kept in the left chunk)."""

    def __init__(self, sep: str) -> None:
        if not sep:
            raise ConfigError("separator must be a non-empty string")
        self.sep = sep
        self.n = len(sep)

    def last_cut(self, text: str, lo: int, hi: int) -> int:
        start = lo - self.n + 1
        p = text.rfind(self.sep, start if start > 0 else 0, hi)
        return -1 if p < 0 else p + self.n

    def first_cut(self, text: str, lo: int, hi: int) -> int:
        start = lo - self.n
        p = text.find(self.sep, start if start > 0 else 0, hi)
        return -1 if p < 0 else p + self.n

    def __repr__(self) -> str:
        return f"LiteralLevel({self.sep!r})"


class PositionsLevel(Level):
    """Cuts at precomputed sorted positions (sentence starts, block boundaries, ...)."""

    def __init__(self, positions: Sequence[int]) -> None:
        self.pos = positions

    def last_cut(self, text: str, lo: int, hi: int) -> int:
        k = bisect_right(self.pos, hi) - 1
        if k >= 0 and self.pos[k] > lo:
            return self.pos[k]
        return -1

    def first_cut(self, text: str, lo: int, hi: int) -> int:
        k = bisect_left(self.pos, lo)
        if k < len(self.pos) and self.pos[k] <= hi:
            return self.pos[k]
        return -1


class HardLevel(Level):
    """Any character boundary: the last resort."""

    hard = True

    def last_cut(self, text: str, lo: int, hi: int) -> int:
        return hi if hi > lo else -1

    def first_cut(self, text: str, lo: int, hi: int) -> int:
        return lo if lo <= hi else -1


# --------------------------------------------------------------------------- measuring


class Measure:
    """Measures spans of one text in the splitter's length unit."""

    def __init__(self, text: str, length: LengthFunction, starts: list[int] | None = None) -> None:
        self.text = text
        self.length = length
        self.chars = length.is_chars
        self.starts: list[int] | None = None
        self.ratio = 1.0
        if not self.chars:
            self.starts = starts if starts is not None else length.token_starts(text)
            if self.starts is None:
                total = length(text)
                self.ratio = len(text) / total if total > 0 else float(len(text) + 1)

    def size(self, a: int, b: int) -> int:
        if self.chars:
            return b - a
        return self.length(self.text[a:b])

    def fits(self, a: int, b: int, units: int) -> bool:
        if self.chars:
            return b - a <= units
        return self.length(self.text[a:b]) <= units

    def limit(self, s: int, hi: int, units: int) -> int:
        """An end ``e`` in ``(s, hi]`` such that ``[s, e)`` fits (``s + 1`` if nothing does)."""
        if self.chars:
            e = s + units
            return hi if e > hi else e
        starts = self.starts
        if starts is not None:
            i = bisect_left(starts, s)
            j = i + units
            guess = hi if j >= len(starts) else min(hi, starts[j])
        else:
            step = int(units * self.ratio)
            guess = min(hi, s + (step if step > 0 else 1))
        if guess <= s:
            guess = s + 1
        if self.fits(s, guess, units):
            if starts is None:
                # a callable without offsets: grow a couple of times towards the target
                for _ in range(3):
                    if guess >= hi:
                        break
                    m = self.size(s, guess)
                    if m >= units * 0.9:
                        break
                    g2 = min(hi, s + int((guess - s) * units / (m if m > 0 else 0.5)) + 1)
                    if g2 <= guess or not self.fits(s, g2, units):
                        break
                    guess = g2
            return guess
        ok, bad = s, guess
        while bad - ok > 1:
            mid = (ok + bad) // 2
            if self.fits(s, mid, units):
                ok = mid
            else:
                bad = mid
        return ok if ok > s else s + 1

    def back(self, x: int, lo: int, units: int) -> int:
        """A start ``s`` in ``[lo, x]`` such that ``[s, x)`` is at most ``units`` long."""
        if self.chars:
            s = x - units
            return lo if s < lo else s
        if self.starts is not None:
            i = bisect_left(self.starts, x)
            s = self.starts[i - units] if i - units >= 0 else 0
        else:
            s = x - int(units * self.ratio)
        s = max(s, lo)
        if s < x and not self.fits(s, x, units):
            return x
        return s


# --------------------------------------------------------------------------- the engine


def _rstrip_end(text: str, a: int, b: int) -> int:
    t = text[a:b]
    return a + len(t.rstrip())


def greedy_spans(
    text: str,
    lo: int,
    hi: int,
    levels: Sequence[Level],
    chunk_size: int,
    measure: Measure,
    overlap: Callable[[int, int, int], int] | None = None,
    fences: Sequence[tuple[int, int]] | tuple[Sequence[int], Sequence[int]] = (),
) -> list[tuple[int, int]]:
    """Greedy chunking of ``text[lo:hi]``; returns stripped, non-empty ``(start, end)`` spans.

    ``levels`` are tried in order for each cut; the last one should be :class:`HardLevel`.
    ``overlap(a, x, level)`` gives where the next chunk starts after a chunk ``[a, x)`` cut at
    ``levels[level]`` (a value ``<= a`` or ``>= x`` means no overlap). ``fences`` are sorted,
    disjoint ranges no cut may fall strictly inside (or a tuple ``(starts, ends)`` of two lists).
    """
    fstarts: Sequence[int]
    fends: Sequence[int]
    if len(fences) == 2 and isinstance(fences, tuple) and isinstance(fences[0], list):
        fstarts, fends = fences  # already split into (starts, ends): no per-call copy
    else:
        fstarts = [f[0] for f in fences]
        fends = [f[1] for f in fences]

    def cut(level: Level, floor: int, e: int) -> int:
        h = e
        while True:
            y = level.last_cut(text, floor, h)
            if y < 0 or not fstarts:
                return y
            k = bisect_right(fstarts, y - 1) - 1
            if k >= 0 and fends[k] > y:
                h = fstarts[k]
                if h <= floor:
                    return -1
                continue
            return y

    def best(floor: int, e: int) -> tuple[int, int]:
        for idx, level in enumerate(levels):
            y = cut(level, floor, e)
            if y > floor:
                return y, idx
        return e, len(levels) - 1  # every cut would fall inside a fence: split it anyway

    def attempt(s: int, floor: int) -> tuple[int, int, int] | None:
        """(cut, level, stripped end) for a chunk starting at ``s``; None if it cannot fit."""
        e = measure.limit(s, hi, chunk_size)
        lower = s if s > floor else floor
        if e <= lower:
            return None
        while True:
            if e >= hi:
                x, lvl = hi, -1
            else:
                x, lvl = best(lower, e)
            b = _rstrip_end(text, s, x)
            if measure.chars or b <= s or measure.fits(s, b, chunk_size):
                return x, lvl, b
            if s < floor:
                return None
            if x <= lower + 1:
                return x, lvl, b  # a single character longer than chunk_size: the exception
            e = x - 1

    spans: list[tuple[int, int]] = []
    floor = lo
    prev_b = lo
    s = lo
    while True:
        m = _NONSPACE.search(text, s, hi)
        if m is None:
            break
        s = m.start()
        res: tuple[int, int, int] | None = None
        if s < floor:
            res = attempt(s, floor)
            if res is None or res[2] <= prev_b or res[1] > 0:
                # the overlapping start may cost a better cut: compare with no overlap
                m2 = _NONSPACE.search(text, floor, hi)
                if m2 is None:
                    break  # nothing new after floor
                s2 = m2.start()
                alt = attempt(s2, s2)
                if res is None or res[2] <= prev_b or (alt is not None and alt[1] < res[1]):
                    res, s = alt, s2
        else:
            res = attempt(s, s)
        assert res is not None
        x, lvl, b = res
        if b > s:
            spans.append((s, b))
            prev_b = b
        floor = x
        if x >= hi:
            break
        nxt = x
        if overlap is not None:
            o = overlap(s, x, lvl)
            if s < o < x:
                k = bisect_right(fstarts, o - 1) - 1
                if k >= 0 and fends[k] > o:  # never start inside a fence
                    o = fends[k] if fends[k] < x else x
                nxt = o
        s = nxt
    return spans


_Plan = tuple[
    tuple[tuple[str, int], ...], tuple[tuple[int, str, int], ...], tuple[int, ...], tuple[int, ...]
]
_PLANS: dict[tuple[str, ...], _Plan] = {}


def _plan(seps: Sequence[str]) -> _Plan:
    """Per separator ladder, computed once: ``(sep, len)``, the levels after the first as
    ``(level, sep, len)``, lengths, and each separator's length without trailing whitespace."""
    key = tuple(seps)
    plan = _PLANS.get(key)
    if plan is None:
        seplens = tuple((sep, len(sep)) for sep in key)
        rest = tuple((idx, sep, n) for idx, (sep, n) in enumerate(seplens) if idx > 0)
        plan = (seplens, rest, tuple(n for _, n in seplens), tuple(len(s.rstrip()) for s in key))
        if len(_PLANS) < 256:
            _PLANS[key] = plan
    return plan


def char_spans(
    text: str,
    lo: int,
    hi: int,
    seps: Sequence[str],
    chunk_size: int,
    units: int,
    fences: tuple[list[int], list[int]] | None = None,
) -> list[Span]:
    """:func:`greedy_spans` + :func:`unit_overlap` for character lengths and literal separators
    (then any character), in one loop: the same spans, without the per-chunk layers of calls
    (level objects, closures, :class:`Measure`). ``fences`` as ``(starts, ends)``, as in
    :func:`greedy_spans`. Spans come as ``(start, end, None)``.

    A ladder that starts with ``"\\n\\n", "\\n"`` (the character and recursive defaults) and has
    no fences runs :func:`_para_engine`; any other runs :func:`_char_spans_general`. Both give
    the same spans (tested)."""
    if (
        (fences is None or not fences[0])
        and len(seps) >= 2
        and seps[0] == "\n\n"
        and seps[1] == "\n"
    ):
        spans: list[Span] = _para_engine(text, lo, hi, seps, chunk_size, units, False)
        return spans
    return _char_spans_general(text, lo, hi, seps, chunk_size, units, fences)


def _chunk_fields_ok() -> bool:
    """True if a :class:`Chunk` is fully made by setting its five fields (what the dataclass
    ``__init__`` does), so :func:`_para_engine` may build chunks without calling it."""
    try:
        names = tuple(f.name for f in dataclasses.fields(Chunk))
        probe = object.__new__(Chunk)
        probe.text, probe.start, probe.end, probe.index, probe.metadata = "ab", 0, 2, 0, {}
    except Exception:
        return False
    return (
        names == ("text", "start", "end", "index", "metadata")
        and not hasattr(Chunk, "__post_init__")
        and hasattr(Chunk, "__slots__")
        and probe == Chunk("ab", 0, 2, 0, {})
    )


_FAST_CHUNKS = _chunk_fields_ok()


def _para_engine(
    text: str,
    lo: int,
    hi: int,
    seps: Sequence[str],
    chunk_size: int,
    units: int,
    build: bool,
) -> list[Any]:
    """:func:`_char_spans_general` without fences for a ladder ``"\n\n", "\n", *rest``: the
    same spans, with fewer calls and steps per chunk. Returns spans, or with ``build`` the
    chunks themselves (empty metadata, ``index`` from 0), made in the same loop.

    * The two first levels come from one single-character search: the last ``"\n"`` of a
      window (``str.rfind`` of one character is a ``memrchr``) either completes a ``"\n\n"``
      with the character before it (then that is the last ``"\n\n"``: a later one would hold
      a later ``"\n"``), or the last ``"\n\n"`` lies before it (one more ``rfind``, over that
      shorter range), or there is none and that ``"\n"`` is the line-level cut. No ``"\n"``
      means neither level has a cut. The overlap's first ``"\n\n"`` / ``"\n"`` is found the
      same way from the first ``"\n"`` of its range.
    * The common chunk (cut at a ``"\n\n"``, ending after the previous one) takes a short path
      that also decides with one ``find`` whether an overlap follows.
    * Where an overlapping start gives a worse cut, only the part of the window from the floor
      that the first search did not cover is searched for a better level (the full chunk
      from the floor is computed only when it wins).
    * Chunks (with ``build``) are made by setting their five fields on objects allocated in
      blocks, which is what the dataclass ``__init__`` does (checked at import, see
      :func:`_chunk_fields_ok`), without a Python call per chunk."""
    seplens, rest, lens, keep = _plan(seps)
    hard = len(seplens)  # the level index of "any character"
    # (level, sep, len, len without trailing whitespace) from the third level on
    rest2 = tuple((idx, sep, n, keep[idx]) for idx, sep, n in rest[1:])
    # the third level on its own (n2 == 0: none), and the levels after it
    _, sep2, n2, k2 = rest2[0] if rest2 else (2, "", 0, 0)
    rest3 = rest2[1:]
    rfind = text.rfind
    find = text.find
    search = _NONSPACE.search
    space = _SPACE
    new = object.__new__
    chunk_cls = Chunk

    def rstrip_to(s: int, q: int) -> int:
        """``s + len(text[s:q].rstrip())``, looking at a few characters only where possible."""
        w = q - 24
        if w > s:
            r = len(text[w:q].rstrip())
            if r:
                return w + r
            q = w  # the last 24 characters are all whitespace
        return s + len(text[s:q].rstrip())

    def stripped_end(s: int, x: int, lvl: int) -> int:
        """``s + len(text[s:x].rstrip())`` for a cut ``x`` at level ``lvl``."""
        if 0 <= lvl < hard:  # x is right after separator lvl, which starts at p
            p = x - lens[lvl]
            k = keep[lvl]
            if k:
                if p >= s:
                    return p + k
            elif p > s:
                return p if text[p - 1] not in space else rstrip_to(s, p)
        elif text[x - 1] not in space:
            return x
        return rstrip_to(s, x)

    def attempt(s: int) -> tuple[int, int, int]:
        """(cut, level, stripped end) of a chunk starting at ``s`` (no overlap floor)."""
        e = s + chunk_size
        if e >= hi:
            x, lvl = hi, -1
        else:
            x, lvl = e, hard
            for idx, (sep, n) in enumerate(seplens):
                st = s - n + 1
                p = rfind(sep, st if st > 0 else 0, e)
                if p >= 0:
                    x, lvl = p + n, idx
                    break
        return x, lvl, stripped_end(s, x, lvl)

    out: list[Any] = []
    append = out.append
    floor = lo
    prev_b = lo
    s = lo
    i = cap = 0
    # the first block of chunk objects holds about as many as the text will give (a short text
    # needs one or two; blocks of 64 follow where the estimate falls short)
    first = (hi - lo) // (chunk_size - units if chunk_size > units else 1) + 2
    block = first if first < 64 else 64
    while s < hi:
        if text[s] in space:
            m = search(text, s, hi)
            if m is None:
                break
            s = m.start()
        e = s + chunk_size
        overlapped = False  # set where the short path below leaves an overlap to place
        if e < hi:
            lower = floor if s < floor else s
            # the last "\n" in [lower, e) (-3: the window ends before the floor)
            q = rfind("\n", lower, e) if e > lower else -3
            if q > 0 and text[q - 1] == "\n":
                # the common case: a "\n\n" at [q - 1, q + 1) is the last in the window (its
                # second "\n" is the window's last one). text[s] is not whitespace, so q - 1 > s
                # and the chunk [s, b) is not empty.
                p = q - 1
                if text[p - 1] not in space:
                    b = p
                elif p - 1 > s and text[p - 2] not in space:
                    b = p - 1
                else:
                    b = rstrip_to(s, p)
                # from an overlapping start the chunk must end after the previous one (else
                # the general path compares with the chunk from the floor); from s >= floor
                # it always does
                if b > prev_b:
                    x = q + 1
                    if build:
                        if i == cap:  # chunk objects are made in blocks (a C loop)
                            out += map(new, repeat(chunk_cls, block))
                            cap += block
                            block = 64
                        c = out[i]
                        c.text = text[s:b]
                        c.start = s
                        c.end = b
                        c.index = i
                        c.metadata = {}
                        i += 1
                    else:
                        append((s, b, None))
                    prev_b = b
                    floor = x
                    if units <= 0:
                        s = x
                        continue
                    s0 = x - units
                    if s0 <= s:
                        s0 = s + 1
                    st = s0 - 1  # >= s >= 0
                    # the "\n" at x - 2 lies in [st, x - 1): with none before b - 1, the
                    # overlap would start at or after b (see below), i.e. there is none
                    q = find("\n", st, b - 1)
                    if q < 0:
                        s = x
                        continue
                    lvl = 0
                    overlapped = True
        if not overlapped:
            if e >= hi:
                x = hi
                lvl = -1
                b = hi if text[hi - 1] not in space else rstrip_to(s, hi)
            else:
                if q == -3:
                    x = lvl = 0
                    b = -1  # no chunk from s fits between floor and the window's end
                else:
                    if q >= 0:
                        if q > 0 and text[q - 1] == "\n":
                            p = q - 1
                            x = q + 1
                            lvl = 0
                        else:
                            st = lower - 1
                            p = rfind("\n\n", st if st > 0 else 0, q)
                            if p >= 0:
                                x = p + 2
                                lvl = 0
                            else:
                                p = q
                                x = q + 1
                                lvl = 1
                        # [p, x) is the (whitespace-only) separator: strip what precedes it
                        if p > s:
                            if text[p - 1] not in space:
                                b = p
                            elif p - 1 > s and text[p - 2] not in space:
                                b = p - 1
                            else:
                                b = rstrip_to(s, p)
                        else:
                            b = rstrip_to(s, x)
                    else:
                        # no "\n" in the window: the third level (written out), then the rest
                        b = -2
                        p = -1
                        if n2:
                            st = lower - n2 + 1
                            p = rfind(sep2, st if st > 0 else 0, e)
                        if p >= 0:
                            x = p + n2
                            lvl = 2
                            # the common stripped ends inline (see stripped_end)
                            if k2:
                                if p >= s:
                                    b = p + k2
                            elif p > s and text[p - 1] not in space:
                                b = p
                        else:
                            x = e
                            lvl = hard
                            for idx, sep, n, k in rest3:
                                st = lower - n + 1
                                p = rfind(sep, st if st > 0 else 0, e)
                                if p >= 0:
                                    x = p + n
                                    lvl = idx
                                    if k:
                                        if p >= s:
                                            b = p + k
                                    elif p > s and text[p - 1] not in space:
                                        b = p
                                    break
                        if b == -2:
                            b = stripped_end(s, x, lvl)
            if s < floor and (b < 0 or b <= prev_b or lvl > 0):
                # the overlapping start may cost a better cut: compare with no overlap
                if text[floor] not in space:
                    s2 = floor
                else:
                    m2 = search(text, floor, hi)
                    if m2 is None:
                        break
                    s2 = m2.start()
                if b < 0 or b <= prev_b:
                    x, lvl, b = attempt(s2)
                    s = lower = s2
                else:
                    # Only a cut at a better level than ``lvl`` makes the chunk from s2 win.
                    # None lies in (floor, e] (the search above), so look in
                    # (max(e, s2), s2 + size].
                    e2 = s2 + chunk_size
                    better = e2 >= hi
                    if not better:
                        a2 = e if e > s2 else s2
                        if lvl == 1:
                            st = a2 - 1
                            better = find("\n\n", st if st > 0 else 0, e2) >= 0
                        else:
                            better = find("\n", a2, e2) >= 0
                            if not better and lvl > 2:
                                for idx, sep, n, _ in rest2:
                                    if idx >= lvl:
                                        break
                                    st = a2 - n + 1
                                    if find(sep, st if st > 0 else 0, e2) >= 0:
                                        better = True
                                        break
                    if better:
                        x, lvl, b = attempt(s2)
                        s = lower = s2
            if b > s:
                if build:
                    if i == cap:
                        out += map(new, repeat(chunk_cls, block))
                        cap += block
                        block = 64
                    c = out[i]
                    c.text = text[s:b]
                    c.start = s
                    c.end = b
                    c.index = i
                    c.metadata = {}
                    i += 1
                else:
                    append((s, b, None))
                prev_b = b
            floor = x
            if x >= hi:
                break
            if units <= 0:
                s = x
                continue
            # unit_overlap: start at the first boundary inside the last ``units`` characters
            s0 = x - units
            if s0 <= s:
                s0 = s + 1
            if s0 >= x:
                s = x
                continue
            st = s0 - 1
            # a cut below the line levels had no "\n" in [lower, e), e >= x
            q = -1 if lvl > 1 and st >= lower else find("\n", st if st > 0 else 0, x - 1)
        # q: the first "\n" in [max(st, 0), x - 1), or -1
        if q >= 0:
            # the first "\n\n" starts at q - 1 (only where that is just before the range of
            # "\n"), at q, or later; failing that, the "\n" at q
            o = q + 1
            if not (q == st and q > 0 and text[q - 1] == "\n"):
                if q + 2 < x and text[q + 1] == "\n":
                    o = q + 2
                elif q + 4 <= x:
                    p = find("\n\n", q + 1, x - 1)
                    if p >= 0:
                        o = p + 2
        else:
            o = -1
            if n2:
                st = s0 - n2
                p = find(sep2, st if st > 0 else 0, x - 1)
                if p >= 0:
                    o = p + n2
            if o < 0:
                for _, sep, n, _ in rest3:
                    st = s0 - n
                    p = find(sep, st if st > 0 else 0, x - 1)
                    if p >= 0:
                        o = p + n
                        break
                if o < 0:
                    o = s0 if lvl == hard else x
        # [b, x) is whitespace: an overlap starting at or after b would be whitespace only, so
        # the next chunk starts at x
        if s < o < b:
            if text[o] not in space:
                s = o
                continue
            if o == x - 1:  # a whitespace-only overlap: the next chunk starts at x
                s = x
                continue
            m = search(text, o, x)  # the overlap may be whitespace only
            if m is not None:
                s = m.start()
                continue
        s = x
    if build:
        del out[i:]  # the unused chunk objects of the last block
    return out


def _char_spans_general(
    text: str,
    lo: int,
    hi: int,
    seps: Sequence[str],
    chunk_size: int,
    units: int,
    fences: tuple[list[int], list[int]] | None = None,
) -> list[Span]:
    """:func:`greedy_spans` + :func:`unit_overlap` for character lengths and literal separators
    (then any character), in one loop: the same spans, without the per-chunk layers of calls
    (level objects, closures, :class:`Measure`). ``fences`` as ``(starts, ends)``, as in
    :func:`greedy_spans`. Spans come as ``(start, end, None)``.

    Per chunk this costs one ``str.rfind`` for the cut (scanning back from the window's end to
    the cut only), a bounded look at the characters before the cut for trailing whitespace, and
    with overlap one or two ``str.find`` over the last ``units`` characters."""
    seplens, rest, lens, keep = _plan(seps)
    hard = len(seplens)  # the level index of "any character"
    if hard:
        sep0, n0 = seplens[0]
        k0 = keep[0]
    else:
        sep0, n0, k0 = "", 0, 0
    rfind = text.rfind
    find = text.find
    search = _NONSPACE.search
    fstarts, fends = fences if fences is not None else ([], [])

    def rstrip_to(s: int, q: int) -> int:
        """``s + len(text[s:q].rstrip())``, looking at a few characters only where possible."""
        w = q - 24
        if w > s:
            r = len(text[w:q].rstrip())
            if r:
                return w + r
            q = w  # the last 24 characters are all whitespace
        return s + len(text[s:q].rstrip())

    def fenced_cut(lower: int, e: int, first: int = 0) -> tuple[int, int]:
        """The best cut in ``(lower, e]`` that falls inside no fence, and its level (levels
        before ``first`` are known to have no cut in the window)."""
        for idx in range(first, hard + 1):
            h = e
            while True:
                if idx < hard:
                    sep, n = seplens[idx]
                    st = lower - n + 1
                    p = rfind(sep, st if st > 0 else 0, h)
                    y = p + n if p >= 0 else -1
                else:
                    y = h if h > lower else -1
                if y < 0:
                    break
                k = bisect_right(fstarts, y - 1) - 1
                if k >= 0 and fends[k] > y:
                    h = fstarts[k]
                    if h <= lower:
                        y = -1
                        break
                    continue
                break
            if y > lower:
                return y, idx
        return e, hard  # every cut would fall inside a fence: split it anyway

    def stripped_end(s: int, x: int, lvl: int) -> int:
        """``s + len(text[s:x].rstrip())`` for a cut ``x`` at level ``lvl``."""
        if 0 <= lvl < hard:  # x is right after separator lvl, which starts at p
            p = x - lens[lvl]
            k = keep[lvl]
            if k:
                if p >= s:
                    return p + k
            elif p > s:
                # a whitespace-only separator: strip what precedes it
                return p if not text[p - 1].isspace() else rstrip_to(s, p)
        elif not text[x - 1].isspace():
            return x
        return rstrip_to(s, x)

    def attempt(s: int) -> tuple[int, int, int]:
        """(cut, level, stripped end) of a chunk starting at ``s`` (no overlap floor)."""
        e = s + chunk_size
        if e >= hi:
            x, lvl = hi, -1
        elif fstarts:
            x, lvl = fenced_cut(s, e)
        else:
            x, lvl = e, hard
            for idx, (sep, n) in enumerate(seplens):
                st = s - n + 1
                p = rfind(sep, st if st > 0 else 0, e)
                if p >= 0:
                    x, lvl = p + n, idx
                    break
        return x, lvl, stripped_end(s, x, lvl)

    space = _SPACE
    spans: list[Span] = []
    append = spans.append
    floor = lo
    prev_b = lo
    s = lo
    while s < hi:
        if text[s] in space:
            m = search(text, s, hi)
            if m is None:
                break
            s = m.start()
        e = s + chunk_size
        if e >= hi:
            x = hi
            lvl = -1
            b = hi if text[hi - 1] not in space else rstrip_to(s, hi)
        else:
            lower = floor if s < floor else s
            if e <= lower:
                x = lvl = 0
                b = -1  # no chunk from s fits between floor and the window's end
            else:
                # the common case, inline: the last first-level separator in the window
                p = -1
                if n0:
                    st = lower - n0 + 1
                    p = rfind(sep0, st if st > 0 else 0, e)
                if fstarts:
                    if p >= 0:
                        k = bisect_right(fstarts, p + n0 - 1) - 1
                        if k >= 0 and fends[k] > p + n0:
                            p = -2  # the cut falls inside a fence
                    if p < 0:
                        x, lvl = fenced_cut(lower, e, 1 if p == -1 and n0 else 0)
                        b = stripped_end(s, x, lvl)
                if p >= 0:
                    x = p + n0
                    lvl = 0
                    if k0:
                        b = p + k0 if p >= s else rstrip_to(s, x)
                    elif p > s:
                        # a whitespace-only separator: strip the whitespace before it (often
                        # none or one character, checked inline)
                        if text[p - 1] not in space:
                            b = p
                        elif p - 1 > s and text[p - 2] not in space:
                            b = p - 1
                        else:
                            b = rstrip_to(s, p)
                    else:
                        b = rstrip_to(s, x)
                elif not fstarts:
                    x = e
                    lvl = hard
                    for idx, sep, n in rest:
                        st = lower - n + 1
                        p = rfind(sep, st if st > 0 else 0, e)
                        if p >= 0:
                            x = p + n
                            lvl = idx
                            break
                    b = stripped_end(s, x, lvl)
        if s < floor and (b < 0 or b <= prev_b or lvl > 0):
            # the overlapping start may cost a better cut: compare with no overlap
            m2 = search(text, floor, hi)
            if m2 is None:
                break
            s2 = m2.start()
            alt = attempt(s2)
            if b < 0 or b <= prev_b or alt[1] < lvl:
                x, lvl, b = alt
                s = s2
        if b > s:
            append((s, b, None))
            prev_b = b
        floor = x
        if x >= hi:
            break
        if units > 0:
            # unit_overlap: start at the first boundary inside the last ``units`` characters
            s0 = x - units
            if s0 <= s:
                s0 = s + 1
            if s0 < x:
                o = -1
                if n0:
                    st = s0 - n0
                    p = find(sep0, st if st > 0 else 0, x - 1)
                    if p >= 0:
                        o = p + n0
                    else:
                        for _, sep, n in rest:
                            st = s0 - n
                            p = find(sep, st if st > 0 else 0, x - 1)
                            if p >= 0:
                                o = p + n
                                break
                if o < 0:
                    o = s0 if lvl == hard else x
                # [b, x) is whitespace: an overlap starting at or after b would be whitespace
                # only, so the next chunk starts at x
                if s < o < b:
                    if fstarts:
                        k = bisect_right(fstarts, o - 1) - 1
                        if k >= 0 and fends[k] > o:  # never start inside a fence
                            o = fends[k] if fends[k] < x else x
                            if o >= x:
                                s = x
                                continue
                    if not text[o].isspace():
                        s = o
                        continue
                    if o == x - 1:  # a whitespace-only overlap: the next chunk starts at x
                        s = x
                        continue
                    m = search(text, o, x)  # the overlap may be whitespace only
                    if m is not None:
                        s = m.start()
                        continue
        s = x
    return spans


def unit_overlap(
    text: str, levels: Sequence[Level], measure: Measure, units: int
) -> Callable[[int, int, int], int] | None:
    """Overlap of at most ``units``: start at the first good boundary inside the tail."""
    if units <= 0:
        return None

    def choose(a: int, x: int, lvl: int) -> int:
        s0 = measure.back(x, a + 1, units)
        if s0 >= x:
            return x
        for level in levels:
            if level.hard:
                break
            y = level.first_cut(text, s0, x - 1)
            if y >= 0:
                return y
        return s0 if lvl >= 0 and levels[lvl].hard else x

    def start(a: int, x: int, lvl: int) -> int:
        y = choose(a, x, lvl)
        if measure.chars or y >= x:
            return y
        # measure the exact overlap region: the next chunk starts at the first non-space
        # character from y, the previous one ends at x minus trailing whitespace
        m = _NONSPACE.search(text, y, x)
        if m is None:
            return x
        b = _rstrip_end(text, a, x)
        if m.start() < b and not measure.fits(m.start(), b, units):
            return x
        return y

    return start


# --------------------------------------------------------------------------- process pool

_pool_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_key: tuple[int, int] | None = None
_pool_disabled = False


def _get_pool(workers: int) -> ProcessPoolExecutor:
    global _pool, _pool_key
    with _pool_lock:
        key = (os.getpid(), workers)
        if _pool is None or _pool_key != key:
            if _pool is not None and _pool_key is not None and _pool_key[0] == os.getpid():
                _pool.shutdown(wait=False, cancel_futures=True)
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            _pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
            _pool_key = key
        return _pool


def _shutdown_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None and _pool_key is not None and _pool_key[0] == os.getpid():
            _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


atexit.register(_shutdown_pool)


def _split_batch(splitter: Splitter, texts: list[str]) -> list[list[Span]]:
    return [splitter._spans(t) for t in texts]


# --------------------------------------------------------------------------- the base class


def _check_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, not {value!r}")
    return value


class Splitter(ABC):
    """Base of all splitters: validation, Chunk construction, batches (sync and async)."""

    #: below this many characters in a batch, ``split_many`` stays in-process (None: the
    #: measured default for this splitter and length, see PARALLEL_MIN_CHARS)
    parallel_min_chars: int | None = None
    #: True where the in-process split is cheaper than shipping texts to a worker (chars only)
    _cheap_per_char: bool = False

    def _parallel_threshold(self) -> int:
        if self.parallel_min_chars is not None:
            return self.parallel_min_chars
        if self._cheap_per_char and self.length.is_chars:
            return _NEVER
        return PARALLEL_MIN_CHARS

    def __init__(self, chunk_size: int, chunk_overlap: int, length: LengthSpec = "chars") -> None:
        self.chunk_size = _check_int("chunk_size", chunk_size)
        self.chunk_overlap = _check_int("chunk_overlap", chunk_overlap)
        if self.chunk_size <= 0:
            raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
        if self.chunk_overlap < 0:
            raise ConfigError(f"chunk_overlap must be >= 0, got {chunk_overlap}")
        if self.chunk_overlap >= self.chunk_size:
            raise ConfigError(
                f"chunk_overlap ({chunk_overlap}) must be smaller than chunk_size ({chunk_size})"
            )
        self.length: LengthFunction = resolve_length(length)
        self._picklable: bool | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(chunk_size={self.chunk_size}, "
            f"chunk_overlap={self.chunk_overlap}, length={self.length.name!r})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_picklable"] = None
        return state

    # -- to implement
    @abstractmethod
    def _spans(self, text: str) -> list[Span]:
        """Spans ``(start, end, extra_metadata_or_None)`` of ``text``, in order.

        An extra metadata dict becomes the chunk's own ``metadata`` (copied only when
        ``split_text`` got metadata too): return a fresh dict per span, never a shared one."""

    # -- public API
    def split_text(self, text: str, metadata: Mapping[str, Any] | None = None) -> list[Chunk]:
        """Split one text. ``metadata`` is copied into every chunk's metadata."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        return self._build(text, self._spans(text), metadata)

    def split_many(
        self,
        texts: Sequence[str],
        workers: int | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[list[Chunk]]:
        """Split many texts; results in input order. Large batches use a process pool."""
        texts = self._check_texts(texts)
        metas = self._check_metadatas(texts, metadatas)
        spans = self._spans_many(texts, workers)
        return [self._build(t, sp, md) for t, sp, md in zip(texts, spans, metas, strict=True)]

    async def asplit_many(
        self,
        texts: Sequence[str],
        workers: int | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[list[Chunk]]:
        """:meth:`split_many` off the event loop (in a worker thread)."""
        return await asyncio.to_thread(self.split_many, texts, workers, metadatas)

    # -- internals
    @staticmethod
    def _check_texts(texts: Sequence[str]) -> list[str]:
        out = list(texts)
        for t in out:
            if not isinstance(t, str):
                raise TypeError(f"texts must be str, not {type(t).__name__}")
        return out

    @staticmethod
    def _check_metadatas(
        texts: Sequence[str], metadatas: Sequence[Mapping[str, Any] | None] | None
    ) -> list[Mapping[str, Any] | None]:
        if metadatas is None:
            return [None] * len(texts)
        metas = list(metadatas)
        if len(metas) != len(texts):
            raise ConfigError(
                f"metadatas has {len(metas)} entries for {len(texts)} texts"
            )
        return metas

    @staticmethod
    def _build(text: str, spans: list[Span], metadata: Mapping[str, Any] | None) -> list[Chunk]:
        if not metadata:
            # fast path: a fresh dict per chunk (never shared); the splitter's own ``extra``
            # dicts are built per span, so they are taken over as they are
            return [
                Chunk(text[a:b], a, b, i, extra if extra is not None else {})
                for i, (a, b, extra) in enumerate(spans)
            ]
        base = dict(metadata)
        out: list[Chunk] = []
        for i, (a, b, extra) in enumerate(spans):
            md = dict(base)
            if extra:
                md.update(extra)
            out.append(Chunk(text[a:b], a, b, i, md))
        return out

    def _workers(self, workers: int | None) -> int:
        if workers is None:
            return min(os.cpu_count() or 1, 8)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"workers must be a positive int, not {workers!r}")
        return workers

    def _can_pickle(self) -> bool:
        if self._picklable is None:
            try:
                pickle.dumps(self)
                self._picklable = True
            except Exception:
                self._picklable = False
        return self._picklable

    def _spans_many(self, texts: list[str], workers: int | None) -> list[list[Span]]:
        n_workers = self._workers(workers)
        total = sum(len(t) for t in texts)
        if (
            n_workers <= 1
            or len(texts) < 2
            or total < self._parallel_threshold()
            or _pool_disabled
            or not self._can_pickle()
        ):
            return [self._spans(t) for t in texts]
        return self._spans_pool(texts, n_workers, total)

    def _spans_pool(self, texts: list[str], n_workers: int, total: int) -> list[list[Span]]:
        pool = _get_pool(n_workers)
        # contiguous batches of roughly equal size, a few per worker for balance
        n_batches = min(len(texts), n_workers * 4)
        target = total / n_batches
        batches: list[list[str]] = []
        cur: list[str] = []
        acc = 0
        for t in texts:
            cur.append(t)
            acc += len(t)
            if acc >= target:
                batches.append(cur)
                cur, acc = [], 0
        if cur:
            batches.append(cur)
        try:
            futures = [pool.submit(_split_batch, self, b) for b in batches]
            out: list[list[Span]] = []
            for f in futures:
                out.extend(f.result())
            return out
        except (BrokenProcessPool, RuntimeError):
            # workers could not start (e.g. a script without the ``if __name__ == "__main__":``
            # guard that forkserver/spawn need) or died: do the work here, and stop trying
            global _pool_disabled
            _pool_disabled = True
            _shutdown_pool()
            return [self._spans(t) for t in texts]


def default_separators() -> list[str]:
    """Paragraph, line, sentence ends (Latin and CJK), clause marks, words."""
    return ["\n\n", "\n", ". ", "! ", "? ", "。", "！", "？", "; ", "；", ", ", "，", "、", " "]


def make_levels(separators: Sequence[str]) -> list[Level]:
    levels: list[Level] = []
    for sep in separators:
        if sep == "":
            break
        levels.append(LiteralLevel(sep))
    levels.append(HardLevel())
    return levels


class LevelSplitter(Splitter):
    """A splitter that cuts at a ladder of separators (character and recursive splitters)."""

    _levels: list[Level]
    _seps: tuple[str, ...]

    def _set_separators(self, separators: Sequence[str]) -> None:
        self._levels = make_levels(separators)
        self._seps = tuple(lv.sep for lv in self._levels if isinstance(lv, LiteralLevel))
        # the ladder :func:`_para_engine` runs (see :func:`char_spans`)
        self._para = self._seps[:2] == ("\n\n", "\n")

    def split_text(self, text: str, metadata: Mapping[str, Any] | None = None) -> list[Chunk]:
        if (
            not metadata
            and self._para
            and _FAST_CHUNKS
            and self.length.is_chars
            and type(text) is str
            and type(self)._spans is LevelSplitter._spans
        ):
            # the chunks straight from the engine: no list of spans, no second pass
            if not text or text.isspace():
                return []
            chunks: list[Chunk] = _para_engine(
                text, 0, len(text), self._seps, self.chunk_size, self.chunk_overlap, True
            )
            return chunks
        return super().split_text(text, metadata)

    def split_many(
        self,
        texts: Sequence[str],
        workers: int | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> list[list[Chunk]]:
        if (
            metadatas is None
            and self._para
            and _FAST_CHUNKS
            and self.length.is_chars
            and type(self)._spans is LevelSplitter._spans
            and self._parallel_threshold() >= _NEVER
        ):
            # in-process by design (see ``_cheap_per_char``): the chunks straight from the
            # engine, as :meth:`split_text` makes them (str subclasses take the general path,
            # as they do in split_text)
            texts = self._check_texts(texts)
            if any(type(t) is not str for t in texts):
                return super().split_many(texts, workers, metadatas)
            seps, size, units = self._seps, self.chunk_size, self.chunk_overlap
            return [
                _para_engine(t, 0, len(t), seps, size, units, True)
                if t and not t.isspace() else []
                for t in texts
            ]
        return super().split_many(texts, workers, metadatas)

    def _spans(self, text: str) -> list[Span]:
        if not text or text.isspace():
            return []
        if self.length.is_chars:
            return char_spans(text, 0, len(text), self._seps, self.chunk_size, self.chunk_overlap)
        measure = Measure(text, self.length)
        ov = unit_overlap(text, self._levels, measure, self.chunk_overlap)
        return [
            (a, b, None)
            for a, b in greedy_spans(text, 0, len(text), self._levels, self.chunk_size, measure, ov)
        ]
