"""The paragraph engine (ladders starting ``"\\n\\n", "\\n"``) gives exactly the spans of the
general character engine, and ``split_text`` builds exactly the chunks the base would."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parallelrag.documents import Chunk
from parallelrag.splitters import CharacterSplitter, RecursiveSplitter
from parallelrag.splitters.base import (
    Splitter,
    _char_spans_general,
    _para_engine,
    char_spans,
    default_separators,
)

from .test_splitter_properties import SETTINGS, sizes, texts

LADDERS = [
    ("\n\n", "\n", " "),  # CharacterSplitter's default
    tuple(default_separators()),  # RecursiveSplitter's default
    ("\n\n", "\n"),
    ("\n\n", "\n", ". ", " "),
    ("\n\n", "\n", "\n\n\n", "x", " "),
]

# pieces that exercise the newline tricks: runs of newlines, whitespace around them, spaces
NL_PIECES = ["\n", "\n\n", "\n\n\n", " ", "  ", "\t", " \n", "\n ", ". ", "x", "ab", "word ", "中"]
nl_texts = st.lists(st.sampled_from(NL_PIECES), max_size=200).map("".join)


def _general(text: str, seps: tuple[str, ...], size: int, units: int) -> list[tuple[int, int]]:
    return [(a, b) for a, b, _ in _char_spans_general(text, 0, len(text), seps, size, units)]


def _para(text: str, seps: tuple[str, ...], size: int, units: int) -> list[tuple[int, int]]:
    return [(a, b) for a, b, _ in _para_engine(text, 0, len(text), seps, size, units, False)]


@SETTINGS
@given(text=st.one_of(texts, nl_texts), so=sizes, seps=st.sampled_from(LADDERS))
def test_para_engine_equals_general(text: str, so: tuple[int, int], seps: tuple[str, ...]) -> None:
    size, units = so
    assert _para(text, seps, size, units) == _general(text, seps, size, units)


@SETTINGS
@given(text=nl_texts, so=sizes, bounds=st.tuples(st.integers(0, 400), st.integers(0, 400)))
def test_para_engine_on_a_range_equals_general(
    text: str, so: tuple[int, int], bounds: tuple[int, int]
) -> None:
    size, units = so
    lo, hi = sorted(min(x, len(text)) for x in bounds)
    seps = ("\n\n", "\n", " ")
    got = [(a, b) for a, b, _ in _para_engine(text, lo, hi, seps, size, units, False)]
    want = [(a, b) for a, b, _ in _char_spans_general(text, lo, hi, seps, size, units)]
    assert got == want


@SETTINGS
@given(text=st.one_of(texts, nl_texts), so=sizes)
def test_split_text_builds_the_same_chunks(text: str, so: tuple[int, int]) -> None:
    size, units = so
    for sp in (CharacterSplitter(size, units), RecursiveSplitter(size, units)):
        spans = _char_spans_general(text, 0, len(text), sp._seps, size, units)
        want = Splitter._build(text, spans, None) if text.strip() else []
        got = sp.split_text(text)
        assert got == want
        assert all(type(c) is Chunk for c in got)


def test_char_spans_dispatches_to_the_para_engine_only_without_fences() -> None:
    text = "one two\n\nthree four five\nsix seven\n\n\n eight " * 30
    seps = ("\n\n", "\n", " ")
    assert char_spans(text, 0, len(text), seps, 40, 10) == _para_engine(
        text, 0, len(text), seps, 40, 10, False
    )
    fences = ([5], [30])
    assert char_spans(text, 0, len(text), seps, 40, 10, fences) == _char_spans_general(
        text, 0, len(text), seps, 40, 10, fences
    )


def test_built_chunks_are_ordinary_chunks() -> None:
    text = "alpha beta gamma. " * 30 + "\n\n" + "delta " * 200
    chunks = CharacterSplitter(200, 50).split_text(text)
    assert len(chunks) > 3
    for i, c in enumerate(chunks):
        assert c == Chunk(text[c.start : c.end], c.start, c.end, i, {})
        assert repr(c) == repr(Chunk(c.text, c.start, c.end, c.index, {}))
    chunks[0].metadata["k"] = 1  # every chunk owns its metadata dict
    assert chunks[1].metadata == {}
    # metadata given: the base path, same offsets, metadata copied into each chunk
    with_md = CharacterSplitter(200, 50).split_text(text, {"src": "x"})
    assert [(c.start, c.end) for c in with_md] == [(c.start, c.end) for c in chunks]
    assert all(c.metadata == {"src": "x"} for c in with_md)


def _random_text(rng: random.Random, n: int, para_p: float, nl_p: float) -> str:
    words = ["alpha", "be", "gamma", "delta", "x" * 30, "中文", "e\u0301"]
    parts: list[str] = []
    size = 0
    while size < n:
        w = rng.choice(words) + rng.choice([" ", " ", " ", ". ", ", ", "  "])
        r = rng.random()
        if r < para_p:
            w += rng.choice(["\n\n", "\n\n\n", " \n\n", "\n \n"])
        elif r < para_p + nl_p:
            w += "\n"
        parts.append(w)
        size += len(w)
    return "".join(parts)


@pytest.mark.parametrize("para_p,nl_p", [(0.02, 0.0), (0.1, 0.05), (0.0, 0.0), (0.0, 0.2)])
def test_para_engine_equals_general_on_long_texts(para_p: float, nl_p: float) -> None:
    rng = random.Random(int(para_p * 1000 + nl_p * 100))
    text = _random_text(rng, 60_000, para_p, nl_p)
    for seps in LADDERS:
        for size, units in [(1000, 100), (1000, 200), (300, 0), (64, 63), (200, 150)]:
            assert _para(text, seps, size, units) == _general(text, seps, size, units)


def test_benchmark_inputs_give_the_general_engine_chunks() -> None:
    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        from corpus import ascii_mb, cjk_mb
    finally:
        sys.path.remove(str(bench))
    for text in (next(ascii_mb()), next(cjk_mb())):
        for cls, units in ((CharacterSplitter, 100), (RecursiveSplitter, 100)):
            sp = cls(1000, units)
            spans = _char_spans_general(text, 0, len(text), sp._seps, 1000, units)
            assert sp._spans(text) == spans
            assert sp.split_text(text) == Splitter._build(text, spans, None)


@SETTINGS
@given(docs=st.lists(st.one_of(texts, nl_texts), max_size=8), so=sizes,
       cls=st.sampled_from([CharacterSplitter, RecursiveSplitter]))
def test_split_many_fast_path_equals_the_base_path(
    docs: list[str], so: tuple[int, int], cls: type[Splitter]
) -> None:
    """``split_many`` builds chunks in the engine (no metadata): the same chunks as the base
    path (spans, then chunks) and as ``split_text`` of each text."""
    size, units = so
    sp = cls(size, units)  # type: ignore[call-arg]
    fast = sp.split_many(docs)
    base = Splitter.split_many(sp, docs)
    assert fast == base
    assert fast == [sp.split_text(d) for d in docs]


def test_more_chunks_than_the_first_block_holds() -> None:
    # the first block of chunk objects is sized from the text's length; many short paragraphs
    # give far more chunks than that estimate, so further blocks follow
    text = ("x" * 30 + "\n\n") * 600  # a 50-character window holds one cut, at 30
    sp = CharacterSplitter(50, 0)
    chunks = sp.split_many([text, "x", " ", text[:10]])
    assert len(chunks[0]) == 600 > len(text) // 50 + 2  # past the first block's estimate
    assert [len(c) for c in chunks] == [len(sp.split_text(text)), 1, 0, 1]
    assert chunks[0] == Splitter.split_many(sp, [text])[0]
    assert all(c.text == text[c.start : c.end] for c in chunks[0])
    assert [c.index for c in chunks[0]] == list(range(len(chunks[0])))


def test_split_many_takes_str_subclasses_like_split_text() -> None:
    """A ``str`` subclass is a text (split_text takes it through the general path); the
    batch fast path used to reject it with TypeError. Non-str items still raise TypeError."""
    class Text(str):
        pass

    for splitter in (RecursiveSplitter(50, 10), CharacterSplitter(40, 5)):
        plain = "A first paragraph.\n\nA second, longer paragraph of words. " * 6
        docs = [Text(plain), plain, Text("")]
        got = splitter.split_many(docs)
        expected = [splitter.split_text(d) for d in docs]
        assert [[(c.start, c.end, c.text) for c in cs] for cs in got] == [
            [(c.start, c.end, c.text) for c in cs] for cs in expected
        ]
        assert got[0] and not got[2]
        with pytest.raises(TypeError, match="texts must be str"):
            splitter.split_many([plain, b"bytes"])  # type: ignore[list-item]
