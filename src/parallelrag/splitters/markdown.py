"""MarkdownSplitter: sections by ATX heading, blocks, fenced code kept whole."""

from __future__ import annotations

import re
from bisect import bisect_right

from .base import Measure, Span, Splitter, greedy_spans, make_levels, unit_overlap
from .length import LengthSpec

__all__ = ["MarkdownSplitter", "parse_markdown"]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})([^\n]*)$", re.MULTILINE)
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?=[ \t\r]|$)([^\n]*)$", re.MULTILINE)


def _fences(text: str) -> list[tuple[int, int]]:
    """Fenced code blocks as ``(start, end)``: from the opening line to the end of the closing
    line (an unclosed fence runs to the end of the text)."""
    out: list[tuple[int, int]] = []
    open_at = -1
    char = ""
    width = 0
    for m in _FENCE.finditer(text):
        marker, rest = m.group(1), m.group(2)
        if open_at < 0:
            if marker[0] == "`" and "`" in rest:
                continue  # not a fence: backticks in the info string
            open_at, char, width = m.start(), marker[0], len(marker)
        elif marker[0] == char and len(marker) >= width and not rest.strip():
            out.append((open_at, m.end()))
            open_at = -1
    if open_at >= 0:
        out.append((open_at, len(text)))
    return out


def parse_markdown(text: str) -> tuple[list[tuple[int, int, list[str]]], list[tuple[int, int]]]:
    """Sections ``(start, end, heading_path)`` and fenced code blocks of ``text``."""
    fences = _fences(text)
    fstarts = [f[0] for f in fences]
    sections: list[tuple[int, int, list[str]]] = []
    stack: list[tuple[int, str]] = []
    sec_start = 0
    path: list[str] = []
    for m in _HEADING.finditer(text):
        pos = m.start()
        k = bisect_right(fstarts, pos) - 1
        if k >= 0 and fences[k][1] > pos:
            continue  # a '#' line inside a code block
        if pos > sec_start:
            sections.append((sec_start, pos, path))
        level = len(m.group(1))
        title = m.group(2).strip()
        bare = title.rstrip("#")
        if not bare or bare[-1] in " \t":  # an optional closing sequence: "## Title ##"
            title = bare.strip()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        path = [t for _, t in stack]
        sec_start = pos
    if len(text) > sec_start:
        sections.append((sec_start, len(text), path))
    return sections, fences


class MarkdownSplitter(Splitter):
    """Split Markdown along its structure.

    * A chunk never spans two sections: every ATX heading (``#`` .. ``######``, outside code)
      starts a new chunk, and ``metadata["headings"]`` holds the heading path of the chunk's
      section (``["Install", "From source"]``; ``[]`` before the first heading).
    * Inside a section, chunks end at blank lines, then line breaks, then spaces, then anywhere.
    * Fenced code blocks (```` ``` ```` / ``~~~``) are never cut inside unless the block alone is
      longer than ``chunk_size``; then it is cut at its line breaks.
    * Overlap (default 0) stays within a section and never starts inside a code block.
    Setext headings (underlined with ``===``) are treated as text.
    """

    _cheap_per_char = True

    def __init__(
        self, chunk_size: int = 1000, chunk_overlap: int = 0, length: LengthSpec = "chars"
    ) -> None:
        super().__init__(chunk_size, chunk_overlap, length)
        self._levels = make_levels(["\n\n", "\n", " "])

    def _spans(self, text: str) -> list[Span]:
        if not text or text.isspace():
            return []
        sections, fences = parse_markdown(text)
        measure = Measure(text, self.length)
        protected = [(a, b) for a, b in fences if measure.fits(a, b, self.chunk_size)]
        ov = unit_overlap(text, self._levels, measure, self.chunk_overlap)
        out: list[Span] = []
        for lo, hi, path in sections:
            for a, b in greedy_spans(
                text, lo, hi, self._levels, self.chunk_size, measure, ov, protected
            ):
                out.append((a, b, {"headings": list(path)}))
        return out
