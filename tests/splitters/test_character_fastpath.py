"""The character engine's shortcut for ladders starting ``"\\n\\n", "\\n"`` (both levels found
with one search for ``"\\n"``) gives exactly the spans of the reference engine
(:func:`greedy_spans` with level objects), also on ranges, with fences and on long texts; and
the character/recursive splitters give the same chunks through every entry point."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parallelrag.splitters import CharacterSplitter, RecursiveSplitter
from parallelrag.splitters.base import (
    Measure,
    Splitter,
    char_spans,
    default_separators,
    greedy_spans,
    make_levels,
    unit_overlap,
)
from parallelrag.splitters.length import resolve_length

from .test_splitter_properties import SETTINGS, sizes, texts

LADDERS = [
    ("\n\n", "\n", " "),  # CharacterSplitter's default
    tuple(default_separators()),  # RecursiveSplitter's default
    ("\n\n", "\n"),
    ("\n\n", "\n", ". ", " "),
    ("\n\n", "\n", "\n\n\n", "x", " "),
    ("\n", "\n\n", " "),  # the same separators in the other order: no shortcut
]

# pieces that exercise the newline shortcut: runs of newlines, whitespace around them, spaces
NL_PIECES = ["\n", "\n\n", "\n\n\n", " ", "  ", "\t", " \n", "\n ", ". ", "x", "ab", "word ", "中"]
nl_texts = st.lists(st.sampled_from(NL_PIECES), max_size=200).map("".join)

Fences = tuple[list[int], list[int]]


def _engine(
    text: str, seps: tuple[str, ...], size: int, units: int, lo: int = 0, hi: int | None = None,
    fences: Fences | None = None,
) -> list[tuple[int, int]]:
    hi = len(text) if hi is None else hi
    return [(a, b) for a, b, _ in char_spans(text, lo, hi, seps, size, units, fences)]


def _reference(
    text: str, seps: tuple[str, ...], size: int, units: int, lo: int = 0, hi: int | None = None,
    fences: Fences | None = None,
) -> list[tuple[int, int]]:
    hi = len(text) if hi is None else hi
    levels = make_levels(seps)
    measure = Measure(text, resolve_length("chars"))
    ov = unit_overlap(text, levels, measure, units)
    return greedy_spans(text, lo, hi, levels, size, measure, ov, fences or ())


@SETTINGS
@given(text=st.one_of(texts, nl_texts), so=sizes, seps=st.sampled_from(LADDERS))
def test_newline_ladders_equal_reference(
    text: str, so: tuple[int, int], seps: tuple[str, ...]
) -> None:
    size, units = so
    assert _engine(text, seps, size, units) == _reference(text, seps, size, units)


@SETTINGS
@given(text=nl_texts, so=sizes, bounds=st.tuples(st.integers(0, 400), st.integers(0, 400)))
def test_newline_ladder_on_a_range_equals_reference(
    text: str, so: tuple[int, int], bounds: tuple[int, int]
) -> None:
    size, units = so
    lo, hi = sorted(min(x, len(text)) for x in bounds)
    seps = ("\n\n", "\n", " ")
    assert _engine(text, seps, size, units, lo, hi) == _reference(text, seps, size, units, lo, hi)


@SETTINGS
@given(
    text=nl_texts,
    so=sizes,
    seps=st.sampled_from(LADDERS),
    cuts=st.lists(st.integers(0, 400), max_size=10),
)
def test_newline_ladders_with_fences_equal_reference(
    text: str, so: tuple[int, int], seps: tuple[str, ...], cuts: list[int]
) -> None:
    size, units = so
    points = sorted({c for c in cuts if c <= len(text)})
    fences = (points[0::2][: len(points) // 2], points[1::2])
    got = _engine(text, seps, size, units, fences=fences)
    assert got == _reference(text, seps, size, units, fences=fences)


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
def test_newline_ladders_equal_reference_on_long_texts(para_p: float, nl_p: float) -> None:
    rng = random.Random(int(para_p * 1000 + nl_p * 100))
    text = _random_text(rng, 60_000, para_p, nl_p)
    for seps in LADDERS:
        for size, units in [(1000, 100), (1000, 200), (300, 0), (64, 63), (200, 150)]:
            assert _engine(text, seps, size, units) == _reference(text, seps, size, units)


def test_benchmark_inputs_give_the_reference_spans() -> None:
    bench = Path(__file__).resolve().parents[2] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        from corpus import ascii_mb, cjk_mb
    finally:
        sys.path.remove(str(bench))
    for text in (next(ascii_mb()), next(cjk_mb())):
        for cls in (CharacterSplitter, RecursiveSplitter):
            sp = cls(1000, 100)
            want = _reference(text, sp._seps, 1000, 100)
            assert [(a, b) for a, b, _ in sp._spans(text)] == want
            assert [(c.start, c.end) for c in sp.split_text(text)] == want


@SETTINGS
@given(docs=st.lists(st.one_of(texts, nl_texts), max_size=8), so=sizes,
       cls=st.sampled_from([CharacterSplitter, RecursiveSplitter]))
def test_split_many_equals_split_text(
    docs: list[str], so: tuple[int, int], cls: type[Splitter]
) -> None:
    size, units = so
    sp = cls(size, units)  # type: ignore[call-arg]
    assert sp.split_many(docs) == [sp.split_text(d) for d in docs]
    with_md = sp.split_many(docs, metadatas=[{"i": i} for i in range(len(docs))])
    assert [[(c.start, c.end) for c in cs] for cs in with_md] == [
        [(c.start, c.end) for c in sp.split_text(d)] for d in docs
    ]
    assert all(c.metadata == {"i": i} for i, cs in enumerate(with_md) for c in cs)


def test_fences_over_newline_cuts_equal_reference() -> None:
    # a fence over the "\n\n" cut: the chunk ends at the "\n" before it, not at a word
    text = "aaaa\nbbbb\n\ncccc dddd eeee"
    fences = ([8], [14])
    assert _engine(text, ("\n\n", "\n", " "), 14, 0, fences=fences) == [(0, 4), (5, 15), (16, 25)]
    assert _reference(text, ("\n\n", "\n", " "), 14, 0, fences=fences) == [(0, 4), (5, 15), (16, 25)]
    # many random texts and fences (hypothesis above rarely puts a fence right over a cut)
    rng = random.Random(7)
    for _ in range(400):
        text = "".join(rng.choice(NL_PIECES) for _ in range(rng.randint(0, 120)))
        points = sorted({rng.randint(0, len(text)) for _ in range(rng.randint(0, 12))})
        fences = (points[0::2][: len(points) // 2], points[1::2])
        seps = rng.choice(LADDERS)
        size = rng.randint(1, 40)
        units = rng.randint(0, size - 1)
        got = _engine(text, seps, size, units, fences=fences)
        assert got == _reference(text, seps, size, units, fences=fences), (text, fences, seps)
