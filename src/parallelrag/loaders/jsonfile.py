"""JSON and JSON Lines loaders.

With ``text_field`` (a key, or a dotted path such as ``"body.text"`` or ``"items.0.text"``):
a JSON array of objects, or each line of a JSONL file, becomes one document per record whose
source is ``"path#N"`` (N counts records from 0) and whose metadata holds the record's other
top-level scalar fields, plus ``record`` (N) and, for JSONL, ``line`` (1-based). Records without
the field, or with blank text, are left out. A single JSON object gives one document with the
file's own path as source.

Without ``text_field``: a ``.json`` file is one document, its pretty-printed JSON; a ``.jsonl``
file gives one document per record, each pretty-printed (``"path#N"`` as above).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..documents import Document
from ..errors import LoaderError
from .encoding import add_replacements, decode_text

__all__ = ["get_field", "load_json", "load_jsonl"]

_SCALARS = (str, int, float, bool, type(None))
_MISSING = object()

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_surrogates(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings (keys too) replaced by U+FFFD, counted
    as a decode replacement. JSON may spell one (``"\\udce9"``); no store, JSON encoder or
    terminal takes it, and one such record must not fail a whole ingest."""
    if isinstance(value, str):
        fixed, n = _LONE_SURROGATE.subn("\ufffd", value)
        if n:
            add_replacements(n)
        return fixed
    if isinstance(value, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_surrogates(v) for v in value]
    return value


def _loads(text: str) -> Any:
    if _orjson is not None:
        try:
            return _orjson.loads(text)  # refuses lone surrogates: the fallback cleans them
        except _orjson.JSONDecodeError:
            pass  # retry with json: it accepts NaN/Infinity and words errors better
    return _no_surrogates(json.loads(text))


def get_field(record: Any, path: str) -> Any:
    """The value at ``path`` in ``record``: an exact key first, then a dotted path (list indices
    as numbers); a private sentinel when absent."""
    if isinstance(record, dict) and path in record:
        return record[path]
    node = record
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _as_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _record_doc(path: Path, record: Any, n: int | None, text_field: str | None,
                extra: dict[str, Any]) -> Document | None:
    if text_field is None:
        text: str | None = _pretty(record)
    else:
        value = get_field(record, text_field)
        text = None if value is _MISSING else _as_text(value)
    if text is None or not text.strip():
        return None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    metadata: dict[str, Any] = {}
    if text_field is not None and isinstance(record, dict):
        metadata = {k: v for k, v in record.items() if k != text_field and isinstance(v, _SCALARS)}
    metadata.update(extra)
    if n is not None:
        metadata["record"] = n
    source = f"{path}#{n}" if n is not None else str(path)
    return Document(text, source=source, metadata=metadata)


def _parse(text: str, where: str = "") -> Any:
    try:
        return _loads(text)
    except (ValueError, RecursionError) as exc:
        raise LoaderError(f"invalid JSON{where}: {exc}") from exc


def _require(docs: list[Document], text_field: str | None) -> list[Document]:
    if not docs and text_field is not None:
        raise LoaderError(f"no records with text field {text_field!r}", failed=False)
    return docs


def load_json(path: Path, data: bytes, /, *, text_field: str | None = None,
              **options: Any) -> list[Document]:
    """Loader for ``.json`` (see the module docstring)."""
    value = _parse(decode_text(data, newlines=False))
    extra = {"mime": "application/json"}
    if text_field is None:
        return [Document(_pretty(value), metadata=extra)]
    if isinstance(value, list):
        docs = [d for n, rec in enumerate(value)
                if (d := _record_doc(path, rec, n, text_field, extra)) is not None]
        return _require(docs, text_field)
    doc = _record_doc(path, value, None, text_field, extra)
    return _require([doc] if doc is not None else [], text_field)


def _lines(text: str) -> Iterator[tuple[int, str]]:
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.strip():
            yield lineno, line


def load_jsonl(path: Path, data: bytes, /, *, text_field: str | None = None,
               **options: Any) -> list[Document]:
    """Loader for ``.jsonl`` / ``.ndjson`` (see the module docstring)."""
    text = decode_text(data)
    docs: list[Document] = []
    for n, (lineno, line) in enumerate(_lines(text)):
        record = _parse(line, f" on line {lineno}")
        doc = _record_doc(path, record, n, text_field,
                          {"mime": "application/x-ndjson", "line": lineno})
        if doc is not None:
            docs.append(doc)
    return _require(docs, text_field)
