"""Hypothesis property tests: offsets, sizes, coverage, overlap, determinism, on any Unicode."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallelrag.splitters import (
    CharacterSplitter,
    MarkdownSplitter,
    RecursiveSplitter,
    SentenceSplitter,
    Splitter,
    TokenSplitter,
)

from ._checks import check_chunks

PIECES = [
    " ", "  ", "\n", "\n\n", "\r\n", "\t", "\x00", ". ", "! ", "? ", "。", "，", "、", "…",
    "word", "Hello", "x" * 40, "中文字符", "日本語のテキスト", "😀", "👩‍👩‍👧", "e\u0301", "\u0301\u0301",
    "\ud800", "\udfff", "```", "```py\n", "~~~", "# ", "## ", "### Title\n", "\u2028", "\x85",
    "\u200b", "ﬁ", "İ", "12345", "'s ", "-", "\x1c",
]

texts = st.one_of(
    st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=300),
    st.lists(st.sampled_from(PIECES), max_size=120).map("".join),
    st.lists(
        st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=60
    ).map("".join),
    st.builds(lambda c, n: c * n, st.sampled_from(["a", "中", "😀", " ", "\n", "é"]), st.integers(0, 900)),
)

sizes = st.integers(1, 120).flatmap(lambda s: st.tuples(st.just(s), st.integers(0, s - 1)))

SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _run(splitter: Splitter, text: str) -> None:
    chunks = splitter.split_text(text)
    check_chunks(splitter, text, chunks)
    again = splitter.split_text(text)
    assert [(c.start, c.end) for c in again] == [(c.start, c.end) for c in chunks]


@pytest.mark.parametrize(
    "cls", [RecursiveSplitter, CharacterSplitter, SentenceSplitter, MarkdownSplitter]
)
@SETTINGS
@given(text=texts, so=sizes)
def test_char_splitters(cls: type[Splitter], text: str, so: tuple[int, int]) -> None:
    size, overlap = so
    if cls is SentenceSplitter:
        overlap = min(overlap, 3)
    _run(cls(chunk_size=size, chunk_overlap=overlap), text)


@pytest.mark.parametrize("tok", ["minilm", "cl100k"])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, so=sizes)
def test_token_splitter(tok: str, text: str, so: tuple[int, int]) -> None:
    size, overlap = so
    _run(TokenSplitter(chunk_size=max(1, size // 4), chunk_overlap=overlap // 4 if size // 4 > overlap // 4 else 0, tokenizer=tok), text)


@pytest.mark.parametrize(
    "cls", [RecursiveSplitter, SentenceSplitter, MarkdownSplitter, CharacterSplitter]
)
@pytest.mark.parametrize("length", ["minilm", "cl100k"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, so=sizes)
def test_token_lengths(
    cls: type[Splitter], length: str, text: str, so: tuple[int, int]
) -> None:
    size, overlap = so
    size = max(2, size // 3)
    overlap = min(overlap // 3, size - 1, 2 if cls is SentenceSplitter else size)
    _run(cls(chunk_size=size, chunk_overlap=overlap, length=length), text)


def _weird_len(text: str) -> int:
    # not additive, not monotone in any simple way: counts words and CJK chars twice
    return len(text.split()) + 2 * sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff") + (len(text) % 3)


@pytest.mark.parametrize("cls", [RecursiveSplitter, SentenceSplitter, TokenSplitter])
@settings(max_examples=60, deadline=None)
@given(text=texts, so=sizes)
def test_callable_length(cls: type[Splitter], text: str, so: tuple[int, int]) -> None:
    size, overlap = so
    size = max(3, size // 4)
    overlap = min(overlap // 4, size - 1, 1 if cls is SentenceSplitter else size)
    _run(cls(chunk_size=size, chunk_overlap=overlap, length=_weird_len), text)
