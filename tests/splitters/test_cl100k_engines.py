"""The two cl100k engines: fastokens (default where installed) and tiktoken give the same tokens,
lengths and chunks; the engine is chosen by ``PARALLELRAG_CL100K``; the fastokens path's groups,
int32/int64 offsets and block-wise character mapping are each exercised."""

from __future__ import annotations

import importlib.util
import os
import pickle
import platform
import random
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from parallelrag.errors import ConfigError
from parallelrag.splitters import TokenSplitter
from parallelrag.splitters import length as L

from ._checks import check_chunks
from .test_splitter_parallel import _ticks_during
from .test_splitter_properties import PIECES

HAVE_FASTOKENS = importlib.util.find_spec("fastokens") is not None
# platforms where fastokens 0.3 publishes wheels (pyproject installs it there)
WHEELS = (sys.platform.startswith("linux") and platform.machine() == "x86_64") or (
    sys.platform == "darwin"
) or (sys.platform == "win32" and platform.machine() in ("AMD64", "x86_64"))
ENGINES = ["tiktoken"] + (["fastokens"] if HAVE_FASTOKENS else [])
needs_fastokens = pytest.mark.skipif(
    not HAVE_FASTOKENS and not WHEELS, reason="fastokens has no wheel for this platform"
)


def _length(engine: str) -> L._TiktokenLength:
    length = L._TiktokenLength("cl100k", engine)
    length.load()
    return length


def _docs(seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = ["", "   \n", "\ud800", "abc " * 10, "中文" * 5, "😀" * 3]
    for _ in range(60):
        docs.append("".join(rng.choice(PIECES) for _ in range(rng.randint(0, 300))))
    docs.append(" ".join(rng.choice(["word", "中文", "😀", "\n", "e\u0301"]) for _ in range(40_000)))
    docs.append("plain " * 20_000)
    docs.insert(30, "")
    return docs


def test_fastokens_is_installed_where_it_has_wheels() -> None:
    # on these platforms it is a dependency: a missing fastokens would silently run the slower
    # engine and drop the engine-equality tests to one engine
    if WHEELS:
        assert HAVE_FASTOKENS
        assert L.cl100k_engine("auto") == "fastokens"


def test_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLELRAG_CL100K", "tiktoken")
    assert L.cl100k_engine() == "tiktoken"
    assert L.resolve_length("cl100k").engine == "tiktoken"  # type: ignore[attr-defined]
    monkeypatch.setenv("PARALLELRAG_CL100K", " Auto ")
    assert L.cl100k_engine() == ("fastokens" if HAVE_FASTOKENS else "tiktoken")
    monkeypatch.setenv("PARALLELRAG_CL100K", "rs-bpe")
    with pytest.raises(ConfigError, match="PARALLELRAG_CL100K"):
        L.cl100k_engine()
    with pytest.raises(ConfigError, match="PARALLELRAG_CL100K"):
        TokenSplitter(64, 8, "cl100k")
    assert L.cl100k_engine("tiktoken") == "tiktoken"  # an explicit choice wins over the env


def test_fastokens_choice_without_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "fastokens" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert L.cl100k_engine("auto") == "tiktoken"
    with pytest.raises(ConfigError, match="fastokens"):
        L.cl100k_engine("fastokens")


@needs_fastokens
def test_pattern_and_byte_table_are_tiktokens() -> None:
    enc = L._load_cl100k()
    assert enc._pat_str == L.CL100K_PATTERN
    _, table = L._load_cl100k_fast()
    reference = L._byte_len_table(enc)
    n = len(enc._mergeable_ranks)
    assert len(table) == n
    assert np.array_equal(table, reference[:n])


@needs_fastokens
def test_engines_give_the_same_lengths_tokens_and_chunks() -> None:
    fast, tik = _length("fastokens"), _length("tiktoken")
    docs = _docs(1)
    for doc in docs[:40]:
        assert fast(doc) == tik(doc) == len(tik.encoding.encode_ordinary(L._clean(doc)))
    # token ids too, not only boundaries: the engine's raw output against tiktoken's
    tok, _ = L._load_cl100k_fast()
    clean = [L._clean(d) for d in docs]
    ids, bounds = tok.encode_batch_flat(clean)
    ids_np, bounds_np = np.frombuffer(ids, np.uint32), np.frombuffer(bounds, np.uint64)
    for k, doc in enumerate(clean):
        got = ids_np[int(bounds_np[k]) : int(bounds_np[k + 1])].tolist()
        assert got == tik.encoding.encode_ordinary(doc)
    for a, b in zip(fast.byte_tokens_batch(docs), tik.byte_tokens_batch(docs), strict=True):
        assert a.text == b.text and a.raw == b.raw
        assert np.array_equal(a.offsets, b.offsets)
    for size, overlap in [(64, 8), (7, 3), (256, 32)]:
        s_fast = TokenSplitter(size, overlap, length=fast)
        s_tik = TokenSplitter(size, overlap, length=tik)
        got = s_fast.split_many(docs)
        assert got == s_tik.split_many(docs)
        for doc, chunks in zip(docs, got, strict=True):
            check_chunks(s_fast, doc, chunks)


@needs_fastokens
@pytest.mark.parametrize("group_chars,block,int32_bytes", [(1, 5, 2**31), (2_000, 7, 10), (10**9, 1 << 16, 0)])
def test_groups_blocks_and_wide_offsets(
    monkeypatch: pytest.MonkeyPatch, group_chars: int, block: int, int32_bytes: int
) -> None:
    """Tiny groups (a native batch per text), groups that end on empty texts, one group; tiny
    blocks for the running sums and the byte-to-character mapping; int64 offsets."""
    docs = _docs(2)
    expected = TokenSplitter(48, 8, length=_length("tiktoken")).split_many(docs)
    monkeypatch.setattr(L, "_GROUP_CHARS", group_chars)
    monkeypatch.setattr(L, "_BLOCK", block)
    monkeypatch.setattr(L, "_INT32_BYTES", int32_bytes)
    fast = _length("fastokens")
    splitter = TokenSplitter(48, 8, length=fast)
    assert splitter.split_many(docs) == expected
    assert [splitter.split_text(d) for d in docs[-8:]] == expected[-8:]
    wide = next(fast.byte_tokens_batch([docs[-1]])).offsets.dtype
    assert wide == (np.int32 if int32_bytes == 2**31 else np.int64)


def test_char_offsets_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(L, "_BLOCK", 3)
    rng = random.Random(4)
    for _ in range(200):
        text = "".join(rng.choice(["a", "é", "中", "😀", "\n", " "]) for _ in range(rng.randint(0, 40)))
        raw = text.encode("utf-8")
        boundaries = [len(text[:k].encode("utf-8")) for k in range(len(text) + 1)]
        picks = [rng.choice(boundaries) for _ in range(rng.randint(1, 10))]
        assert L.char_offsets(raw, picks).tolist() == [boundaries.index(p) for p in picks]


@needs_fastokens
def test_engine_survives_pickling(monkeypatch: pytest.MonkeyPatch) -> None:
    length = _length("fastokens")
    copy = pickle.loads(pickle.dumps(length))
    assert copy.engine == "fastokens"
    assert copy("héllo wörld 😀") == length("héllo wörld 😀")
    # "auto" travels as "auto": resolved again where it is unpickled (here: a machine without
    # fastokens gets tiktoken, the same tokens), while an explicit choice stays strict
    auto = _length("auto")
    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "fastokens" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    moved = pickle.loads(pickle.dumps(auto))
    assert moved.engine == "tiktoken"
    assert moved("héllo wörld 😀") == length("héllo wörld 😀")
    with pytest.raises(ConfigError, match="fastokens"):
        pickle.loads(pickle.dumps(length))


@pytest.mark.parametrize("engine", ENGINES)
def test_huge_whitespace_runs(engine: str) -> None:
    """tiktoken overflows its stack (a Rust panic) on ~1 M spaces in one piece and fastokens'
    regex gives up past ~10 M: such runs are encoded in segments, on both engines alike."""
    length = _length(engine)
    splitter = TokenSplitter(64, 8, length=length)
    for ws, n in [(" ", 1_200_000), ("\t", 1_100_000), ("\n", 300_000)]:
        text = "alpha beta" + ws * n + "gamma delta"
        chunks = splitter.split_text(text)
        assert [(c.start, c.end, c.text) for c in chunks] == [
            (0, 10, "alpha beta"), (10 + n, 21 + n, "gamma delta")
        ]
        assert length(text) > n // 128  # counted, in the same pieces as the splitter uses
    assert [len(p) for p in L._cut_long_runs("a" + " " * 70_000 + "b")] == [32_769, 32_768, 4_465]
    assert L._cut_long_runs("x" * 200_000) == ["x" * 200_000]


_FORK_CHILD = """
import os, sys
from parallelrag.splitters import TokenSplitter
from parallelrag.splitters import length as L
docs = ["word " * 20000, "中文 " * 20000] * 4
if sys.argv[1] == "parallelrag":
    s = TokenSplitter(64, 8, "cl100k")
    before = s.split_many(docs)
else:  # the parent uses fastokens itself, never through parallelrag
    import fastokens
    own = fastokens.Tokenizer.from_tiktoken(L._cl100k_file()[0], pattern=L.CL100K_PATTERN)
    own.encode_batch_flat(docs)
    before = None
assert not L._fast_forked
pid = os.fork()
if pid == 0:
    s = TokenSplitter(64, 8, "cl100k")
    got = s.split_many(docs)
    ok = (before is None or got == before) and s.length("a b") == 2 and L._fast_forked
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@needs_fastokens
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
@pytest.mark.parametrize("parent", ["parallelrag", "own tokenizer"])
def test_split_in_a_forked_child(parent: str) -> None:
    """fastokens encodes on native worker threads, and a fastokens call in a child forked after
    the parent used them waits forever (seen: every call, even on a new Tokenizer). The child
    must still split, with the same chunks: it encodes with tiktoken."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _FORK_CHILD, parent.split()[0]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the forked grandchild too
        proc.communicate()
        pytest.fail("the forked child hung")
    assert proc.returncode == 0, err


@needs_fastokens
def test_threads_share_one_engine() -> None:
    splitter = TokenSplitter(32, 4, "cl100k")
    docs = _docs(5)
    expected = splitter.split_many(docs)
    results: list[object] = []

    def work() -> None:
        for _ in range(3):
            results.append(splitter.split_many(docs) == expected)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == [True] * 12


@needs_fastokens
def test_ticker_runs_while_the_engine_encodes() -> None:
    """The native batch encode releases the GIL: a pure-Python ticker thread keeps a good part
    of its idle rate during it. Were the GIL held for the call, the ticker would get at most
    a switch interval (5 ms) of a call that lasts well over 100 ms (measured with a GIL-holding
    ``sorted()`` of that length: 0.03 of the idle rate)."""
    tok, _ = L._load_cl100k_fast()
    rng = random.Random(9)
    ratios = []
    elapsed = [0.0]

    def encode(pieces: list[str]) -> None:
        t0 = time.perf_counter()
        tok.encode_batch_flat(pieces)
        elapsed[0] = time.perf_counter() - t0

    for _ in range(3):
        # new text each time (the engine caches what it has seen), ~12 M characters: a long call
        text = L._clean("".join(rng.choices(PIECES, k=2_000_000)))
        pieces = [text[i : i + 20_000] for i in range(0, len(text), 20_000)]
        idle, busy = _ticks_during(lambda: encode(pieces))  # noqa: B023
        ratios.append(busy / idle)
        if elapsed[0] > 0.1 and ratios[-1] > 0.2:
            break
    print(f"ticker during the encode: {ratios} of its idle rate, call {elapsed[0]:.2f} s")
    assert elapsed[0] > 0.1, elapsed  # long enough for a held GIL to show
    assert max(ratios) > 0.2, ratios
