"""Shared invariant checks for splitter tests."""

from __future__ import annotations

from bisect import bisect_left

from parallelrag.documents import Chunk
from parallelrag.splitters import Splitter, TokenSplitter, sentence_starts


def token_count(starts: list[int], a: int, b: int) -> int:
    """Tokens of the whole-text encode whose start offset lies in [a, b)."""
    return bisect_left(starts, b) - bisect_left(starts, a)


def check_chunks(splitter: Splitter, text: str, chunks: list[Chunk]) -> None:
    size, overlap = splitter.chunk_size, splitter.chunk_overlap
    is_token = isinstance(splitter, TokenSplitter) and not splitter.length.is_chars
    # a TokenSplitter counts tokens of the whole-text encode; a callable has no offsets and is
    # measured on the chunk text like every other splitter
    starts = splitter.length.token_starts(text) if is_token else None
    prev: Chunk | None = None
    covered_to = 0
    for i, c in enumerate(chunks):
        assert c.index == i
        assert 0 <= c.start < c.end <= len(text)
        assert text[c.start : c.end] == c.text
        assert not c.text[0].isspace() and not c.text[-1].isspace()
        # size: the only exception is a single character longer than chunk_size on its own
        n = token_count(starts, c.start, c.end) if starts is not None else splitter.length(c.text)
        assert n <= size or len(c.text) == 1, (n, size, c)
        # coverage: the gap since the last covered position holds only whitespace
        if c.start > covered_to:
            assert text[covered_to : c.start].isspace(), (covered_to, c.start)
        covered_to = max(covered_to, c.end)
        if prev is not None:
            assert c.start > prev.start and c.end > prev.end
            if c.start < prev.end:
                region = text[c.start : prev.end]
                if type(splitter).__name__ == "SentenceSplitter":
                    sents = sentence_starts(text)
                    k = bisect_left(sents, prev.end) - bisect_left(sents, c.start)
                    assert k <= overlap, (k, region)
                elif starts is not None:
                    assert token_count(starts, c.start, prev.end) <= overlap
                else:
                    assert splitter.length(region) <= overlap, (region, overlap)
        prev = c
    tail = text[covered_to:]
    assert tail == "" or tail.isspace()
    if not text.strip():
        assert chunks == []
