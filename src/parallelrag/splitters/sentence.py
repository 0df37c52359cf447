"""SentenceSplitter: pack whole sentences; overlap counted in sentences."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable

from .base import (
    HardLevel,
    Level,
    LiteralLevel,
    Measure,
    PositionsLevel,
    Span,
    Splitter,
    greedy_spans,
)
from .length import LengthSpec

__all__ = ["SentenceSplitter", "sentence_starts"]

# A sentence ends after terminal punctuation (plus closing quotes/brackets) followed by
# whitespace, after a CJK full stop / exclamation / question mark, or at a line break. The
# boundary (where the next sentence starts) is after the whitespace. As one expression:
#
#     [.!?…]+["'”’)\]»]*\s+  |  [。！？]+[」』”’）)\]]*\s*  |  \n\s*
#
# written below with one alternative per first character (".", "!", ..., "\n"; the same
# matches, tested): a pattern whose alternatives all start with a literal lets the regex engine
# skip to the next candidate character in C instead of attempting a match at every position,
# which makes the scan several times faster.
_TERMINALS = ".!?…"
_CJK_TERMINALS = "。！？"
_BOUNDARY = re.compile(
    "|".join(
        [re.escape(c) + r"""[.!?…]*["'”’)\]»]*\s+""" for c in _TERMINALS]
        + [c + r"[。！？]*[」』”’）)\]]*\s*" for c in _CJK_TERMINALS]
        + [r"\n\s*"]
    )
)
_END = re.Match.end


def sentence_starts(text: str) -> list[int]:
    """Offsets where a sentence starts (after the first one), sorted, all in ``(0, len]``
    (every alternative of the pattern consumes at least one character)."""
    return list(map(_END, _BOUNDARY.finditer(text)))


class SentenceSplitter(Splitter):
    """Chunks of whole sentences up to ``chunk_size``; ``chunk_overlap`` counts *sentences*.

    Each chunk repeats at most ``chunk_overlap`` sentences from the end of the previous chunk
    (fewer when they would not leave room for a new sentence). A sentence longer than
    ``chunk_size`` is split at spaces (then CJK commas, then any character).
    Sentence boundaries are regex based (``. `` / ``! `` / ``? `` / ``…``, CJK ``。！？``, line
    breaks); abbreviations such as "e.g. " count as sentence ends.
    """

    def __init__(
        self, chunk_size: int = 1000, chunk_overlap: int = 1, length: LengthSpec = "chars"
    ) -> None:
        super().__init__(chunk_size, chunk_overlap, length)

    def _spans(self, text: str) -> list[Span]:
        if not text or text.isspace():
            return []
        starts = sentence_starts(text)
        levels: list[Level] = [
            PositionsLevel(starts),
            LiteralLevel(" "),
            LiteralLevel("，"),
            LiteralLevel("、"),
            HardLevel(),
        ]
        measure = Measure(text, self.length)
        k = self.chunk_overlap
        ov: Callable[[int, int, int], int] | None = None
        if k > 0:

            def ov(a: int, x: int, lvl: int) -> int:
                hi = bisect_left(starts, x)  # sentence starts < x
                lo = bisect_right(starts, a)  # sentence starts > a
                if hi - lo < 1:
                    return x
                return starts[max(lo, hi - k)]

        return [
            (a, b, None)
            for a, b in greedy_spans(text, 0, len(text), levels, self.chunk_size, measure, ov)
        ]
