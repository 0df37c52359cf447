"""Text splitters with exact character offsets.

Every splitter returns :class:`~parallelrag.documents.Chunk` objects with
``text == original[start:end]``, sizes measured in characters or in a tokenizer's tokens
(``length=``), and never raises on any ``str`` (see :mod:`parallelrag.splitters.base` for the
guarantees and the one documented exception).
"""

from __future__ import annotations

from .base import PARALLEL_MIN_CHARS, Splitter
from .character import CharacterSplitter
from .length import LengthFunction, resolve_length
from .markdown import MarkdownSplitter
from .recursive import RecursiveSplitter
from .sentence import SentenceSplitter, sentence_starts
from .token import TokenSplitter

__all__ = [
    "PARALLEL_MIN_CHARS",
    "CharacterSplitter",
    "LengthFunction",
    "MarkdownSplitter",
    "RecursiveSplitter",
    "SentenceSplitter",
    "Splitter",
    "TokenSplitter",
    "resolve_length",
    "sentence_starts",
]
