"""RecursiveSplitter: paragraphs, then lines, sentences, clauses, words, characters."""

from __future__ import annotations

from collections.abc import Sequence

from .base import (
    LevelSplitter,
    default_separators,
)
from .length import LengthSpec

__all__ = ["RecursiveSplitter"]


class RecursiveSplitter(LevelSplitter):
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
        self._set_separators(seps)
