"""The lazy sentence boundaries equal the regex definition, and the splitter's chunks equal
the engine's with every sentence start precomputed.

:class:`SentenceLevel` finds boundaries backwards from the trigger characters instead of
matching ``_BOUNDARY`` over the whole text, and ``_char_spans`` is an inlined copy of the
greedy engine for character lengths. Both are checked here against the references that stay
in the module: ``sentence_starts`` (the regex) and ``greedy_spans`` with ``_StartsLevel`` (a
level made of all of ``sentence_starts``).
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from bisect import bisect_left, bisect_right
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parallelrag.splitters import SentenceSplitter, sentence_starts
from parallelrag.splitters import sentence as sentence_mod
from parallelrag.splitters.base import _SPACE
from parallelrag.splitters.sentence import SentenceLevel, _StartsLevel

from .test_splitter_properties import SETTINGS

# the edge cases of the expression: terminal runs, closers of either script (and the ones both
# share), whitespace of every kind with line breaks inside runs, unicode whitespace, lone
# surrogates, abbreviations and decimals (a terminal without whitespace after it)
PIECES = [
    ".", "!", "?", "…", "。", "！", "？", "...", "?!", "。！", "！？", '"', "'", "”", "’", ")",
    "]", "»", "」", "』", "）", ".)", '."', ".”’", "。」", "。”", "？）", "!»", " ", "  ", "\n",
    "\n\n", " \n ", "\t", "\r\n", "\u3000", "\x85", "\u2028", "\xa0", "e.g. ", "1.5", "a.b",
    "word", "Word", "中文", "x", "\ud800", "😀",
]
ASCII_PIECES = [p for p in PIECES if p.isascii()]

texts = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=120).map("".join),
    st.lists(st.sampled_from(ASCII_PIECES), max_size=120).map("".join),
    st.text(max_size=150),
    st.text(alphabet="．.!?。 \n\u3000」”)a", max_size=150),
)


def _reference_last(starts: list[int], lo: int, hi: int) -> int:
    k = bisect_right(starts, hi) - 1
    return starts[k] if k >= 0 and starts[k] > lo else -1


def _reference_first(starts: list[int], lo: int, hi: int) -> int:
    k = bisect_left(starts, lo)
    return starts[k] if k < len(starts) and starts[k] <= hi else -1


def _check_level(text: str, windows: list[tuple[int, int]]) -> None:
    starts = sentence_starts(text)
    level = SentenceLevel(text)
    ref = _StartsLevel(text)
    for lo, hi in windows:
        assert level.last_cut(text, lo, hi) == _reference_last(starts, lo, hi), (text, lo, hi)
        assert level.first_cut(text, lo, hi) == _reference_first(starts, lo, hi), (text, lo, hi)
        if lo < hi:
            for count in (1, 2, 3):
                got = level.start_before(lo, hi, count)
                assert got == ref.start_before(lo, hi, count), (text, lo, hi, count)


def _all_windows(n: int) -> list[tuple[int, int]]:
    return [(lo, hi) for lo in range(n + 1) for hi in range(lo, n + 1)]


def test_regex_whitespace_is_str_isspace() -> None:
    # the lazy search tests whitespace with a set of the ``str.isspace`` characters, the
    # expression with ``\s``: the same characters, over all of Unicode
    ws = re.compile(r"\s")
    chars = [chr(i) for i in range(sys.maxunicode + 1)]
    assert [c for c in chars if ws.match(c)] == [c for c in chars if c.isspace()]
    assert frozenset(c for c in chars if c.isspace()) == _SPACE


@pytest.mark.parametrize("common", ["", ".\n", ".\n。", sentence_mod._TRIGGERS])
@SETTINGS
@given(text=texts)
def test_level_equals_regex_in_every_window(common: str, text: str) -> None:
    # which triggers are searched for one by one (the others are replaced by one of them in
    # the copy searched): none, two, the default, all
    old = sentence_mod._COMMON
    sentence_mod._COMMON = common
    try:
        text = text[:60]  # every window of the text: quadratic
        _check_level(text, _all_windows(len(text)))
    finally:
        sentence_mod._COMMON = old


def _random_text(rng: random.Random, n: int, pieces: list[str]) -> str:
    out: list[str] = []
    size = 0
    while size < n:
        p = rng.choice(pieces) if rng.random() < 0.6 else rng.choice(["word", "中文", "text"])
        out.append(p)
        size += len(p)
    return "".join(out)


@pytest.mark.parametrize("common", ["", ".\n", ".\n。", sentence_mod._TRIGGERS])
@pytest.mark.parametrize("pieces", [PIECES, ASCII_PIECES], ids=["unicode", "ascii"])
def test_level_equals_regex_on_long_texts(common: str, pieces: list[str]) -> None:
    rng = random.Random(17)
    old = sentence_mod._COMMON
    sentence_mod._COMMON = common
    try:
        for _ in range(20):
            text = _random_text(rng, 3000, pieces)
            n = len(text)
            windows = [(0, n), (n, n)]
            for _ in range(400):
                lo = rng.randrange(n + 1)
                windows.append((lo, min(n, lo + rng.choice([1, 2, 3, 8, 40, 300]))))
            # windows whose ends fall inside whitespace runs and terminal/closer runs
            for m in re.finditer(r"\s{2,}|[.!?…。！？]{2,}|[」』”’）)\]\"'»]+", text):
                for hi in range(m.start(), m.end() + 1):
                    windows.append((max(0, hi - 50), hi))
                    windows.append((hi, min(n, hi + 50)))
            _check_level(text, windows)
    finally:
        sentence_mod._COMMON = old


def _spans_three_ways(sp: SentenceSplitter, text: str) -> None:
    got = sp._spans(text)
    assert got == sp._greedy(text, _StartsLevel(text)), (text, sp)
    if text and not text.isspace():
        assert sp._greedy(text, SentenceLevel(text)) == got


@SETTINGS
@given(
    text=texts,
    size=st.integers(1, 80),
    overlap=st.integers(0, 3),
)
def test_split_equals_precomputed_starts(text: str, size: int, overlap: int) -> None:
    if overlap >= size:
        overlap = 0
    _spans_three_ways(SentenceSplitter(size, overlap), text)


@pytest.mark.parametrize("common", ["", ".\n", sentence_mod._COMMON, sentence_mod._TRIGGERS])
@pytest.mark.parametrize("pieces", [PIECES, ASCII_PIECES], ids=["unicode", "ascii"])
@pytest.mark.parametrize(("size", "overlap"), [(1000, 1), (300, 2), (60, 3), (40, 0), (7, 1)])
def test_split_equals_precomputed_starts_on_long_texts(
    common: str, pieces: list[str], size: int, overlap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sentence_mod, "_COMMON", common)
    rng = random.Random(size * 7 + overlap)
    for _ in range(4):
        text = _random_text(rng, 20_000, pieces)
        _spans_three_ways(SentenceSplitter(size, overlap), text)


def test_split_equals_precomputed_starts_on_prose() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        from corpus import ascii_mb, cjk_mb  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    for text in (next(ascii_mb(200_000, seed=3)), next(cjk_mb(100_000, seed=4))):
        for size, overlap in ((1000, 1), (250, 2), (1000, 0)):
            _spans_three_ways(SentenceSplitter(size, overlap), text)


@pytest.mark.parametrize("length", ["cl100k"])
@SETTINGS
@given(text=texts, size=st.integers(2, 40), overlap=st.integers(0, 2))
def test_token_length_equals_precomputed_starts(
    length: str, text: str, size: int, overlap: int
) -> None:
    sp = SentenceSplitter(size, min(overlap, size - 1), length=length)
    _spans_three_ways(sp, text)


# long runs and dense terminals: where a search backwards would look at many candidates, and
# where trying a regex match at every position of a run costs quadratic time
PATHOLOGICAL = {
    "dots": "." * 30_000,
    "dotted words": "a." * 15_000,
    "decimals": "1.5,2.25," * 3_000,
    "dot leaders": ("Chapter one " + "." * 700 + " 5\n") * 20,
    "long whitespace": "x" + " " * 20_000 + "y. z" + "\u3000" * 5_000 + "\n" + " " * 300 + "w",
    "blank lines": ("a.\n" + " \n" * 500) * 10,
    "closer runs": ("a." + ")" * 700 + "b " + "。" + "」" * 300 + "c") * 10,
    "cjk terminals": "中" + "。" * 20_000 + "文？！" * 3_000,
    "mixed runs": ("?!" * 200 + "”’" * 100 + "\n" * 50 + " " * 100 + "x") * 20,
}


def _single_expression_starts(text: str) -> list[int]:
    # the definition written as one expression (as in test_splitter_golden)
    ref = re.compile(r"""[.!?…]+["'”’)\]»]*\s+|[。！？]+[」』”’）)\]]*\s*|\n\s*""")
    return [m.end() for m in ref.finditer(text)]


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_texts(name: str) -> None:
    text = PATHOLOGICAL[name]
    small = text[:3000]  # the single expression is itself quadratic on runs: keep it short
    assert sentence_starts(small) == _single_expression_starts(small)
    for size, overlap in ((1000, 1), (100, 2), (9, 1)):
        _spans_three_ways(SentenceSplitter(size, overlap), text)
    rng = random.Random(name)
    n = len(text)
    windows = []
    for _ in range(300):
        lo = rng.randrange(n + 1)
        windows.append((lo, min(n, lo + rng.choice([1, 50, 100, 1000]))))
    _check_level(text, windows)


def test_no_quadratic_time_on_long_runs() -> None:
    # a run of 200,000 terminals used to make the boundary expression retry the run from each
    # of its positions (minutes); split it, and the other long runs, in a child process that
    # must finish well within the limit
    code = (
        "from parallelrag.splitters import SentenceSplitter, sentence_starts\n"
        "for t in ('.' * 200_000, 'a.' * 100_000, '!?' * 100_000, ')' * 100_000,\n"
        "          'x' + ' ' * 200_000 + 'y', '。' * 200_000):\n"
        "    sentence_starts(t)\n"
        "    for size, k in ((1000, 1), (50, 3)):\n"
        "        SentenceSplitter(size, k).split_text(t)\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
