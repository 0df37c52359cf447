"""CharacterSplitter: split on one separator (default: blank lines)."""

from __future__ import annotations

from .base import (
    LiteralLevel,
    Measure,
    Span,
    Splitter,
    char_spans,
    greedy_spans,
    make_levels,
    unit_overlap,
)
from .length import LengthSpec

__all__ = ["CharacterSplitter"]


class CharacterSplitter(Splitter):
    """Split on ``separator`` and pack the pieces into chunks of at most ``chunk_size``.

    Unlike LangChain's ``CharacterTextSplitter`` (which lets a piece longer than ``chunk_size``
    through), a piece without the separator that is too long is cut at its last line break, then
    space, then at any character, so every chunk fits.
    """

    _cheap_per_char = True

    def __init__(
        self,
        chunk_size: int = 1000,
        chunk_overlap: int = 200,
        separator: str = "\n\n",
        length: LengthSpec = "chars",
    ) -> None:
        super().__init__(chunk_size, chunk_overlap, length)
        if not isinstance(separator, str):
            from ..errors import ConfigError

            raise ConfigError(f"separator must be a string, not {separator!r}")
        self.separator = separator
        seps = [separator] if separator else []
        seps += [s for s in ("\n", " ") if s not in seps and s != separator]
        self._levels = make_levels(seps)
        self._seps = tuple(lv.sep for lv in self._levels if isinstance(lv, LiteralLevel))

    def _spans(self, text: str) -> list[Span]:
        if not text or text.isspace():
            return []
        if self.length.is_chars:
            n = len(text)
            return char_spans(text, 0, n, self._seps, self.chunk_size, self.chunk_overlap)
        measure = Measure(text, self.length)
        ov = unit_overlap(text, self._levels, measure, self.chunk_overlap)
        return [
            (a, b, None)
            for a, b in greedy_spans(text, 0, len(text), self._levels, self.chunk_size, measure, ov)
        ]
