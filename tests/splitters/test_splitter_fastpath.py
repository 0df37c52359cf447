"""The one-loop character fast path gives exactly the spans of the generic engine."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from parallelrag.splitters import CharacterSplitter, RecursiveSplitter
from parallelrag.splitters.base import (
    Measure,
    char_spans,
    default_separators,
    greedy_spans,
    make_levels,
    unit_overlap,
)
from parallelrag.splitters.length import resolve_length

from .test_splitter_properties import SETTINGS, sizes, texts


def _fast(text: str, seps: list[str], size: int, overlap: int) -> list[tuple[int, int]]:
    return [(a, b) for a, b, _ in char_spans(text, 0, len(text), seps, size, overlap)]


SEPARATOR_SETS = [
    default_separators(),
    ["\n\n"],
    ["\n\n", "\n", " "],
    ["xx", "\n"],
    [". ", " "],
    [],
]


def _generic(text: str, seps: list[str], size: int, overlap: int) -> list[tuple[int, int]]:
    levels = make_levels(seps)
    measure = Measure(text, resolve_length("chars"))
    ov = unit_overlap(text, levels, measure, overlap)
    return greedy_spans(text, 0, len(text), levels, size, measure, ov)


@SETTINGS
@given(text=texts, size_overlap=sizes, seps=st.sampled_from(SEPARATOR_SETS))
def test_char_spans_equal_generic_engine(
    text: str, size_overlap: tuple[int, int], seps: list[str]
) -> None:
    size, overlap = size_overlap
    assert _fast(text, seps, size, overlap) == _generic(text, seps, size, overlap)


def test_char_spans_equal_generic_on_long_text() -> None:
    para = "Some words here. And more words, then a clause; done! " * 7
    text = "\n\n".join(para[: 50 + 37 * i] for i in range(40)) + "\n" + "y" * 3000
    for seps in SEPARATOR_SETS:
        for size, overlap in [(1000, 200), (1000, 100), (300, 0), (64, 63)]:
            assert _fast(text, seps, size, overlap) == _generic(text, seps, size, overlap)


def test_splitters_use_fast_path_with_same_chunks() -> None:
    text = ("alpha beta gamma. " * 30 + "\n\n") * 20
    for sp in (CharacterSplitter(200, 50), RecursiveSplitter(200, 50)):
        chunks = sp.split_text(text)
        seps = list(sp._seps)
        assert [(c.start, c.end) for c in chunks] == _generic(text, seps, 200, 50)
        assert all(c.metadata == {} for c in chunks)
        chunks[0].metadata["k"] = 1  # every chunk owns its metadata dict
        assert chunks[1].metadata == {}


def _markdown_generic(text: str, size: int, overlap: int) -> list[tuple[int, int, list[str]]]:
    from parallelrag.splitters.markdown import parse_markdown

    if not text or text.isspace():
        return []
    sections, fences = parse_markdown(text)
    kept = [(a, b) for a, b in fences if b - a <= size]
    protected = ([a for a, _ in kept], [b for _, b in kept])
    levels = make_levels(["\n\n", "\n", " "])
    measure = Measure(text, resolve_length("chars"))
    ov = unit_overlap(text, levels, measure, overlap)
    return [
        (a, b, path)
        for lo, hi, path in sections
        for a, b in greedy_spans(text, lo, hi, levels, size, measure, ov, protected)
    ]


MD_PIECES = [
    "# T\n",
    "## Sub\n",
    "```\n",
    "~~~\n",
    "code x\n",
    "\n\n",
    "\n",
    "word ",
    "  ",
    "x" * 30,
]


@SETTINGS
@given(
    text=st.one_of(texts, st.lists(st.sampled_from(MD_PIECES), max_size=80).map("".join)),
    size_overlap=sizes,
)
def test_markdown_fast_sections_equal_generic(text: str, size_overlap: tuple[int, int]) -> None:
    from parallelrag.splitters import MarkdownSplitter

    size, overlap = size_overlap
    got = [
        (c.start, c.end, c.metadata["headings"])
        for c in MarkdownSplitter(size, overlap).split_text(text)
    ]
    assert got == _markdown_generic(text, size, overlap)


@SETTINGS
@given(
    text=texts,
    size_overlap=sizes,
    seps=st.sampled_from(SEPARATOR_SETS),
    cuts=st.lists(st.integers(0, 300), max_size=8),
)
def test_char_spans_with_fences_equal_generic(
    text: str, size_overlap: tuple[int, int], seps: list[str], cuts: list[int]
) -> None:
    size, overlap = size_overlap
    points = sorted({c for c in cuts if c <= len(text)})
    fstarts, fends = points[0::2][: len(points) // 2], points[1::2]
    fences = (list(fstarts), list(fends))
    levels = make_levels(seps)
    measure = Measure(text, resolve_length("chars"))
    ov = unit_overlap(text, levels, measure, overlap)
    expected = greedy_spans(text, 0, len(text), levels, size, measure, ov, fences)
    got = char_spans(text, 0, len(text), seps, size, overlap, fences)
    assert [(a, b) for a, b, _ in got] == expected
