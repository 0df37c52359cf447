"""Behaviour tests: configuration errors, metadata, markdown structure, huge inputs."""

from __future__ import annotations

import itertools
import time

import pytest

from parallelrag.errors import ConfigError
from parallelrag.splitters import (
    CharacterSplitter,
    MarkdownSplitter,
    RecursiveSplitter,
    SentenceSplitter,
    Splitter,
    TokenSplitter,
)

from ._checks import check_chunks

ALL = [RecursiveSplitter, CharacterSplitter, SentenceSplitter, MarkdownSplitter, TokenSplitter]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("size,overlap", [(0, 0), (-5, 0), (10, 10), (10, 11), (10, -1)])
def test_bad_sizes_raise_value_error(cls: type[Splitter], size: int, overlap: int) -> None:
    with pytest.raises(ValueError) as info:
        cls(chunk_size=size, chunk_overlap=overlap)
    assert isinstance(info.value, ConfigError)


def test_bad_length_and_types() -> None:
    with pytest.raises(ConfigError):
        RecursiveSplitter(length="no-such-tokenizer")
    with pytest.raises(ConfigError):
        RecursiveSplitter(chunk_size=10.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RecursiveSplitter().split_text(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        RecursiveSplitter().split_many(["a", "b"], metadatas=[{}])


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("text", ["", " ", "\n\n\t \r\n", "\u2028\u3000"])
def test_empty_and_whitespace(cls: type[Splitter], text: str) -> None:
    assert cls(chunk_size=10, chunk_overlap=2).split_text(text) == []


@pytest.mark.parametrize("cls", ALL)
def test_metadata_is_copied(cls: type[Splitter]) -> None:
    meta = {"source": "a.txt", "tags": ["x"]}
    chunks = cls(chunk_size=8, chunk_overlap=1).split_text("one two three four five six. " * 5, meta)
    assert len(chunks) > 1
    for c in chunks:
        assert c.metadata["source"] == "a.txt"
    chunks[0].metadata["source"] = "changed"
    assert chunks[1].metadata["source"] == "a.txt"
    assert meta["source"] == "a.txt"


def test_recursive_prefers_paragraphs_then_lines_then_words() -> None:
    text = "alpha beta gamma.\n\ndelta epsilon\nzeta eta theta iota kappa"
    chunks = RecursiveSplitter(chunk_size=20, chunk_overlap=0).split_text(text)
    assert [c.text for c in chunks] == ["alpha beta gamma.", "delta epsilon", "zeta eta theta iota", "kappa"]


def test_recursive_overlap_starts_at_a_boundary() -> None:
    text = " ".join(f"w{i:03d}" for i in range(200))
    chunks = RecursiveSplitter(chunk_size=50, chunk_overlap=12).split_text(text)
    check_chunks(RecursiveSplitter(chunk_size=50, chunk_overlap=12), text, chunks)
    for prev, c in itertools.pairwise(chunks):
        assert c.start < prev.end  # overlaps
        assert c.text.startswith("w")  # at a word start
        assert prev.end - c.start <= 12


def test_character_splitter_separator() -> None:
    text = "a|b|c|dddddddddddddddd"
    s = CharacterSplitter(chunk_size=5, chunk_overlap=0, separator="|")
    assert [c.text for c in s.split_text(text)] == ["a|b|", "c|", "ddddd", "ddddd", "ddddd", "d"]


def test_sentence_splitter_keeps_sentences_and_overlaps_in_sentences() -> None:
    text = "One is here. Two is there! Three? Four is last. 五句。六句！"
    s = SentenceSplitter(chunk_size=40, chunk_overlap=1)
    chunks = s.split_text(text)
    check_chunks(s, text, chunks)
    assert chunks[0].text == "One is here. Two is there! Three?"
    assert chunks[1].text.startswith("Three? Four is last.")  # one sentence repeated
    assert all(c.text[-1] in ".!?。！" for c in chunks)


def test_markdown_headings_and_fences() -> None:
    code = "```python\n" + "\n".join(f"x{i} = {i}" for i in range(12)) + "\n```"
    text = (
        "intro text\n\n# Guide\n\nSome words here.\n\n## Install\n\n"
        f"Run this:\n\n{code}\n\nafter code\n\n"
        "```\n# not a heading\n```\n\n### Deep ###\ndeep text\n\n# Other\nbye"
    )
    s = MarkdownSplitter(chunk_size=len(code) + 5, chunk_overlap=0)
    chunks = s.split_text(text)
    check_chunks(s, text, chunks)
    by_text = {c.text: c.metadata["headings"] for c in chunks}
    assert by_text["intro text"] == []
    assert any(code in c.text for c in chunks), "fence kept whole"
    code_chunk = next(c for c in chunks if code in c.text)
    assert code_chunk.metadata["headings"] == ["Guide", "Install"]
    deep = next(c for c in chunks if "deep text" in c.text)
    assert deep.metadata["headings"] == ["Guide", "Install", "Deep"]
    other = next(c for c in chunks if "bye" in c.text)
    assert other.metadata["headings"] == ["Other"]
    assert not any(h == "not a heading" for c in chunks for h in c.metadata["headings"])


def test_markdown_small_fence_never_split_even_when_window_ends_inside() -> None:
    code = "```\n" + "\n".join(["line of code"] * 5) + "\n```"
    text = "# T\n\n" + "word " * 30 + "\n\n" + code + "\n\nend"
    for size in range(len(code), len(code) + 40, 3):
        s = MarkdownSplitter(chunk_size=size, chunk_overlap=0)
        chunks = s.split_text(text)
        check_chunks(s, text, chunks)
        assert any(code in c.text for c in chunks), size


def test_markdown_large_fence_is_split_at_lines() -> None:
    code = "```\n" + "\n".join(f"print({i})" for i in range(100)) + "\n```"
    s = MarkdownSplitter(chunk_size=100, chunk_overlap=0)
    chunks = s.split_text(code)
    check_chunks(s, code, chunks)
    assert len(chunks) > 5
    assert all(c.text.endswith((")", "```")) for c in chunks)


def test_token_splitter_minilm_counts_and_reencode() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 200
    s = TokenSplitter(chunk_size=64, chunk_overlap=8, tokenizer="minilm")
    chunks = s.split_text(text)
    check_chunks(s, text, chunks)
    for c in chunks:  # on ordinary text the chunk re-encodes to the same budget
        assert s.length(c.text) <= 64


def test_token_splitter_cl100k_and_tokenizer_object() -> None:
    from tokenizers import Tokenizer

    from parallelrag.splitters.length import _load_minilm

    text = "Hello, world! Ünïcödé 中文 😀 " * 50
    s = TokenSplitter(chunk_size=30, chunk_overlap=5, tokenizer="cl100k")
    check_chunks(s, text, s.split_text(text))
    tok = Tokenizer.from_str(_load_minilm().to_str())
    tok.enable_truncation(8)  # a private copy is used, without truncation
    s2 = TokenSplitter(chunk_size=30, chunk_overlap=5, tokenizer=tok)
    check_chunks(s2, text, s2.split_text(text))
    assert tok.truncation is not None


def test_length_in_tokens_for_recursive() -> None:
    text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 100
    s = RecursiveSplitter(chunk_size=50, chunk_overlap=5, length="minilm")
    chunks = s.split_text(text)
    check_chunks(s, text, chunks)
    assert s.length(text[:57]) == 21  # one sentence is 21 word pieces: two fit in 50
    assert min(s.length(c.text) for c in chunks[:-1]) >= 40


# --------------------------------------------------------------------------- huge inputs

BIG_LINE = "x" * 10_000_000
TINY_LINES = "ab\n" * 1_000_000


@pytest.mark.parametrize("cls", [RecursiveSplitter, CharacterSplitter, SentenceSplitter, MarkdownSplitter])
@pytest.mark.parametrize("which", ["line", "lines"])
def test_huge_inputs_are_linear(cls: type[Splitter], which: str) -> None:
    text = BIG_LINE if which == "line" else TINY_LINES
    s = cls(chunk_size=1000, chunk_overlap=100 if cls is not SentenceSplitter else 1)
    t0 = time.perf_counter()
    chunks = s.split_text(text)
    dt = time.perf_counter() - t0
    assert dt < 5.0, dt
    assert chunks[0].start == 0 and chunks[-1].end == len(text.rstrip())
    assert all(len(c.text) <= 1000 for c in chunks)


@pytest.mark.parametrize("tok", ["minilm", "cl100k"])
def test_huge_inputs_token_splitter(tok: str) -> None:
    s = TokenSplitter(chunk_size=256, chunk_overlap=32, tokenizer=tok)
    # 2 MB each keeps the suite short; the 10 MB cases are measured in the benchmark
    for text in ("x" * 2_000_000, "ab\n" * 700_000):
        t0 = time.perf_counter()
        chunks = s.split_text(text)
        assert time.perf_counter() - t0 < 8.0
        assert chunks and chunks[-1].end == len(text.rstrip())
