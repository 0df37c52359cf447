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
For character lengths and literal separators :func:`char_spans` runs the same rules in one
loop without the per-chunk layers of calls; it gives exactly the spans of :func:`greedy_spans`
(tested), which stays the reference and the engine for token lengths. The sentence splitter has
such a loop of its own for character lengths (``sentence._char_spans``, tested the same way).

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
from itertools import count, repeat
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

# Where ``split_many`` starts using worker processes. The pool pays for pickling every text to a
# worker, so it only wins for splitters that spend more per byte than that costs: any splitter
# measuring in tokens, from a few MB per batch on. Character-measured splitters (character,
# recursive, markdown, sentence) split faster in-process than the texts can be shipped, so they
# stay in-process (``_cheap_per_char``) unless ``parallel_min_chars`` is set.
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
    """``a + len(text[a:b].rstrip())``, looking at a few characters only where possible."""
    if b <= a:
        return a
    if text[b - 1] not in _SPACE:
        return b
    w = b - 24
    if w > a:
        r = len(text[w:b].rstrip())
        if r:
            return w + r
        b = w  # the last 24 characters are all whitespace
    return a + len(text[a:b].rstrip())


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

    last = len(levels) - 1

    def best(floor: int, e: int) -> tuple[int, int]:
        if not fstarts:
            for idx, level in enumerate(levels):
                y = level.last_cut(text, floor, e)
                if y > floor:
                    return y, idx
            return e, last
        for idx, level in enumerate(levels):
            y = cut(level, floor, e)
            if y > floor:
                return y, idx
        return e, last  # every cut would fall inside a fence: split it anyway

    chars = measure.chars

    def attempt(s: int, floor: int) -> tuple[int, int, int] | None:
        """(cut, level, stripped end) for a chunk starting at ``s``; None if it cannot fit."""
        if chars:
            e = s + chunk_size
            if e > hi:
                e = hi
        else:
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
            if chars or b <= s or measure.fits(s, b, chunk_size):
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
        if s >= hi or text[s] in _SPACE:
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
                if fstarts:
                    k = bisect_right(fstarts, o - 1) - 1
                    if k >= 0 and fends[k] > o:  # never start inside a fence
                        o = fends[k] if fends[k] < x else x
                nxt = o
        s = nxt
    return spans


_Plan = tuple[tuple[tuple[str, int], ...], tuple[int, ...], bool]
_PLANS: dict[tuple[str, ...], _Plan] = {}


def _plan(seps: Sequence[str]) -> _Plan:
    """Per separator ladder, computed once: ``(sep, len)`` per level, each separator's length
    without trailing whitespace, and whether the ladder starts ``"\\n\\n", "\\n"``."""
    key = tuple(seps)
    plan = _PLANS.get(key)
    if plan is None:
        plan = (
            tuple((sep, len(sep)) for sep in key),
            tuple(len(s.rstrip()) for s in key),
            key[:2] == ("\n\n", "\n"),
        )
        if len(_PLANS) < 256:
            _PLANS[key] = plan
    return plan


def _chunk_fields_ok() -> bool:
    """True if a :class:`Chunk` is fully made by setting its six fields (what the dataclass
    ``__init__`` does), so :meth:`Splitter._build` may make chunks without calling it."""
    try:
        names = tuple(f.name for f in dataclasses.fields(Chunk))
        probe = object.__new__(Chunk)
        probe.text, probe.start, probe.end, probe.index = "ab", 0, 2, 0
        probe.metadata, probe.context = {}, ""
        same = probe == Chunk("ab", 0, 2, 0, {})
    except Exception:
        return False
    return (
        names == ("text", "start", "end", "index", "metadata", "context")
        and not hasattr(Chunk, "__post_init__")
        and hasattr(Chunk, "__slots__")
        and same
    )


_FAST_CHUNKS = _chunk_fields_ok()


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

    Per chunk this costs one ``str.rfind`` for the cut (scanning back from the window's end to
    the cut only), a bounded look at the characters before the cut for trailing whitespace, and
    with overlap one or two ``str.find`` over the last ``units`` characters. For a ladder that
    starts ``"\\n\\n", "\\n"`` (the character and recursive defaults) both levels come from one
    search for a single ``"\\n"`` (a ``memrchr``/``memchr``; ``last_cut`` and ``first_cut``
    below), and without fences the most common chunk (cut after the window's last
    ``"\\n\\n"``, its overlap decided by the first ``"\\n"`` of the overlap's range) is taken in
    the loop itself, without a call: at these sizes the Python steps per chunk, not the scans,
    are the cost. Where a chunk from an overlapping start gets a worse cut than one from the
    previous cut would, only the part of that other window the first search did not cover is
    searched for a better level before the other chunk is computed."""
    seplens, keep, para = _plan(seps)
    hard = len(seplens)  # the level index of "any character"
    rfind = text.rfind
    find = text.find
    search = _NONSPACE.search
    space = _SPACE
    fstarts, fends = fences if fences is not None else ([], [])

    def last_cut(lower: int, e: int, first: int) -> tuple[int, int]:
        """The last cut in ``(lower, e]`` of the first level from ``first`` that has one (fences
        aside), and that level."""
        if para and first == 0:
            # the last "\n" either completes the last "\n\n" with the character before it, or
            # the last "\n\n" lies before it, or there is none and it is the line-level cut
            q = rfind("\n", lower, e)
            if q >= 0:
                if q > 0 and text[q - 1] == "\n":
                    return q + 1, 0
                st = lower - 1
                p = rfind("\n\n", st if st > 0 else 0, q)
                return (p + 2, 0) if p >= 0 else (q + 1, 1)
            first = 2  # no "\n": neither line level has a cut
        for idx in range(first, hard):
            sep, n = seplens[idx]
            st = lower - n + 1
            p = rfind(sep, st if st > 0 else 0, e)
            if p >= 0:
                return p + n, idx
        return e, hard

    def cut(lower: int, e: int) -> tuple[int, int]:
        """The best cut in ``(lower, e]`` that falls inside no fence, and its level."""
        x, lvl = last_cut(lower, e, 0)
        while fstarts:
            k = bisect_right(fstarts, x - 1) - 1
            if k < 0 or fends[k] <= x:
                break
            # inside a fence: the last cut of this level before the fence, else the next level
            h = fstarts[k]
            if h > lower:
                x, lvl2 = last_cut(lower, h, lvl) if lvl < hard else (h, hard)
                if lvl2 == lvl:
                    continue
            if lvl >= hard:
                return e, hard  # every cut would fall inside a fence: split it anyway
            x, lvl = last_cut(lower, e, lvl + 1)
        return x, lvl

    def first_cut(a: int, z: int, first: int) -> int:
        """The first cut in ``[a, z]`` of the first separator level from ``first`` that has
        one, or -1."""
        if para and first == 0:
            st = a - 1
            q = find("\n", st, z)
            if q >= 0:
                # the first "\n\n" starts at q - 1 (only where that is just before the range),
                # at q, or later; failing that, the "\n" at q is the line-level cut
                if q == st and q > 0 and text[q - 1] == "\n":
                    return q + 1
                if q + 1 < z and text[q + 1] == "\n":
                    return q + 2
                p = find("\n\n", q + 1, z)
                return p + 2 if p >= 0 else q + 1
            first = 2
        for idx in range(first, hard):
            sep, n = seplens[idx]
            st = a - n
            p = find(sep, st if st > 0 else 0, z)
            if p >= 0:
                return p + n
        return -1

    def stripped_end(s: int, x: int, lvl: int) -> int:
        """``s + len(text[s:x].rstrip())`` for a cut ``x`` at level ``lvl``."""
        if 0 <= lvl < hard:  # x is right after separator lvl, which starts at p
            p = x - seplens[lvl][1]
            k = keep[lvl]
            if k:
                if p >= s:
                    return p + k
            elif p > s:
                # a whitespace-only separator: strip what precedes it (often nothing or one
                # character, checked inline)
                if text[p - 1] not in space:
                    return p
                if p - 1 > s and text[p - 2] not in space:
                    return p - 1
                return _rstrip_end(text, s, p)
        elif text[x - 1] not in space:
            return x
        return _rstrip_end(text, s, x)

    def attempt(s: int) -> tuple[int, int, int]:
        """(cut, level, stripped end) of a chunk starting at ``s`` (no overlap floor)."""
        e = s + chunk_size
        if e >= hi:
            return hi, -1, hi if text[hi - 1] not in space else _rstrip_end(text, s, hi)
        x, lvl = cut(s, e) if fstarts else last_cut(s, e, 0)
        return x, lvl, stripped_end(s, x, lvl)

    spans: list[Span] = []
    append = spans.append
    # a "\n\n", "\n" ladder without fences: the common cut (the window's last "\n" is the
    # second one of a "\n\n") is taken inline, from the one search that ``last_cut`` starts
    # with; every other cut goes through ``last_cut``
    quick = para and not fstarts
    floor = lower = prev_b = s = lo
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
            b = hi if text[hi - 1] not in space else _rstrip_end(text, s, hi)
        else:
            lower = floor if s < floor else s
            if e <= lower:
                x = lvl = 0
                b = -1  # no chunk from s fits between floor and the window's end
            elif quick:
                q = rfind("\n", lower, e)
                if q > 0 and text[q - 1] == "\n":
                    # last_cut's first case, and stripped_end for it: text[s] is not
                    # whitespace, so the separator starts at p > s
                    x = q + 1
                    lvl = 0
                    p = q - 1
                    if text[p - 1] not in space:
                        b = p
                    elif p - 1 > s and text[p - 2] not in space:
                        b = p - 1
                    else:
                        b = _rstrip_end(text, s, p)
                else:
                    # no "\n" (q < 0) means no line-level cut: last_cut from the third level
                    x, lvl = last_cut(lower, e, 2 if q < 0 else 0)
                    b = stripped_end(s, x, lvl)
            else:
                x, lvl = cut(lower, e) if fstarts else last_cut(lower, e, 0)
                b = stripped_end(s, x, lvl)
        if s < floor and (b < 0 or b <= prev_b or lvl > 0):
            # the overlapping start may cost a better cut: compare with no overlap
            if text[floor] not in space:
                s2 = floor
            else:
                m = search(text, floor, hi)
                if m is None:
                    break
                s2 = m.start()
            if b < 0 or b <= prev_b:
                x, lvl, b = attempt(s2)
                s = lower = s2
            else:
                # the chunk from s2 wins only with a cut of a level below lvl. Without fences
                # there is none in (floor, e] (last_cut found none there), so only
                # (max(e, s2), s2 + chunk_size] can hold one
                e2 = s2 + chunk_size
                better = e2 >= hi or bool(fstarts)
                if not better:
                    a2 = e if e > s2 else s2
                    below = seplens[:lvl]
                    if quick and lvl > 1:
                        # "\n\n" and "\n" have a cut in (a2, e2] iff a "\n" lies in [a2, e2)
                        better = find("\n", a2, e2) >= 0
                        below = seplens[2:lvl]
                    if not better:
                        for sep, n in below:
                            st = a2 - n + 1
                            if find(sep, st if st > 0 else 0, e2) >= 0:
                                better = True
                                break
                if better:
                    alt = attempt(s2)
                    if alt[1] < lvl:
                        x, lvl, b = alt
                        s = lower = s2
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
                if lvl == 0 and quick:
                    # after a "\n\n" cut, first_cut's search for "\n" from s0 - 1 meets the
                    # one at x - 2 at the latest: with none before b - 1, the overlap would
                    # start at or after b (whitespace only), so the next chunk starts at x
                    st = s0 - 1
                    q = find("\n", st, b - 1)
                    if q < 0:
                        s = x
                        continue
                    # first_cut from this "\n"; its common case inline (q + 1 < b - 1 < x - 1)
                    o = q + 2 if q > st and text[q + 1] == "\n" else first_cut(s0, x - 1, 0)
                else:
                    # after a cut below the line levels there is no "\n" in [lower, e), e >= x
                    o = first_cut(s0, x - 1, 2 if quick and lvl > 1 and s0 > lower else 0)
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
            if not _FAST_CHUNKS:
                return [
                    Chunk(text[a:b], a, b, i, extra if extra is not None else {})
                    for i, (a, b, extra) in enumerate(spans)
                ]
            # bare objects allocated in one C loop, their fields set as the dataclass
            # ``__init__`` would (see ``_chunk_fields_ok``), without a Python call per chunk
            chunks: list[Chunk] = list(map(object.__new__, repeat(Chunk, len(spans))))
            for i, c, (a, b, extra) in zip(count(), chunks, spans):
                c.text = text[a:b]
                c.start = a
                c.end = b
                c.index = i
                c.metadata = extra if extra is not None else {}
                c.context = ""
            return chunks
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
