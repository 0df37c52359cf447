"""Deterministic building blocks of the simulated server: tokens, embeddings, replies.

These functions are what the server answers with, so tests (in any process) can compute the
expected answer themselves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

__all__ = [
    "count_tokens",
    "embedding_fragments",
    "encode_embedding",
    "minimal_instance",
    "parse_tool_directives",
    "sim_embedding",
    "sim_embeddings",
    "sim_reply",
    "sim_rerank_scores",
]

_SEED_BITS = 256
_BLOCK = 64


def count_tokens(text: str) -> int:
    """The sim's token count of ``text``: ``max(1, ceil(utf8_bytes / 4))``.

    Bytes are counted with ``text.encode("utf-8", "surrogatepass")``. This is the estimate the
    server uses for usage, limits and rate limiting; clients may use the same estimate.
    """
    return max(1, -(-len(text.encode("utf-8", "surrogatepass")) // 4))


# --- embeddings -------------------------------------------------------------------------------
#
# sim_embedding(model, text, dim):
#   d   = sha256((model + "\x00" + text).encode("utf-8", "surrogatepass")).digest()  # 256 bits
#   s   = [+1 if bit else -1 for bit in d, most significant bit of each byte first]   # 256 signs
#   B   = a fixed 256 x dim matrix of integers in [-127, 127]; column block k (64 columns) is
#         numpy.random.default_rng(k).integers(-127, 128, size=(256, 64))
#   v   = s @ B          # exact: integer sums far below 2**24 are exact in float32
#   out = float32(v / ||v||)   # norm computed in float64 (exact), so every batch agrees
#
# Column j of B does not depend on dim, so a vector at a smaller dim is the truncated and
# renormalised vector at a larger dim.

_basis_lock = threading.Lock()
_basis_cache: dict[int, npt.NDArray[np.float32]] = {}
_blocks: list[npt.NDArray[np.float32]] = []


def _basis(dim: int) -> npt.NDArray[np.float32]:
    basis = _basis_cache.get(dim)
    if basis is not None:
        return basis
    with _basis_lock:
        basis = _basis_cache.get(dim)
        if basis is not None:
            return basis
        need = -(-dim // _BLOCK)
        while len(_blocks) < need:
            rng = np.random.default_rng(len(_blocks))
            _blocks.append(rng.integers(-127, 128, size=(_SEED_BITS, _BLOCK)).astype(np.float32))
        basis = np.ascontiguousarray(np.concatenate(_blocks[:need], axis=1)[:, :dim])
        if len(_basis_cache) > 64:
            _basis_cache.clear()
        _basis_cache[dim] = basis
        return basis


def _digest(model: str, text: str) -> bytes:
    return hashlib.sha256((model + "\x00" + text).encode("utf-8", "surrogatepass")).digest()


def _vectors_from_digests(digests: bytes, n: int, dim: int) -> npt.NDArray[np.float32]:
    bits = np.unpackbits(np.frombuffer(digests, dtype=np.uint8).reshape(n, 32), axis=1)
    signs = bits.astype(np.float32)
    signs *= 2.0
    signs -= 1.0
    raw = signs @ _basis(dim)  # exact integers
    wide = raw.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", wide, wide))
    norms[norms == 0.0] = 1.0
    wide /= norms[:, None]
    out: npt.NDArray[np.float32] = wide.astype(np.float32)
    return out


class _FragmentCache:
    """A bounded (by bytes) LRU of serialised embeddings keyed by (model, text, dim, format).

    Values are the JSON fragments the server splices into its response: a JSON array of
    float32 values (``"float"``) or a quoted base64 string (``"base64"``).
    """

    def __init__(self, max_bytes: int = 128 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[tuple[str, str, int, str], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_many(self, model: str, texts: Sequence[str], dim: int, fmt: str) -> list[bytes | None]:
        with self._lock:
            data = self._data
            out: list[bytes | None] = []
            for t in texts:
                key = (model, t, dim, fmt)
                frag = data.get(key)
                if frag is not None:
                    data.move_to_end(key)
                out.append(frag)
            return out

    def put_many(
        self, model: str, texts: Sequence[str], dim: int, fmt: str, frags: Sequence[bytes]
    ) -> None:
        with self._lock:
            data = self._data
            for t, frag in zip(texts, frags, strict=True):
                key = (model, t, dim, fmt)
                old = data.pop(key, None)
                if old is not None:
                    self._bytes -= len(old) + len(t)
                data[key] = frag
                self._bytes += len(frag) + len(t)
            while self._bytes > self.max_bytes and data:
                (_, old_t, _, _), old_frag = data.popitem(last=False)
                self._bytes -= len(old_frag) + len(old_t)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


fragment_cache = _FragmentCache()


def encode_embedding(row: npt.NDArray[np.float32], fmt: str) -> bytes:
    """One embedding as a JSON fragment: an array of floats, or a quoted base64 string of the
    little-endian float32 bytes (``fmt == "base64"``)."""
    if fmt == "base64":
        return b'"' + base64.b64encode(row.astype("<f4", copy=False).tobytes()) + b'"'
    return orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY)


def embedding_fragments(model: str, texts: Sequence[str], dim: int, fmt: str) -> list[bytes]:
    """JSON fragments (see :func:`encode_embedding`) of ``sim_embedding(model, t, dim)`` for
    every text; vectorised over the texts missing from the LRU :data:`fragment_cache`."""
    cached = fragment_cache.get_many(model, texts, dim, fmt)
    missing = [i for i, f in enumerate(cached) if f is None]
    if not missing:
        return cached  # type: ignore[return-value]
    miss_texts = [texts[i] for i in missing]
    rows = sim_embeddings(model, miss_texts, dim)
    frags = [encode_embedding(r, fmt) for r in rows]
    fragment_cache.put_many(model, miss_texts, dim, fmt, frags)
    for i, f in zip(missing, frags, strict=True):
        cached[i] = f
    return cached  # type: ignore[return-value]


def sim_embeddings(model: str, texts: Sequence[str], dim: int) -> npt.NDArray[np.float32]:
    """``sim_embedding`` for many texts at once: a C-contiguous ``(len(texts), dim)`` array."""
    n = len(texts)
    if n == 0:
        return np.zeros((0, dim), dtype=np.float32)
    return _vectors_from_digests(b"".join(_digest(model, t) for t in texts), n, dim)


def sim_embedding(model: str, text: str, dim: int) -> npt.NDArray[np.float32]:
    """The embedding the sim returns for ``text`` under ``model`` at ``dim`` dimensions.

    A float32 unit vector, deterministic: seeded from ``sha256(model + "\\x00" + text)``
    (see the comment above for the exact construction).
    """
    if dim < 1:
        raise ValueError("dim must be >= 1")
    row: npt.NDArray[np.float32] = _vectors_from_digests(_digest(model, text), 1, dim)[0]
    return row


# --- chat replies -----------------------------------------------------------------------------

_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "amber",
    "basil",
    "cedar",
    "dune",
    "ember",
    "fern",
    "grove",
    "harbor",
    "iris",
    "jade",
    "kelp",
    "lotus",
    "maple",
    "nectar",
    "olive",
    "pearl",
    "quartz",
    "river",
    "sage",
    "thyme",
    "umber",
    "violet",
    "willow",
    "yarrow",
    "zephyr",
    "anchor",
    "beacon",
    "canyon",
    "delta2",
    "estuary",
    "fjord",
    "glacier",
    "horizon",
    "island",
    "jetty",
    "knoll",
    "lagoon",
    "mesa",
]


def sim_reply(model: str, prompt: str, words: int = 12) -> str:
    """The default chat reply of the sim for ``prompt`` (the last user message's text).

    ``h = sha256((model + "\\x00" + prompt).encode("utf-8", "surrogatepass")).hexdigest()``;
    the reply is the first ``words`` words of
    ``["sim", "reply", h[:16], w0, w1, ...]`` joined by single spaces, where word ``wi`` is
    ``_WORDS[b % 64]`` for the i-th byte ``b`` of ``sha256(h + ":" + str(i // 32))``'s digest
    (byte index ``i % 32``). ``words`` is the server's ``SimConfig.reply_words`` (default 12).
    """
    h = hashlib.sha256((model + "\x00" + prompt).encode("utf-8", "surrogatepass")).hexdigest()
    out = ["sim", "reply", h[:16]]
    i = 0
    block = b""
    while len(out) < words:
        if i % 32 == 0:
            block = hashlib.sha256(f"{h}:{i // 32}".encode()).digest()
        out.append(_WORDS[block[i % 32] % len(_WORDS)])
        i += 1
    return " ".join(out[:words])


# --- in-band directives -----------------------------------------------------------------------

_TOOL_RE = re.compile(r"\[\[tool:([^\s\]\{]+)")
_decoder = json.JSONDecoder()


def parse_tool_directives(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Find ``[[tool:NAME {json args}]]`` directives (args optional) in order of appearance."""
    out: list[tuple[str, dict[str, Any]]] = []
    pos = 0
    while True:
        m = _TOOL_RE.search(text, pos)
        if m is None:
            return out
        name = m.group(1)
        j = m.end()
        while j < len(text) and text[j].isspace():
            j += 1
        args: Any = {}
        if j < len(text) and text[j] == "{":
            try:
                args, j = _decoder.raw_decode(text, j)
            except json.JSONDecodeError:
                pos = m.end()
                continue
            while j < len(text) and text[j].isspace():
                j += 1
        if text.startswith("]]", j) and isinstance(args, dict):
            out.append((name, args))
            pos = j + 2
        else:
            pos = m.end()


_JSON_RE = re.compile(r"\[\[json\s")


def parse_json_directive(text: str) -> str | None:
    """The JSON text of the first ``[[json {...}]]`` directive, exactly as written, or None."""
    pos = 0
    while True:
        m = _JSON_RE.search(text, pos)
        if m is None:
            return None
        j = m.end()
        while j < len(text) and text[j].isspace():
            j += 1
        try:
            _, end = _decoder.raw_decode(text, j)
        except json.JSONDecodeError:
            pos = m.end()
            continue
        k = end
        while k < len(text) and text[k].isspace():
            k += 1
        if text.startswith("]]", k):
            return text[j:end]
        pos = m.end()


INVALID_JSON = '{"sim": "invalid json", "value": [1, 2,'


def minimal_instance(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A minimal instance that validates against a (common subset of) JSON Schema.

    Strings are ``"sim"``, numbers ``0`` (moved into ``minimum``/``maximum``), booleans
    ``false``, arrays hold ``minItems`` items, objects hold their ``required`` properties;
    ``enum``/``const``/``anyOf``/``oneOf``/``allOf``/``$ref`` (local) are followed.
    """
    if root is None:
        root = schema
    if depth > 32 or not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        target: Any = root
        for part in ref.lstrip("#").strip("/").split("/"):
            if not part:
                continue
            target = (
                target.get(part.replace("~1", "/").replace("~0", "~"), {})
                if isinstance(target, dict)
                else {}
            )
        return minimal_instance(target, root, depth + 1)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return minimal_instance((non_null or options)[0], root, depth + 1)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        merged: dict[str, Any] = {}
        props: dict[str, Any] = {}
        required: list[str] = []
        for part in all_of:
            if isinstance(part, dict):
                merged.update(part)
                props.update(part.get("properties", {}))
                required.extend(part.get("required", []))
        merged.pop("allOf", None)
        if props:
            merged["properties"] = props
            merged["required"] = required
        return minimal_instance(merged, root, depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        non_null_types = [t for t in typ if t != "null"]
        typ = non_null_types[0] if non_null_types else "null"
    if typ is None:
        if "properties" in schema:
            typ = "object"
        elif "items" in schema:
            typ = "array"
        else:
            return {}
    if typ == "string":
        min_len = int(schema.get("minLength", 0))
        s = "sim"
        if len(s) < min_len:
            s = s + "x" * (min_len - len(s))
        max_len = schema.get("maxLength")
        if isinstance(max_len, int):
            s = s[:max_len]
        return s
    if typ in ("number", "integer"):
        value: float = 0
        lo = schema.get("minimum", schema.get("exclusiveMinimum"))
        hi = schema.get("maximum", schema.get("exclusiveMaximum"))
        if isinstance(lo, int | float) and value <= lo:
            value = math.ceil(lo) + (
                1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0
            )
        elif isinstance(hi, int | float) and value >= hi:
            value = math.floor(hi) - (
                1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0
            )
        return int(value)
    if typ == "boolean":
        return False
    if typ == "null":
        return None
    if typ == "array":
        n = int(schema.get("minItems", 0))
        items = schema.get("items", {})
        return [minimal_instance(items, root, depth + 1) for _ in range(n)]
    if typ == "object":
        properties = schema.get("properties", {})
        obj: dict[str, Any] = {}
        for name in schema.get("required", []):
            obj[name] = minimal_instance(properties.get(name, {}), root, depth + 1)
        return obj
    return None


_RERANK_WORD = re.compile(r"\w+")


def sim_rerank_scores(query: str, documents: Sequence[str]) -> list[float]:
    """The sim's ``/rerank`` relevance scores: the share of the query's distinct lowercase
    words (``\\w+``) that occur in each document, rounded to 6 places (0.0 for an empty query).
    """
    q = {w.lower() for w in _RERANK_WORD.findall(query)}
    if not q:
        return [0.0] * len(documents)
    out = []
    for doc in documents:
        d = {w.lower() for w in _RERANK_WORD.findall(doc)}
        out.append(round(len(q & d) / len(q), 6))
    return out
