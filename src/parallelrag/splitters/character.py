"""CharacterSplitter: split on one separator (default: blank lines)."""

from __future__ import annotations

from .base import LevelSplitter
from .length import LengthSpec

__all__ = ["CharacterSplitter"]


class CharacterSplitter(LevelSplitter):
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
        self._set_separators(seps)
