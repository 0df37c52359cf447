"""SentenceSplitter: pack whole sentences; overlap counted in sentences."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from functools import partial

from .base import (
    _NONSPACE,
    _SPACE,
    HardLevel,
    Level,
    LiteralLevel,
    Measure,
    PositionsLevel,
    Span,
    Splitter,
    _rstrip_end,
    greedy_spans,
)
from .length import LengthSpec

__all__ = ["SentenceLevel", "SentenceSplitter", "sentence_starts"]

# A sentence ends after terminal punctuation (plus closing quotes/brackets) followed by
# whitespace, after a CJK full stop / exclamation / question mark, or at a line break. The
# boundary (where the next sentence starts) is after the whitespace. As one expression:
#
#     [.!?…]+["'”’)\]»]*\s+  |  [。！？]+[」』”’）)\]]*\s*  |  \n\s*
#
# written below with one alternative per first character (".", "!", ..., "\n"; the same
# matches, tested): a pattern whose alternatives all start with a literal lets the regex engine
# skip to the next candidate character in C instead of attempting a match at every position.
# A Latin alternative only starts at the first terminal of a run (the lookbehind) and never
# gives back what its runs took (possessive): where a run is not followed by whitespace, a
# match from inside it fails the same way, and trying each of its positions again would make
# a long run of dots cost quadratic time. Neither changes what matches: the three kinds of
# runs are disjoint, and no match ends inside a Latin terminal run.
# This expression is the definition; the splitter finds the same boundaries lazily
# (:class:`SentenceLevel`, tested equal).
_TERMINALS = ".!?…"
_CLOSERS = "\"'”’)]»"
_CJK_TERMINALS = "。！？"
_CJK_CLOSERS = "」』”’）)]"
_BOUNDARY = re.compile(
    "|".join(
        [
            f"{re.escape(c)}(?<![{re.escape(_TERMINALS)}]{re.escape(c)})"
            f"[{re.escape(_TERMINALS)}]*+[{re.escape(_CLOSERS)}]*+\\s+"
            for c in _TERMINALS
        ]
        + [
            f"{re.escape(c)}[{re.escape(_CJK_TERMINALS)}]*[{re.escape(_CJK_CLOSERS)}]*\\s*"
            for c in _CJK_TERMINALS
        ]
        + ["\\n\\s*"]
    )
)
_END = re.Match.end
# the rest of a match after its trigger character (see ``_match_end``)
_A_TAIL = re.compile(f"[{re.escape(_TERMINALS)}]*[{re.escape(_CLOSERS)}]*(\\s*)")
_B_TAIL = re.compile(f"[{re.escape(_CJK_TERMINALS)}]*[{re.escape(_CJK_CLOSERS)}]*\\s*")
_WS_TAIL = re.compile("\\s*")

# the characters a match can start with, most frequent first in most texts (the search for the
# last one narrows its range with each hit, so the later ones scan little)
_TRIGGERS = ".\n?!…。！？"
_LAT = frozenset(_TERMINALS)
_LCL = frozenset(_CLOSERS)
_CJK = frozenset(_CJK_TERMINALS)
_CCL = frozenset(_CJK_CLOSERS)
# every character a match can contain (``re``'s ``\s`` is ``str.isspace``, as ``_SPACE``)
_INSIDE = _LAT | _LCL | _CJK | _CCL | _SPACE
# in text wider than one byte (see :class:`SentenceLevel`): the triggers searched for one by
# one, and the largest share of the text's length the positions of the other ones may have
_COMMON = ".\n。"
_RARE_SHARE = 512
# bounds on the work of one search: candidate triggers examined, characters looked at around
# a position (beyond them :class:`SentenceLevel` falls back to all boundaries at once)
_PATIENCE = 16
_REACH = 64
# the characters that can precede a match's whitespace inside the match
_PREFIX = _LAT | _LCL | _CJK | _CCL


def sentence_starts(text: str) -> list[int]:
    """Offsets where a sentence starts (after the first one), sorted, all in ``(0, len]``
    (every alternative of the pattern consumes at least one character)."""
    return list(map(_END, _BOUNDARY.finditer(text)))


def _match_end(text: str, p: int, hi: int) -> int:
    """The end of the boundary match that contains ``text[p]`` (one of ``_TRIGGERS``) if it is
    at most ``hi``; ``hi + 1`` if it would be later; -1 where there is none (a Latin terminal
    run not followed by closers and whitespace).

    Why this is exact: the three alternatives consume disjoint kinds of runs (Latin terminals,
    CJK terminals, whitespace) and each takes its closer and whitespace runs whole, so a match
    never stops inside a run: every trigger character inside a match leads, by scanning
    forward over the rest of its terminal run, closers and whitespace, to that match's end.
    The scan stops after ``hi`` (a match that reaches further is too long either way)."""
    end = hi + 1
    c = text[p]
    j = p + 1
    if j < hi and j + 1 < len(text):
        # the common shapes, told by the next character or two (as in ``_char_spans``)
        d = text[j]
        if d in _SPACE:
            if text[j + 1] not in _SPACE:
                return j + 1
        elif c == "\n":
            return j
        elif d not in _PREFIX:
            return -1 if c in _LAT else j
    if c in _LAT:
        m = _A_TAIL.match(text, p + 1, end)
        if m is None or m.end() > hi:  # None: p >= hi, so any match ends after hi
            return end
        e = m.end()
        return e if e > m.start(1) else -1
    m = (_B_TAIL if c in _CJK else _WS_TAIL).match(text, p + 1, end)
    if m is None or m.end() > hi:
        return end
    return m.end()


def _match_start(text: str, x: int, lo: int) -> int:
    """A position ``k >= lo`` such that every trigger in ``[k, x)`` is inside the match that
    ends at the boundary ``x``: the start of its whitespace run, or of the terminal run before
    that run where the run (with closers of the same script between) belongs to the match.
    It looks at most ``_REACH`` characters back (a later ``k`` is as true, only less useful)."""
    if lo < x - _REACH:
        lo = x - _REACH
    k = x
    while k > lo and text[k - 1] in _SPACE:
        k -= 1
    if k > lo and text[k - 1] in _PREFIX:
        for closers, terminals in ((_LCL, _LAT), (_CCL, _CJK)):
            j = k
            while j > lo and text[j - 1] in closers:
                j -= 1
            if j > lo and text[j - 1] in terminals:
                j -= 1
                while j > lo and text[j - 1] in terminals:
                    j -= 1
                return j
    return k


class SentenceLevel(Level):
    """The sentence boundaries of :func:`sentence_starts`, found on demand.

    The greedy engine only asks for the last boundary in a window (and the overlap for the
    sentence starts just before a cut), so instead of matching the expression over every
    character this searches backwards with ``str.rfind`` for the trigger characters that occur
    in the text (a ``memrchr`` in C) and checks the one match around the hit: the Python work
    is per chunk, not per sentence. Match ends never decrease with the trigger position, so the
    last trigger whose match ends inside the window gives the last boundary."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.triggers = tuple(c for c in _TRIGGERS if c in text)
        # The trigger search runs a few times per chunk and each ``rfind`` is one call, so the
        # fewer separate searches the better. One-byte text: a copy in which every trigger is
        # the first one (``str.replace`` of one character there is a fast scan plus a copy),
        # searched with one ``rfind``. Wider text, where ``str.replace`` is slower and each
        # copy is a fresh large allocation: the triggers in ``_COMMON`` are searched for one
        # by one, the others (usually rare: ``?!…！？``) are collected once into a sorted list
        # of positions and looked up with ``bisect``; one seen too often to be worth listing
        # is searched for like a common one.
        marks = text
        common = self.triggers
        rare: list[int] = []
        if len(common) > 1:
            if text.isascii():
                for c in common[1:]:
                    marks = marks.replace(c, common[0])
                common = common[:1]
            else:
                common = tuple(c for c in common if c in _COMMON) or common[:1]
                limit = len(text) // _RARE_SHARE
                find = text.find
                for c in self.triggers:
                    if c in common:
                        continue
                    got: list[int] = []
                    i = find(c)
                    while i >= 0 and len(got) <= limit:
                        got.append(i)
                        i = find(c, i + 1)
                    if i >= 0:
                        common += (c,)
                    else:
                        rare += got
                rare.sort()
        self.marks = marks
        self.common = common
        self.rare = rare
        self._starts: list[int] | None = None
        #: the last position in ``[lo, hi)`` of a trigger character, or -1
        self.last_trigger: Callable[[int, int], int] = self._last_trigger
        if len(common) == 1 and not rare:
            self.last_trigger = partial(marks.rfind, common[0])
        elif 0 < len(common) <= 2:
            self.last_trigger = self._few(marks.rfind, common, rare)

    @staticmethod
    def _few(
        rfind: Callable[[str, int, int], int], common: tuple[str, ...], rare: list[int]
    ) -> Callable[[int, int], int]:
        """``_last_trigger`` for one or two common characters, without the loop."""
        a = common[0]
        b = common[-1]

        def last(lo: int, hi: int) -> int:
            p = rfind(a, lo, hi)
            if b != a:
                q = rfind(b, p + 1 if p >= 0 else lo, hi)
                if q > p:
                    p = q
            if rare:
                k = bisect_left(rare, hi) - 1
                if k >= 0:
                    r = rare[k]
                    if r > p and r >= lo:
                        return r
            return p

        return last

    def _last_trigger(self, lo: int, hi: int) -> int:
        rfind = self.marks.rfind
        p = -1
        for c in self.common:
            q = rfind(c, lo, hi)
            if q > p:
                p = q
                lo = q + 1  # the next characters need only be looked for after this one
        rare = self.rare
        if rare:
            k = bisect_left(rare, hi) - 1
            if k >= 0 and rare[k] >= lo:
                p = rare[k]
        return p

    def _positions(self) -> list[int]:
        """All the boundaries, from the expression (once): the way out where the search
        backwards would examine too many candidates (terminals without whitespace packed
        densely, a long run of whitespace or punctuation), so no text costs more than one
        scan of the expression plus a bounded search per chunk."""
        if self._starts is None:
            self._starts = sentence_starts(self.text)
        return self._starts

    def _run_start(self, lo: int) -> int:
        """The start of the run of match characters that ends at ``lo`` (a match that ends
        after ``lo`` but starts before it lies in that run), or -1 if it is longer than
        ``_REACH``."""
        text = self.text
        k = lo
        stop = lo - _REACH
        while k > 0 and text[k - 1] in _INSIDE:
            if k <= stop:
                return -1
            k -= 1
        return k

    def last_cut(self, text: str, lo: int, hi: int) -> int:
        """The largest boundary in ``(lo, hi]``, or -1."""
        if self._starts is not None:
            return _last_of(self._starts, lo, hi)
        return self.cut_from(lo, hi, self.last_trigger(lo, hi))[0]

    def cut_from(self, lo: int, hi: int, p: int) -> tuple[int, int]:
        """``(boundary, trigger)``: the largest boundary in ``(lo, hi]`` and the trigger
        position it was found from, given ``p``, the last trigger in ``[lo, hi)`` (or one
        before which no trigger in ``[lo, hi)`` ends a match by ``hi``). ``(-1, -1)`` if there
        is none; the trigger is -1 where it is not known (the match starts before ``lo``, or
        the boundary came from :meth:`_positions`)."""
        if self._starts is None:
            text = self.text
            for _ in range(_PATIENCE):
                if p < 0:
                    # no match starts in [lo, hi) and ends by hi: one that starts before lo
                    # may still end in (lo, hi]; everything from its trigger to lo lies inside
                    k = self._run_start(lo)
                    if k < 0:
                        break
                    if k < lo:
                        p = self.last_trigger(k, lo)
                        if p >= 0:
                            e = _match_end(text, p, hi)
                            if lo < e <= hi:
                                return e, -1
                    return -1, -1
                e = _match_end(text, p, hi)
                if 0 <= e <= hi:
                    return e, p
                p = self.last_trigger(lo, p)
        return _last_of(self._positions(), lo, hi), -1

    def first_cut(self, text: str, lo: int, hi: int) -> int:
        """The smallest boundary in ``[lo, hi]``, or -1."""
        if lo > hi:
            return -1
        k = self._run_start(lo) if self._starts is None else -1
        if k >= 0:
            find = text.find
            for _ in range(_PATIENCE):
                p = -1
                end = hi
                for c in self.triggers:
                    q = find(c, k, end)
                    if q >= 0:
                        p = q
                        end = q
                if p < 0:
                    return -1
                e = _match_end(text, p, hi)
                if e >= lo:
                    return e if e <= hi else -1
                k = e if e > p else p + 1
        starts = self._positions()
        i = bisect_left(starts, lo)
        return starts[i] if i < len(starts) and starts[i] <= hi else -1

    def start_before(self, a: int, x: int, count: int) -> int:
        """The overlap after a chunk ``[a, x)``: the ``count``-th last sentence start in
        ``(a, x)``, the first one there if it holds fewer, ``x`` if it holds none."""
        if self._starts is not None:
            return _start_before(self._starts, a, x, count)
        e = x
        for _ in range(count):
            y = self.last_cut(self.text, a, e - 1)
            if y < 0:
                break
            e = y
        return e


def _last_of(starts: list[int], lo: int, hi: int) -> int:
    """The largest of the sorted ``starts`` in ``(lo, hi]``, or -1."""
    k = bisect_right(starts, hi) - 1
    return starts[k] if k >= 0 and starts[k] > lo else -1


def _start_before(starts: Sequence[int], a: int, x: int, count: int) -> int:
    """:meth:`SentenceLevel.start_before` from all the sentence starts."""
    hi = bisect_left(starts, x)  # sentence starts < x
    lo = bisect_right(starts, a)  # sentence starts > a
    if hi - lo < 1:
        return x
    return starts[max(lo, hi - count)]


class _StartsLevel(PositionsLevel):
    """:class:`SentenceLevel` from all of :func:`sentence_starts` (the reference in tests)."""

    def __init__(self, text: str) -> None:
        super().__init__(sentence_starts(text))

    def start_before(self, a: int, x: int, count: int) -> int:
        return _start_before(self.pos, a, x, count)


def _levels(first: Level) -> list[Level]:
    return [first, LiteralLevel(" "), LiteralLevel("，"), LiteralLevel("、"), HardLevel()]


# the levels after the sentence one, for :func:`_char_spans` (as in ``_levels``)
_FALLBACK = (" ", "，", "、")


def _char_spans(text: str, size: int, count: int, level: SentenceLevel) -> list[Span]:
    """:func:`greedy_spans` for character lengths with the levels of ``_levels`` and the
    sentence overlap, in one loop without the per-chunk layers of calls: the same spans
    (tested against the engine).

    The common chunk is taken inline: the match of its window's last trigger character has
    one of the shapes whose end is known from the character after the trigger (whitespace: the
    end of that run; a line break or a CJK terminal followed by text: right after it; a Latin
    terminal followed by text: no match, try the trigger before), and the start of its last
    sentence is found the same way from the triggers before the cut's match. Every other case
    goes through :meth:`SentenceLevel.cut_from` and :meth:`SentenceLevel.start_before`, which
    handle every shape."""
    n = len(text)
    last = level.last_cut
    last_trigger = level.last_trigger
    cut_from = level.cut_from
    rfind = text.rfind
    search = _NONSPACE.search
    space = _SPACE
    inside = _INSIDE
    prefix = _PREFIX
    cjk = _CJK
    n2 = n - 2

    def attempt(s: int, floor: int) -> tuple[int, int, int] | None:
        e = s + size
        if e > n:
            e = n
        lower = s if s > floor else floor
        if e <= lower:
            return None
        if e >= n:
            x, lvl = n, -1
        else:
            x = last(text, lower, e)
            lvl = 0
            if x < 0:
                x, lvl = e, 4
                for i, sep in enumerate(_FALLBACK, 1):
                    p = rfind(sep, lower, e)
                    if p >= 0:
                        x, lvl = p + 1, i
                        break
        b = x if text[x - 1] not in space else _rstrip_end(text, s, x)
        return x, lvl, b

    spans: list[Span] = []
    append = spans.append
    floor = prev_b = s = 0
    while True:
        if s >= n or text[s] in space:
            m = search(text, s, n)
            if m is None:
                break
            s = m.start()
        # the common chunk: see the docstring
        e = s + size
        lower = s if s > floor else floor
        x = p = -1
        if e < n and e > lower:
            p = last_trigger(lower, e)
            tries = 4
            while 0 <= p < n2:
                c = text[p + 1]
                if c in space:
                    x = p + 2
                    if text[x] in space:
                        m = search(text, x)
                        x = m.start() if m is not None else n
                elif text[p] == "\n":
                    x = p + 1
                elif c not in prefix:
                    if text[p] in cjk:
                        x = p + 1
                    elif tries:  # a Latin terminal without closers or whitespace: none
                        tries -= 1
                        p = last_trigger(lower, p)
                        continue
                break
            if x < 0 or x > e:
                x, p = cut_from(lower, e, p)
        if x >= 0:
            if text[x - 1] not in space:
                b = x
            elif x - 2 >= s and text[x - 2] not in space:
                b = x - 1
            else:
                b = _rstrip_end(text, s, x)
            if s < floor and b <= prev_b:
                x = -1
        if x < 0:
            res: tuple[int, int, int] | None
            if s < floor:
                res = attempt(s, floor)
                if res is None or res[2] <= prev_b or res[1] > 0:
                    # the overlapping start may cost a better cut: compare with no overlap
                    m = search(text, floor, n)
                    if m is None:
                        break
                    s2 = m.start()
                    alt = attempt(s2, s2)
                    if res is None or res[2] <= prev_b or (alt is not None and alt[1] < res[1]):
                        res, s = alt, s2
            else:
                res = attempt(s, s)
            assert res is not None
            x, _, b = res
            p = -1
        if b > s:
            append((s, b, None))
            prev_b = b
        floor = x
        if x >= n:
            break
        nxt = x
        if count > 0:
            o = -1
            if p >= 0:
                # the sentence starts before x, from the triggers before the cut's match
                h = p if p <= s or text[p - 1] not in inside else _match_start(text, x, s)
                o = x
                i = 0
                while True:
                    q = last_trigger(s, h)
                    y = -1
                    if 0 <= q < n2:
                        c = text[q + 1]
                        if c in space:
                            y = q + 2
                            if text[y] in space:
                                m = search(text, y)
                                y = m.start() if m is not None else n
                        elif text[q] == "\n" or (c not in prefix and text[q] in cjk):
                            y = q + 1
                    if y < 0 or y >= o:
                        y, q = cut_from(s, o - 1, q)
                        if y < 0:
                            break  # no more sentence starts in (s, o)
                    o = y
                    i += 1
                    if i == count:
                        break
                    if q < 0:
                        o = -1  # the next one cannot follow on from here
                        break
                    h = q if q <= s or text[q - 1] not in inside else _match_start(text, y, s)
            if o < 0:
                o = level.start_before(s, x, count)
            if s < o < x:
                nxt = o
        s = nxt
    return spans


class SentenceSplitter(Splitter):
    """Chunks of whole sentences up to ``chunk_size``; ``chunk_overlap`` counts *sentences*.

    Each chunk repeats at most ``chunk_overlap`` sentences from the end of the previous chunk
    (fewer when they would not leave room for a new sentence). A sentence longer than
    ``chunk_size`` is split at spaces (then CJK commas, then any character).
    Sentence boundaries are regex based (``. `` / ``! `` / ``? `` / ``…``, CJK ``。！？``, line
    breaks; see :func:`sentence_starts`); abbreviations such as "e.g. " count as sentence ends.
    They are looked up per chunk (:class:`SentenceLevel`) rather than matched over the whole
    text, so splitting costs about as much as the character splitter's.
    """

    _cheap_per_char = True

    def __init__(
        self, chunk_size: int = 1000, chunk_overlap: int = 1, length: LengthSpec = "chars"
    ) -> None:
        super().__init__(chunk_size, chunk_overlap, length)

    def _spans(self, text: str) -> list[Span]:
        if not text or text.isspace():
            return []
        level = SentenceLevel(text)
        if self.length.is_chars:
            return _char_spans(text, self.chunk_size, self.chunk_overlap, level)
        return self._greedy(text, level)

    def _greedy(self, text: str, level: SentenceLevel | _StartsLevel) -> list[Span]:
        """The spans from the shared engine with ``level`` as the sentence level."""
        measure = Measure(text, self.length)
        k = self.chunk_overlap
        ov: Callable[[int, int, int], int] | None = None
        if k > 0:

            def ov(a: int, x: int, lvl: int) -> int:
                return level.start_before(a, x, k)

        levels: Sequence[Level] = _levels(level)
        return [
            (a, b, None)
            for a, b in greedy_spans(text, 0, len(text), levels, self.chunk_size, measure, ov)
        ]
