"""The cl100k TokenSplitter's byte-offset path: token boundaries from a table of token byte
lengths, windows placed on UTF-8 byte offsets, only window ends mapped to characters.

Every test compares against an independent reference: token start offsets computed one token at
a time from tiktoken's ``encode_ordinary`` + ``decode_single_token_bytes``, and the
character-offset window loop (``TokenSplitter._windows``) that the byte loop must reproduce
exactly. Tests that take ``engine`` run on both cl100k engines (fastokens, the default where it
is installed, and tiktoken), so the fastokens engine is checked token for token against
tiktoken."""

from __future__ import annotations

import importlib.util
import itertools
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parallelrag.splitters import TokenSplitter
from parallelrag.splitters.length import (
    _TIKTOKEN_CUT,
    _TIKTOKEN_PIECE_CHARS,
    _load_cl100k,
    _load_minilm,
    _monotone,
    _piece_cuts,
    _TiktokenLength,
    char_offsets,
    resolve_length,
)

from ._checks import check_chunks
from .test_splitter_properties import PIECES, texts

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# both engines where fastokens is installed (a test below requires it where it has wheels)
ENGINES = ["tiktoken"] + (["fastokens"] if importlib.util.find_spec("fastokens") else [])
engines = pytest.mark.parametrize("engine", ENGINES)


def _cl100k(engine: str) -> _TiktokenLength:
    length = _TiktokenLength("cl100k", engine)
    length.load()
    return length


def _splitter(size: int, overlap: int, engine: str) -> TokenSplitter:
    return TokenSplitter(size, overlap, length=_cl100k(engine))


def _reference_starts(text: str) -> list[int]:
    """Char offset where each cl100k token starts, one token at a time (slow, obvious)."""
    enc = _load_cl100k()
    clean = "".join("\ufffd" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    raw = clean.encode("utf-8")
    lead_before = [0] * (len(raw) + 1)  # lead bytes in raw[:p]
    for p, byte in enumerate(raw):
        lead_before[p + 1] = lead_before[p] + (1 if byte & 0xC0 != 0x80 else 0)
    out: list[int] = []
    pos = 0
    for tok in enc.encode_ordinary(clean):
        out.append(lead_before[pos + 1] - 1)  # the character containing the token's first byte
        pos += len(enc.decode_single_token_bytes(tok))
    assert pos == len(raw)
    return out


def _reference_spans(splitter: TokenSplitter, text: str) -> list[tuple[int, int]]:
    if not text or text.isspace():
        return []
    return [(a, b) for a, b, _ in splitter._windows(text, _reference_starts(text))]


def _spans(splitter: TokenSplitter, text: str) -> list[tuple[int, int]]:
    return [(c.start, c.end) for c in splitter.split_text(text)]


@engines
@SETTINGS
@given(text=texts)
def test_token_starts_match_one_token_at_a_time(engine: str, text: str) -> None:
    length = _cl100k(engine)
    assert length.token_starts(text) == _reference_starts(text)


sizes = st.integers(1, 40).flatmap(lambda s: st.tuples(st.just(s), st.integers(0, s - 1)))


@engines
@SETTINGS
@given(text=texts, so=sizes)
def test_byte_windows_equal_char_windows(engine: str, text: str, so: tuple[int, int]) -> None:
    size, overlap = so
    splitter = _splitter(size, overlap, engine)
    assert _spans(splitter, text) == _reference_spans(splitter, text)


@engines
@pytest.mark.parametrize("size,overlap", [(1, 0), (2, 1), (3, 2), (4, 3), (5, 0), (7, 3), (64, 8)])
def test_multi_token_characters(engine: str, size: int, overlap: int) -> None:
    # emoji, ZWJ sequences, random CJK and combining marks: cl100k splits many of these
    # characters into several byte tokens, so windows end inside characters all the time
    rng = random.Random(size * 100 + overlap)
    alphabet = ["😀", "👩‍👩‍👧", "鷇", "垥", "禴", "e\u0301", "\u0301", "ﬁ", " ", "\n", "a", "\ud800"]
    for _ in range(40):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200)))
        splitter = _splitter(size, overlap, engine)
        chunks = splitter.split_text(text)
        check_chunks(splitter, text, chunks)
        assert [(c.start, c.end) for c in chunks] == _reference_spans(splitter, text)


@engines
def test_special_token_text_is_ordinary_text(engine: str) -> None:
    text = "a <|endoftext|> b <|fim_prefix|><|endofprompt|> c " * 20
    length = _cl100k(engine)
    bt = length.byte_tokens(text)
    n_tokens = len(_load_cl100k().encode_ordinary(text))
    assert len(bt.offsets) == n_tokens + 1
    assert length(text) == n_tokens
    assert length.token_starts(text) == _reference_starts(text)
    splitter = TokenSplitter(8, 2, length=length)
    assert _spans(splitter, text) == _reference_spans(splitter, text)


@engines
def test_byte_tokens_offsets(engine: str) -> None:
    length = _cl100k(engine)
    text = "héllo wörld 中文 😀\ud800x"
    bt = length.byte_tokens(text)
    assert bt.text == text.replace("\ud800", "\ufffd")
    assert bt.raw == bt.text.encode("utf-8")
    assert bt.offsets[0] == 0 and bt.offsets[-1] == len(bt.raw)
    assert np.all(np.diff(bt.offsets) > 0)
    ascii_bt = length.byte_tokens("plain ascii text")
    assert ascii_bt.raw is None and ascii_bt.offsets[-1] == len("plain ascii text")
    empty = length.byte_tokens("")
    assert empty.offsets.tolist() == [0]


def test_char_offsets() -> None:
    text = "aé中😀b\n€"
    raw = text.encode("utf-8")
    boundaries = [len(text[:k].encode("utf-8")) for k in range(len(text) + 1)]
    rng = random.Random(0)
    for _ in range(50):
        picks = [rng.choice(boundaries) for _ in range(rng.randint(1, 12))]
        got = char_offsets(raw, picks).tolist()
        assert got == [boundaries.index(p) for p in picks]
    assert char_offsets(b"", [0]).tolist() == [0]


@engines
def test_large_text_pieces_match_whole_encode(engine: str) -> None:
    # long enough to be cut into pieces encoded in threads
    rng = random.Random(7)
    # ".\n" and "。\n\n" are single pre-tokens: a cut between their characters would change
    # the tokens (the pieces must encode exactly like the whole text)
    words = ["alpha", "béta", "中文字符", "😀😀", "x" * 30, "\n\n", "  ", "e\u0301", "\ud800", "."]
    words += ["end.\nnext", "句子。\n\n下", "字，字", "x\ny", "a\r\nb"]
    text = " ".join(rng.choice(words) for _ in range(_TIKTOKEN_PIECE_CHARS))
    assert len(text) >= _TIKTOKEN_PIECE_CHARS * 2
    length = _cl100k(engine)
    assert length.token_starts(text) == _reference_starts(text)
    splitter = TokenSplitter(256, 32, length=length)
    chunks = splitter.split_text(text)
    check_chunks(splitter, text, chunks)
    assert [(c.start, c.end) for c in chunks] == _reference_spans(splitter, text)


def test_piece_cuts_keep_the_whole_text_encode() -> None:
    enc = _load_cl100k()
    alphabet = [
        " ", "\n", "\r\n", ".", "a", "Z", "9", "中", "。", "，", "'s", "'ll", "\t", "\x1c",
        "\u00a0", "\u3000", "😀", "e\u0301", "_", "-", "あ", "ア", "한", "、", "！", "？", "x\n",
        ".\n", "  ",
    ]
    rng = random.Random(11)
    for _ in range(1500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200)))
        cuts = _piece_cuts(text, _TIKTOKEN_CUT, 3)  # tiny pieces: a cut at every candidate
        pieces = [enc.encode_ordinary(text[a:b]) for a, b in itertools.pairwise(cuts)]
        assert [t for p in pieces for t in p] == enc.encode_ordinary(text), (text, cuts)


@engines
def test_large_ascii_stride_path(engine: str) -> None:
    text = "".join(f"word{i} " + ("\n" if i % 17 == 0 else "") for i in range(60_000))
    assert text.isascii() and len(text) >= _TIKTOKEN_PIECE_CHARS * 2
    for size, overlap in [(256, 32), (100, 0), (7, 6)]:
        splitter = _splitter(size, overlap, engine)
        chunks = splitter.split_text(text)
        check_chunks(splitter, text, chunks)
        assert [(c.start, c.end) for c in chunks] == _reference_spans(splitter, text)


@engines
def test_split_many_matches_split_text_with_threads(engine: str) -> None:
    rng = random.Random(3)
    docs = ["", "   \n", "\ud800", "abc " * 10, "中文" * 5]
    for _ in range(40):
        docs.append("".join(rng.choice(PIECES) for _ in range(rng.randint(0, 400))))
    docs.append(" ".join(rng.choice(["word", "中文", "😀", "\n"]) for _ in range(70_000)))
    docs.append("plain " * 30_000)
    splitter = _splitter(64, 8, engine)
    got = splitter.split_many(docs)
    assert len(got) == len(docs)
    for doc, chunks in zip(docs, got, strict=True):
        assert [(c.start, c.end) for c in chunks] == _spans(splitter, doc)
        check_chunks(splitter, doc, chunks)


def test_monotone_fast_path_and_fix() -> None:
    ordered = [0, 0, 3, 5, 9]
    assert _monotone(ordered) is ordered
    assert _monotone([0, 5, 3, 7, 6]) == [0, 5, 5, 7, 7]


# -- MiniLM: offsets read lazily from the tokenizers Encodings


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, so=sizes)
def test_minilm_lazy_offsets_equal_full_offsets(text: str, so: tuple[int, int]) -> None:
    size, overlap = so
    splitter = TokenSplitter(size, overlap, "minilm")
    expected = (
        []
        if not text or text.isspace()
        else [(a, b) for a, b, _ in splitter._windows(text, splitter.length.token_starts(text))]
    )
    assert _spans(splitter, text) == expected


def test_minilm_lazy_starts_sequence() -> None:
    length = resolve_length("minilm")
    rng = random.Random(5)
    words = ["alpha", "Béta", "中文", "😀", "x" * 30, "\n", "ﬁ", "\ud800", "don't"]
    small = " ".join(rng.choice(words) for _ in range(50))
    big = " ".join(rng.choice(words) for _ in range(40_000))  # encoded in pieces
    lazy = length.lazy_token_starts_batch([small, big, ""])
    assert lazy is not None
    for text, seq in zip([small, big, ""], lazy, strict=True):
        full = length.token_starts(text)
        assert len(seq) == len(full)
        assert list(seq) == full
        if full:
            assert seq[-1] == full[-1] and seq[3:9] == full[3:9]
            with pytest.raises(IndexError):
                seq[len(full)]
    # a user's tokenizer may emit offsets out of order: it keeps the full, repaired list
    from tokenizers import Tokenizer

    own = resolve_length(Tokenizer.from_str(_load_minilm().to_str()))
    assert own.lazy_token_starts_batch(["a b"]) is None


def test_minilm_split_many_matches_split_text() -> None:
    rng = random.Random(8)
    docs = ["", " \n ", "\ud800 x"]
    for _ in range(30):
        docs.append("".join(rng.choice(PIECES) for _ in range(rng.randint(0, 300))))
    docs.append(" ".join(rng.choice(["word", "中文", "x\n", "Hello."]) for _ in range(70_000)))
    splitter = TokenSplitter(64, 8, "minilm")
    got = splitter.split_many(docs)
    for doc, chunks in zip(docs, got, strict=True):
        assert [(c.start, c.end) for c in chunks] == _spans(splitter, doc)
        check_chunks(splitter, doc, chunks)


@engines
@pytest.mark.parametrize("run", [1, 2, 5, 64])
def test_window_runs_interleave_with_the_loop(
    monkeypatch: pytest.MonkeyPatch, engine: str, run: int
) -> None:
    """Runs of regular windows (checked with numpy, ``_RUN`` at a time) and the loop (windows
    whose boundaries fall inside a character) hand over to each other at every position."""
    from parallelrag.splitters import token as token_module

    monkeypatch.setattr(token_module, "_RUN", run)
    rng = random.Random(run)
    # mostly ASCII words with a few multi-token characters: long runs broken now and then
    common = ["word ", "alpha ", "x\n", "\n\n", "  "]
    rare = ["😀", "鷇", "e\u0301", "中文", "\xa0", "\u3000", "👩‍👩‍👧"]
    for size, overlap in [(1, 0), (3, 1), (8, 2), (16, 15), (40, 8)]:
        splitter = _splitter(size, overlap, engine)
        for _ in range(12):
            rare_share = rng.choice([0.0, 0.02, 0.2, 0.8])
            text = "".join(
                rng.choice(rare) if rng.random() < rare_share else rng.choice(common)
                for _ in range(rng.randint(1, 600))
            ) + "é"  # non-ASCII: the byte loop, not the ASCII stride
            chunks = splitter.split_text(text)
            check_chunks(splitter, text, chunks)
            assert [(c.start, c.end) for c in chunks] == _reference_spans(splitter, text)
