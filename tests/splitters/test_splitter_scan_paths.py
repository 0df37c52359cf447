"""The fast paths behind the character and markdown splitters give exactly the reference results:
the find-based Markdown line scan vs the reference regex, the whitespace set vs ``str.isspace``,
the trailing-whitespace shortcuts and fenced cuts vs the generic engine, and linear time on
marker-heavy inputs."""

from __future__ import annotations

import re
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parallelrag.splitters import CharacterSplitter, MarkdownSplitter, RecursiveSplitter
from parallelrag.splitters.base import _SPACE, Measure, char_spans, greedy_spans, make_levels
from parallelrag.splitters.length import resolve_length
from parallelrag.splitters.markdown import _scan, parse_markdown

from ._checks import check_chunks
from .test_splitter_fastpath import _markdown_generic
from .test_splitter_properties import SETTINGS, sizes, texts

# the definition the find-based scan implements
_BODY = r" {0,3}(?:(`{3,}|~{3,})|(#{1,6})(?=[ \t\r\n]|$))([^\n]*)"
_REF = re.compile(_BODY)
_REF_NL = re.compile("\n" + _BODY)


def _reference_scan(text: str) -> tuple[list[tuple[int, int, str, str]], ...]:
    fences: list[tuple[int, int, str, str]] = []
    heads: list[tuple[int, int, str, str]] = []
    matches = []
    m0 = _REF.match(text)
    if m0 is not None:
        matches.append((0, m0))
    matches += [(m.start() + 1, m) for m in _REF_NL.finditer(text)]
    for start, m in matches:
        f, h, rest = m.groups()
        if f:
            fences.append((start, m.end(), f, rest))
        else:
            heads.append((start, m.end(), h, rest))
    return fences, heads


MD_LINE_PIECES = [
    "#", "##", "###### ", "####### x", "# T", " # a", "   ## b", "    # code", "\t# t", "#\t",
    "```", "````py", "``` x `", "~~~", "~~~~ ~", "  ```", "    ```", "`", "~", "``", "~~",
    "text", " ", "\r", "\r\n", "\n", "\n\n", "a#b", "x```", "中", "😀", "\x00", "\x85", "\u2028",
]

md_texts = st.one_of(
    texts,
    st.lists(st.sampled_from(MD_LINE_PIECES), max_size=60).map("".join),
    st.lists(
        st.one_of(st.sampled_from(MD_LINE_PIECES), st.text(alphabet="#`~ \n\tab", max_size=6)),
        max_size=40,
    ).map("".join),
)


@SETTINGS
@given(text=md_texts)
def test_markdown_scan_equals_reference_regex(text: str) -> None:
    fences, heads = _scan(text)
    ref_fences, ref_heads = _reference_scan(text)
    assert fences == ref_fences
    assert heads == ref_heads


def test_space_set_is_exactly_isspace() -> None:
    spaces = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert set(_SPACE) == spaces


def _generic(text: str, seps: list[str], size: int, overlap: int) -> list[tuple[int, int]]:
    from parallelrag.splitters.base import unit_overlap

    levels = make_levels(seps)
    measure = Measure(text, resolve_length("chars"))
    ov = unit_overlap(text, levels, measure, overlap)
    return greedy_spans(text, 0, len(text), levels, size, measure, ov)


@pytest.mark.parametrize("pad", ["", " ", "  ", "\t ", " " * 30, " \n " * 12, "\u3000"])
@pytest.mark.parametrize("seps", [["\n\n", "\n", " "], ["\n\n"], [". ", " "], []])
def test_trailing_whitespace_before_separator(pad: str, seps: list[str]) -> None:
    para = "Some words here. And more words, then a clause; done!"
    text = "\n\n".join(para[: 20 + 13 * i] + pad for i in range(40))
    for size, overlap in [(120, 30), (200, 0), (64, 63), (300, 100)]:
        got = [(a, b) for a, b, _ in char_spans(text, 0, len(text), seps, size, overlap)]
        assert got == _generic(text, seps, size, overlap)


@SETTINGS
@given(
    text=st.lists(
        st.sampled_from(["# T\n", "## S\n", "```\n", "~~~\n", "code x\n", "\n\n", "w " * 20]),
        max_size=120,
    ).map("".join),
    size_overlap=sizes,
)
def test_markdown_sections_and_fences_equal_generic(
    text: str, size_overlap: tuple[int, int]
) -> None:
    size, overlap = size_overlap
    got = [
        (c.start, c.end, c.metadata["headings"])
        for c in MarkdownSplitter(size, overlap).split_text(text)
    ]
    assert got == _markdown_generic(text, size, overlap)


def test_markdown_long_document_equals_generic() -> None:
    code = "```python\n" + "\n".join(f"x{i} = {i}  # set" for i in range(30)) + "\n```\n\n"
    body = ("Words in a paragraph, with a clause. " * 9 + "\n\n") * 3
    parts = []
    for i in range(30):
        parts.append("#" * (1 + i % 4) + f" Title {i}\n\n" + body[: 100 + 97 * i] + "\n\n")
        if i % 3 == 0:
            parts.append(code)
    text = "".join(parts)
    assert len(parse_markdown(text)[1]) == 10
    for size, overlap in [(1000, 0), (300, 50), (len(code) + 3, 0), (80, 20)]:
        s = MarkdownSplitter(size, overlap)
        chunks = s.split_text(text)
        check_chunks(s, text, chunks)
        assert [(c.start, c.end, c.metadata["headings"]) for c in chunks] == _markdown_generic(
            text, size, overlap
        )
    # every fence that fits is whole in one chunk
    s = MarkdownSplitter(len(code) + 3, 0)
    whole = code.strip()
    assert sum(c.text.count(whole) for c in s.split_text(text)) == 10


def test_markdown_metadata_lists_are_not_shared() -> None:
    text = "# A\n\n" + "word " * 100 + "\n\n## B\n\nshort"
    chunks = MarkdownSplitter(60, 0).split_text(text)
    assert chunks[0].metadata["headings"] == ["A"]
    chunks[0].metadata["headings"].append("x")
    assert chunks[1].metadata["headings"] == ["A"]
    assert chunks[-1].metadata["headings"] == ["A", "B"]


MARKER_HEAVY = {
    "backtick line": "`" * 10_000_000,
    "tilde line": "~" * 10_000_000,
    "hash line": "#" * 10_000_000,
    "heading lines": "# h\n" * 200_000,
    "fence lines": "```\n" * 200_000,
    "inline markers": "a ``` b # c ~~~ d `e`\n" * 200_000,
}


@pytest.mark.parametrize("name", list(MARKER_HEAVY))
def test_markdown_marker_heavy_inputs_are_linear(name: str) -> None:
    text = MARKER_HEAVY[name]
    t0 = time.perf_counter()
    sections, _ = parse_markdown(text)
    assert sections
    chunks = MarkdownSplitter(1000, 100).split_text(text)
    assert time.perf_counter() - t0 < 10.0
    assert chunks and chunks[-1].end == len(text.rstrip())
    assert all(len(c.text) <= 1000 for c in chunks)


@pytest.mark.parametrize("cls", [CharacterSplitter, RecursiveSplitter])
def test_level_splitters_unchanged_on_paragraph_text(cls: type[CharacterSplitter]) -> None:
    sentence = "Word and more words here. "
    text = "".join(sentence * (1 + i % 9) + ("\n\n" if i % 3 else " \n\n") for i in range(300))
    s = cls(1000, 100)
    chunks = s.split_text(text)
    check_chunks(s, text, chunks)
    assert [(c.start, c.end) for c in chunks] == _generic(text, list(s._seps), 1000, 100)
