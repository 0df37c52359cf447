"""MarkdownSplitter: sections by ATX heading, blocks, fenced code kept whole."""

from __future__ import annotations

from bisect import bisect_right

from .base import (
    _NONSPACE,
    _SPACE,
    Measure,
    Span,
    Splitter,
    char_spans,
    greedy_spans,
    make_levels,
    unit_overlap,
)
from .length import LengthSpec

__all__ = ["MarkdownSplitter", "parse_markdown"]

# Fence lines (up to 3 spaces, then 3 or more backticks or tildes) and ATX heading lines (up to 3
# spaces, 1-6 hashes, then a space, tab, line break or the end of the text) are found with
# ``str.find`` for the marker characters ('#', '```', '~~~'; C speed, memchr for '#'), and each
# hit is checked in Python: at most one check per line that holds the marker, and a text
# without markers costs three scans. The reference definition, as one regex over line starts:
#   " {0,3}(?:(`{3,}|~{3,})|(#{1,6})(?=[ \t\r\n]|$))([^\n]*)"
_SEPS = ("\n\n", "\n", " ")
_HEAD_END = frozenset(" \t\r\n")


_Line = tuple[int, int, str, str]  # (line start, line end, marker, rest of the line)


def _line_start(text: str, pos: int) -> int:
    """The start of ``pos``'s line if only 0-3 spaces precede ``pos`` on it, else -1."""
    j = pos
    while j > 0 and pos - j < 3 and text[j - 1] == " ":
        j -= 1
    return j if j == 0 or text[j - 1] == "\n" else -1


def _heading_lines(text: str) -> list[_Line]:
    out: list[_Line] = []
    find = text.find
    n = len(text)
    pos = find("#")
    while pos >= 0:
        eol = find("\n", pos)
        if eol < 0:
            eol = n
        j = pos if pos == 0 or text[pos - 1] == "\n" else _line_start(text, pos)
        if j >= 0:
            # the run of hashes (7 or more: not a heading), counted at C speed
            seg = text[pos : pos + 8]
            q = pos + len(seg) - len(seg.lstrip("#"))
            if q - pos <= 6 and (q == n or text[q] in _HEAD_END):
                out.append((j, eol, text[pos:q], text[q:eol]))
        # any other '#' on this line is not at a line start
        pos = find("#", eol)
    return out


def _fence_lines(text: str) -> list[_Line]:
    out: list[_Line] = []
    find = text.find
    n = len(text)
    for char in ("`", "~"):
        marker = char * 3
        pos = find(char)  # one character: memchr speed; then at most one check per line
        while pos >= 0:
            eol = find("\n", pos)
            if eol < 0:
                eol = n
            if text.startswith(marker, pos):
                j = pos if pos == 0 or text[pos - 1] == "\n" else _line_start(text, pos)
                if j >= 0:
                    line = text[pos:eol]
                    rest = line.lstrip(char)  # the run of marker characters, at C speed
                    out.append((j, eol, line[: len(line) - len(rest)], rest))
            # any other marker on this line is not at a line start
            pos = find(char, eol)
        if char == "`":
            k = len(out)
    if 0 < k < len(out):
        out.sort()  # both kinds: merge them in text order
    return out


def _scan(text: str) -> tuple[list[_Line], list[_Line]]:
    """Fence lines and heading lines of ``text``, each in order."""
    return _fence_lines(text), _heading_lines(text)


def _fences(text: str, fence_lines: list[_Line] | None = None) -> list[tuple[int, int]]:
    """Fenced code blocks as ``(start, end)``: from the opening line to the end of the closing
    line (an unclosed fence runs to the end of the text)."""
    if fence_lines is None:
        fence_lines = _scan(text)[0]
    out: list[tuple[int, int]] = []
    open_at = -1
    char = ""
    width = 0
    for start, end, marker, rest in fence_lines:
        if open_at < 0:
            if marker[0] == "`" and "`" in rest:
                continue  # not a fence: backticks in the info string
            open_at, char, width = start, marker[0], len(marker)
        elif marker[0] == char and len(marker) >= width and not rest.strip():
            out.append((open_at, end))
            open_at = -1
    if open_at >= 0:
        out.append((open_at, len(text)))
    return out


def parse_markdown(text: str) -> tuple[list[tuple[int, int, list[str]]], list[tuple[int, int]]]:
    """Sections ``(start, end, heading_path)`` and fenced code blocks of ``text``."""
    fence_lines, heading_lines = _scan(text)
    fences = _fences(text, fence_lines)
    fstarts = [f[0] for f in fences]
    sections: list[tuple[int, int, list[str]]] = []
    stack: list[tuple[int, str]] = []
    sec_start = 0
    path: list[str] = []
    for pos, _end, hashes, rest in heading_lines:
        k = bisect_right(fstarts, pos) - 1
        if k >= 0 and fences[k][1] > pos:
            continue  # a '#' line inside a code block
        if pos > sec_start:
            sections.append((sec_start, pos, path))
        level = len(hashes)
        title = rest.strip()
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
        self._levels = make_levels(_SEPS)

    def _spans(self, text: str) -> list[Span]:
        if not text or text.isspace():
            return []
        sections, fences = parse_markdown(text)
        if self.length.is_chars:
            return self._char_section_spans(text, sections, fences)
        measure = Measure(text, self.length)
        kept = [(a, b) for a, b in fences if measure.fits(a, b, self.chunk_size)]
        protected = ([a for a, _ in kept], [b for _, b in kept])
        ov = unit_overlap(text, self._levels, measure, self.chunk_overlap)
        out: list[Span] = []
        for lo, hi, path in sections:
            for a, b in greedy_spans(
                text, lo, hi, self._levels, self.chunk_size, measure, ov, protected
            ):
                out.append((a, b, {"headings": list(path)}))
        return out

    def _char_section_spans(
        self, text: str, sections: list[tuple[int, int, list[str]]], fences: list[tuple[int, int]]
    ) -> list[Span]:
        """Character lengths: the one-loop engine per section (the same spans as the generic
        engine), and a section that fits whole is one stripped span without it."""
        size = self.chunk_size
        units = self.chunk_overlap
        kstarts = [a for a, b in fences if b - a <= size]
        kends = [b for a, b in fences if b - a <= size]
        protected = (kstarts, kends)
        search = _NONSPACE.search
        out: list[Span] = []
        append = out.append
        for lo, hi, path in sections:
            if hi - lo <= size:
                m = search(text, lo, hi)
                if m is not None:
                    a = m.start()
                    b = hi if text[hi - 1] not in _SPACE else a + len(text[a:hi].rstrip())
                    append((a, b, {"headings": list(path)}))
                continue
            # fences only where one is in this section
            k = bisect_right(kstarts, hi - 1) - 1
            inside = protected if k >= 0 and kends[k] > lo else None
            for a, b, _ in char_spans(text, lo, hi, _SEPS, size, units, inside):
                append((a, b, {"headings": list(path)}))
        return out
