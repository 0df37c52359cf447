"""Every splitter type gives exactly the chunks it gave when these digests were recorded.

The splitters' engines are tuned for speed; a change there must not move a single chunk. Each
case splits deterministic texts (generated ASCII and CJK prose from ``benchmarks/corpus.py``, a
Markdown-like text, a text of awkward pieces: CRLF, NUL, surrogates, emoji, long runs) and
compares a SHA-256 of every chunk's ``(start, end, index, metadata)`` with the digest recorded
for that case. A deliberate change of the chunking rules updates the digests: run this file as
a script (``.venv/bin/python tests/splitters/test_splitter_golden.py``) and paste its output.
"""

from __future__ import annotations

import hashlib
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parallelrag.documents import Chunk
from parallelrag.splitters import (
    CharacterSplitter,
    MarkdownSplitter,
    RecursiveSplitter,
    SentenceSplitter,
    Splitter,
    TokenSplitter,
    base,
    sentence_starts,
)
from parallelrag.splitters.base import _FAST_CHUNKS, _rstrip_end

from .test_splitter_properties import SETTINGS

_BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _prose() -> tuple[str, str]:
    sys.path.insert(0, str(_BENCH))
    try:
        from corpus import ascii_mb, cjk_mb  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(_BENCH))
    return next(ascii_mb(300_000, seed=1)), next(cjk_mb(150_000, seed=2))


def _markdown(n: int, seed: int) -> str:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"]
    parts: list[str] = []
    size = 0
    while size < n:
        r = rng.random()
        if r < 0.08:
            piece = "#" * rng.randint(1, 4) + " " + " ".join(rng.choices(words, k=3)) + "\n\n"
        elif r < 0.14:
            body = "\n".join(
                "    " + " ".join(rng.choices(words, k=rng.randint(1, 9)))
                for _ in range(rng.randint(1, 60))
            )
            piece = "```py\n" + body + "\n```\n\n"
        elif r < 0.22:
            piece = "".join(
                "- " + " ".join(rng.choices(words, k=rng.randint(2, 12))) + "\n"
                for _ in range(rng.randint(1, 8))
            ) + "\n"
        else:
            sents = [
                " ".join(rng.choices(words, k=rng.randint(3, 30))).capitalize()
                + rng.choice([". ", "! ", "? ", "; ", ", ", "… ", '." ', ".) "])
                for _ in range(rng.randint(1, 14))
            ]
            piece = "".join(sents).rstrip() + rng.choice(["\n\n", "\n", "\n\n\n", " \n\n", "\n \n"])
        parts.append(piece)
        size += len(piece)
    return "".join(parts)


_AWKWARD = [
    " ", "  ", "\n", "\n\n", "\r\n", "\t", "\x00", ". ", "! ", "? ", "。", "，", "、", "…",
    "word", "Hello", "x" * 40, "中文字符", "日本語のテキスト", "😀", "👩‍👩‍👧", "e\u0301",
    "\ud800", "```", "# ", "## ", "\u2028", "\x85", "\u200b", "ﬁ", "12345", "-", "\x1c",
    "y" * 1500, " " * 300, "\n" * 50,
]


def _awkward(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(_AWKWARD) for _ in range(n))


def _texts() -> dict[str, str]:
    ascii_text, cjk_text = _prose()
    return {
        "ascii": ascii_text,
        "cjk": cjk_text,
        "markdown": _markdown(200_000, 3),
        "awkward": _awkward(6_000, 4),
    }


# (case name, splitter factory, texts it runs on); token lengths run on shorter prefixes
CASES: list[tuple[str, Callable[[], Splitter], tuple[str, ...]]] = [
    ("character 1000/100", lambda: CharacterSplitter(1000, 100), ("ascii", "cjk", "markdown", "awkward")),
    ("character 1000/0", lambda: CharacterSplitter(1000, 0), ("ascii", "markdown", "awkward")),
    ("character 200/50", lambda: CharacterSplitter(200, 50), ("ascii", "cjk", "markdown", "awkward")),
    ("character 64/63", lambda: CharacterSplitter(64, 63), ("ascii", "awkward")),
    ("character sep '. '", lambda: CharacterSplitter(500, 80, separator=". "), ("ascii", "awkward")),
    ("character sep '\\n'", lambda: CharacterSplitter(300, 30, separator="\n"), ("markdown", "awkward")),
    ("recursive 1000/100", lambda: RecursiveSplitter(1000, 100), ("ascii", "cjk", "markdown", "awkward")),
    ("recursive 300/30", lambda: RecursiveSplitter(300, 30), ("ascii", "cjk", "markdown", "awkward")),
    ("recursive custom", lambda: RecursiveSplitter(400, 120, separators=["\n", ". ", " "]), ("ascii", "markdown")),
    ("sentence 1000/1", lambda: SentenceSplitter(1000, 1), ("ascii", "cjk", "markdown", "awkward")),
    ("sentence 1000/0", lambda: SentenceSplitter(1000, 0), ("ascii", "cjk", "markdown", "awkward")),
    ("sentence 300/2", lambda: SentenceSplitter(300, 2), ("ascii", "cjk", "markdown", "awkward")),
    ("sentence 60/3", lambda: SentenceSplitter(60, 3), ("ascii", "awkward")),
    ("markdown 1000/0", lambda: MarkdownSplitter(1000, 0), ("ascii", "markdown", "awkward")),
    ("markdown 400/60", lambda: MarkdownSplitter(400, 60), ("markdown", "awkward")),
    ("recursive cl100k 200/20", lambda: RecursiveSplitter(200, 20, length="cl100k"), ("ascii~", "markdown~", "awkward~")),
    ("sentence cl100k 200/1", lambda: SentenceSplitter(200, 1, length="cl100k"), ("ascii~", "markdown~", "awkward~")),
    ("sentence minilm 128/1", lambda: SentenceSplitter(128, 1, length="minilm"), ("ascii~", "markdown~")),
    ("token cl100k 256/32", lambda: TokenSplitter(256, 32, "cl100k"), ("ascii~", "cjk~", "markdown~", "awkward~")),
    ("token minilm 128/16", lambda: TokenSplitter(128, 16, "minilm"), ("ascii~", "markdown~")),
]

# the recorded digests; see the module docstring for how to regenerate them
DIGESTS: dict[tuple[str, str], str] = {
    ('character 1000/100', 'ascii'): '826435dd0a44a4d135dc137d',
    ('character 1000/100', 'cjk'): '830f458fc1f47e6a0b34df8e',
    ('character 1000/100', 'markdown'): '8615419a35c7ca3d471a89c7',
    ('character 1000/100', 'awkward'): 'be11de1b6f84bfc85469ba65',
    ('character 1000/0', 'ascii'): 'e6923743632037295ec1a183',
    ('character 1000/0', 'markdown'): '2f8a98f648e2674d05c3b9cf',
    ('character 1000/0', 'awkward'): 'a179a125b938ba1db54bd12e',
    ('character 200/50', 'ascii'): '8530d4bad7fa9d86bbc29fd9',
    ('character 200/50', 'cjk'): '8bb061ee7ec5c0ffd050e0da',
    ('character 200/50', 'markdown'): '0eaaa1a6877f8cc9b20b7ecc',
    ('character 200/50', 'awkward'): '2e6ebdc4409ac95e7959dabe',
    ('character 64/63', 'ascii'): 'd4bc0beed19114ea7a06433e',
    ('character 64/63', 'awkward'): '008131143d41594be0e67957',
    ("character sep '. '", 'ascii'): '919510b8b668eb669f730607',
    ("character sep '. '", 'awkward'): '94084221cf295eb1947ab73c',
    ("character sep '\\n'", 'markdown'): '458bb5d662f943b3f85f14a0',
    ("character sep '\\n'", 'awkward'): '44cba744fc5cec2c576f0c3f',
    ('recursive 1000/100', 'ascii'): '3763b349cfd34ae59a2ca849',
    ('recursive 1000/100', 'cjk'): 'a3f9319084b16a1710ba4ea4',
    ('recursive 1000/100', 'markdown'): 'e2d454f11426da47d671de10',
    ('recursive 1000/100', 'awkward'): 'aec93c445b77d253a6f423b6',
    ('recursive 300/30', 'ascii'): '8358c18dedf96374de74e93f',
    ('recursive 300/30', 'cjk'): '8ee88b7de9fa48ec6fb6eac4',
    ('recursive 300/30', 'markdown'): '3033d9a9da67409bb5a77741',
    ('recursive 300/30', 'awkward'): 'cb52a860e121821dab3839e9',
    ('recursive custom', 'ascii'): '28a3d4ed37f2667151504129',
    ('recursive custom', 'markdown'): '06d205940bf7d63ba742fd62',
    ('sentence 1000/1', 'ascii'): '0593c7dc0d6457c5da5ddff2',
    ('sentence 1000/1', 'cjk'): '43f490682527789e7b1ff7b4',
    ('sentence 1000/1', 'markdown'): 'c15714c2c70ede90a654da05',
    ('sentence 1000/1', 'awkward'): 'af31fff51e791395da7992b2',
    ('sentence 1000/0', 'ascii'): '2ea20d3b8ce0b0ac4589a82b',
    ('sentence 1000/0', 'cjk'): '09912fd3136ad7fa041aa57d',
    ('sentence 1000/0', 'markdown'): '4ce2878b7d8872f2eea97735',
    ('sentence 1000/0', 'awkward'): '730998adc71b846c81488e69',
    ('sentence 300/2', 'ascii'): 'a4eda4ffc6c822ce15d9ea4c',
    ('sentence 300/2', 'cjk'): '186ee08082170b65c0a90c95',
    ('sentence 300/2', 'markdown'): 'c43d18f11e5d2a604ace5f7d',
    ('sentence 300/2', 'awkward'): '169c86fe21afd3421d247957',
    ('sentence 60/3', 'ascii'): 'a8f66067d67c7e7acc107374',
    ('sentence 60/3', 'awkward'): '4f88ffc4e0b8799c8a115944',
    ('markdown 1000/0', 'ascii'): 'c262967a262b9c65c7c7d991',
    ('markdown 1000/0', 'markdown'): 'c6df15bd2dfdda5d4366d23f',
    ('markdown 1000/0', 'awkward'): '06382d877ca4ac97c9167000',
    ('markdown 400/60', 'markdown'): '9e3fefd335548b175ba129e7',
    ('markdown 400/60', 'awkward'): '26036ccd20f361554143deea',
    ('recursive cl100k 200/20', 'ascii~'): '2065043f32bd507a6eb85cae',
    ('recursive cl100k 200/20', 'markdown~'): '83d591a8c2a56133ef2675d6',
    ('recursive cl100k 200/20', 'awkward~'): '6294b86231a4b8ac855916c8',
    ('sentence cl100k 200/1', 'ascii~'): 'c264788dc53fb2221ac18ab3',
    ('sentence cl100k 200/1', 'markdown~'): 'e9eee3c9cad05785e24a5061',
    ('sentence cl100k 200/1', 'awkward~'): '284d94eb8f67dc720ad3288b',
    ('sentence minilm 128/1', 'ascii~'): '741fd094ee9117f1a55a102a',
    ('sentence minilm 128/1', 'markdown~'): '03d5e08e8e6c236280fda836',
    ('token cl100k 256/32', 'ascii~'): '6e2078150248e462bbf1e603',
    ('token cl100k 256/32', 'cjk~'): '118f7c261d35fe8693e82324',
    ('token cl100k 256/32', 'markdown~'): '34fac1df5480ca9377b2785a',
    ('token cl100k 256/32', 'awkward~'): 'dbdcf66749499db14127d3d9',
    ('token minilm 128/16', 'ascii~'): '75eeefab2723e9427caa6011',
    ('token minilm 128/16', 'markdown~'): 'b0f568e17c91944ad65bd1e2',
}


def _digest(chunks: list[Chunk]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(repr((c.start, c.end, c.index, sorted(c.metadata.items()))).encode())
    return h.hexdigest()[:24]


def _run(make: Callable[[], Splitter], name: str, texts: dict[str, str]) -> str:
    text = texts[name.rstrip("~")]
    if name.endswith("~"):
        text = text[:40_000]
    chunks = make().split_text(text)
    assert all(text[c.start : c.end] == c.text for c in chunks)
    return _digest(chunks)


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    return _texts()


@pytest.mark.parametrize(("case", "make", "names"), CASES, ids=[c[0] for c in CASES])
def test_chunks_match_recorded_digests(
    case: str, make: Callable[[], Splitter], names: tuple[str, ...], texts: dict[str, str]
) -> None:
    got = {name: _run(make, name, texts) for name in names}
    want = {name: DIGESTS[(case, name)] for name in names}
    assert got == want


def test_split_many_matches_split_text(texts: dict[str, str]) -> None:
    batch = [texts["ascii"][:50_000], texts["markdown"][:50_000], texts["awkward"], ""]
    for make in (
        lambda: CharacterSplitter(1000, 100),
        lambda: RecursiveSplitter(1000, 100),
        lambda: SentenceSplitter(1000, 1),
        lambda: MarkdownSplitter(1000, 0),
    ):
        sp = make()
        assert sp.split_many(batch, workers=1) == [sp.split_text(t) for t in batch]


# the sentence boundary as one expression; the module writes it with one alternative per first
# character, which must find exactly the same boundaries
_BOUNDARY_REFERENCE = re.compile(
    r"""[.!?…]+["'”’)\]»]*\s+"""
    r"|[。！？]+[」』”’）)\]]*\s*"
    r"|\n\s*"
)
_SENTENCE_PIECES = [
    ".", "!", "?", "…", "。", "！", "？", '"', "'", "”", "’", ")", "]", "»", "」", "』", "）",
    " ", "  ", "\n", "\n\n", "\t", "\r\n", "\u3000", "\x85", "\u2028", "e.g. ", "word", "中文",
    "x", "1.5", "...", "?!", ".)", '."', "。」", "\ud800",
]


def _reference_starts(text: str) -> list[int]:
    return [m.end() for m in _BOUNDARY_REFERENCE.finditer(text) if m.end() > 0]


@SETTINGS
@given(
    text=st.one_of(
        st.lists(st.sampled_from(_SENTENCE_PIECES), max_size=150).map("".join),
        st.text(max_size=200),
    )
)
def test_sentence_boundaries_equal_the_single_expression(text: str) -> None:
    assert sentence_starts(text) == _reference_starts(text)


def test_sentence_boundaries_equal_the_single_expression_on_long_texts(
    texts: dict[str, str],
) -> None:
    for text in texts.values():
        assert sentence_starts(text) == _reference_starts(text)


@SETTINGS
@given(text=st.text(alphabet=" \t\nab\u3000\x85", max_size=80), a=st.integers(0, 90), b=st.integers(0, 90))
def test_rstrip_end_equals_rstrip(text: str, a: int, b: int) -> None:
    text += "x" * 10 + " " * 30  # long whitespace tails too
    b = min(b, len(text))  # the engines call it inside the text only
    assert _rstrip_end(text, a, b) == a + len(text[a:b].rstrip())


def test_chunks_are_made_as_the_dataclass_makes_them(
    texts: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the splitters set the fields of bare Chunk objects instead of calling the dataclass
    # __init__; a Chunk with other fields turns that off (and this test tells)
    assert _FAST_CHUNKS
    text = texts["markdown"][:20_000]
    splitters = (CharacterSplitter(300, 30), MarkdownSplitter(300, 30), SentenceSplitter(300, 1))
    made = [sp.split_text(text) for sp in splitters]
    for got in made:
        want = [Chunk(c.text, c.start, c.end, c.index, dict(c.metadata)) for c in got]
        assert got == want
        assert all(type(c) is Chunk and c.context == "" for c in got)
        assert len({id(c.metadata) for c in got}) == len(got)  # a fresh dict per chunk
    monkeypatch.setattr(base, "_FAST_CHUNKS", False)  # the dataclass call: the same chunks
    assert [sp.split_text(text) for sp in splitters] == made


if __name__ == "__main__":
    all_texts = _texts()
    print("DIGESTS: dict[tuple[str, str], str] = {")
    for case_name, factory, text_names in CASES:
        for text_name in text_names:
            print(f"    ({case_name!r}, {text_name!r}): {_run(factory, text_name, all_texts)!r},")
    print("}")
