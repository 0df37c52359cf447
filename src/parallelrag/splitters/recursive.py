"""RecursiveSplitter: paragraphs, then lines, sentences, clauses, words, characters."""

from __future__ import annotations

from collections.abc import Sequence

from .base import (
    LiteralLevel,
    Measure,
    Span,
    Splitter,
    char_spans,
    default_separators,
    greedy_spans,
    make_levels,
    unit_overlap,
)
from .length import LengthSpec

__all__ = ["RecursiveSplitter"]


class RecursiveSplitter(Splitter):
    """Split on the highest-priority separator that yields chunks of at most ``chunk_size``.

    Equivalent in spirit to LangChain's ``RecursiveCharacterTextSplitter``: a chunk ends at the
    last paragraph break inside its window if there is one, else at the last line break, sentence
    end, clause mark, space and finally at any character. Separators are literal strings and stay
    at the end of the left chunk; ``""`` (any character) is always the implicit last resort.
    """

    _cheap_per_char = True

    def __init__(
        self,
        chunk_size: int = 1000,
        chunk_overlap: int = 100,
        separators: Sequence[str] | None = None,
        length: LengthSpec = "chars",
    ) -> None:
        super().__init__(chunk_size, chunk_overlap, length)
        seps = list(default_separators() if separators is None else separators)
        for sep in seps:
            if not isinstance(sep, str):
                from ..errors import ConfigError

                raise ConfigError(f"separators must be strings, not {sep!r}")
        self.separators = seps
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
