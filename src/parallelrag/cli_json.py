"""What the ``parallelrag`` commands print: one JSON schema per command, and its plain-text form.

Every JSON document has ``command``, ``index`` (the index folder), ``ok`` and ``warnings``
(library warnings met during the command). The same things have the same names everywhere:

* a **hit** (``search`` → ``hits``; ``query`` → ``hits``)::

    {"rank": 1, "chunk_id": 12, "source": "docs/a.md", "start": 0, "end": 812,
     "score": 1.26, "score_kind": "fused" | "cosine" | "bm25",
     "vector_score": 0.71 | null, "keyword_score": 7.2 | null,
     "text": "...", "metadata": {...}}

  ``score`` ranks hits within one list: ``fused`` (hybrid) combines the vector and keyword
  scores (:data:`parallelrag.store.fusion.DEFAULT_FUSION`: z-scores weighted 0.8 / 0.2),
  ``cosine`` is the vector similarity, ``bm25`` the keyword score. ``start``/``end`` are character offsets into the source document.
* a **citation** (``query`` → ``citations``): ``{"number", "chunk_id", "source", "start",
  "end"}``; ``number`` is the ``rank`` of the hit it cites.
* **search**: ``query``, ``mode``, ``k``, ``where``, ``hits``.
* **query**: ``query``, ``mode``, ``k``, ``where``, ``answer``, ``extractive``,
  ``supported`` (false when no passage was similar enough to answer from), ``citations``,
  ``hits``, ``usage`` (``prompt_tokens``, ``completion_tokens``, ``total_tokens``; empty when
  extractive).
* **ingest**: ``added``, ``updated``, ``unchanged``, ``removed``, ``documents``, ``chunks``,
  ``embedded``, ``cache_hits``, ``tokens``, ``requests``, ``retries``, ``rate_limited``,
  ``wall_s``, ``stages``, ``failed`` and ``skipped`` (lists of ``{"source", "reason"}``),
  ``missing`` (sources whose files are gone and were not pruned); ``ok`` is false when
  ``failed`` is not empty.
* **stats**: ``documents``, ``chunks``, ``embedder`` (``provider``, ``model``, ``dimension``),
  ``splitter``, ``bytes_on_disk``, ``store`` (every other field the store reports).
* **remove**: ``removed`` (sources), ``not_found`` (arguments that matched nothing).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from .cli_support import hide_credentials
from .loaders import display_path, find_display_path

__all__ = [
    "SCORE_KINDS",
    "hit_json",
    "ingest_json",
    "ingest_lines",
    "missing_sources",
    "query_json",
    "remove_json",
    "remove_sources",
    "search_json",
    "search_lines",
    "stats_json",
    "stats_lines",
]

SCORE_KINDS = {"hybrid": "fused", "vector": "cosine", "keyword": "bm25"}
_SCORE_WORDS = {
    "fused": "fused score: vector and keyword (BM25) scores as z-scores, weighted 0.8 / 0.2",
    "cosine": "cosine similarity",
    "bm25": "BM25",
}


def _head(command: str, index_dir: str, ok: bool, warnings: Sequence[str]) -> dict[str, Any]:
    return {"command": command, "index": hide_credentials(index_dir), "ok": ok,
            "warnings": list(warnings)}


def hit_json(rank: int, h: Any, mode: str) -> dict[str, Any]:
    return {
        "rank": rank, "chunk_id": h.chunk_id, "source": h.source, "start": h.start,
        "end": h.end, "score": h.score, "score_kind": SCORE_KINDS[mode],
        "vector_score": getattr(h, "vector_score", None),
        "keyword_score": getattr(h, "keyword_score", None),
        "text": h.text, "metadata": dict(h.metadata or {}),
    }


# --------------------------------------------------------------------------- search / query
def search_json(index_dir: str, query: str, mode: str, k: int, where: dict[str, Any] | None,
                hits: Sequence[Any], warnings: Sequence[str]) -> dict[str, Any]:
    return {**_head("search", index_dir, True, warnings), "query": query, "mode": mode, "k": k,
            "where": where, "hits": [hit_json(i, h, mode) for i, h in enumerate(hits, 1)]}


def search_lines(query: str, mode: str, hits: Sequence[Any], why: str = "") -> list[str]:
    """The text output of ``search``; ``why`` ends the line printed when nothing matched (the
    index is empty, or a filter is in force)."""
    kind = SCORE_KINDS[mode]
    if not hits:
        return [f"no chunk matches {query!r}{why}"]
    lines = [f"{len(hits)} hits ({mode} search; score = {_SCORE_WORDS[kind]}; higher is better)"]
    for i, h in enumerate(hits, 1):
        lines.append(f"[{i}] {h.source}:{h.start}-{h.end}  score {h.score:.4f}")
        lines.append("    " + " ".join(h.text.split())[:300])
    return lines


def query_json(index_dir: str, query: str, mode: str, k: int, where: dict[str, Any] | None,
               ans: Any, warnings: Sequence[str]) -> dict[str, Any]:
    return {
        **_head("query", index_dir, True, warnings), "query": query, "mode": mode, "k": k,
        "where": where, "answer": ans.text, "extractive": bool(ans.extractive),
        "supported": bool(getattr(ans, "supported", True)),
        "citations": [{"number": c.number, "chunk_id": c.chunk_id, "source": c.source,
                       "start": c.start, "end": c.end} for c in ans.citations],
        "hits": [hit_json(i, h, mode) for i, h in enumerate(ans.hits, 1)],
        "usage": dict(ans.usage or {}),
    }


# --------------------------------------------------------------------------- ingest
def _under(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def missing_sources(index: Any, report: Any, roots: Sequence[str]) -> list[str]:
    """Indexed documents of files under ``roots`` that no longer exist (left in place without
    ``--prune``). Uses ``report.missing`` when the pipeline reports it."""
    reported = getattr(report, "missing", None)
    if isinstance(reported, list | tuple):
        return [str(s) for s in reported]
    real_roots = [Path(display_path(os.path.realpath(r))) for r in roots]
    base = getattr(index, "root", None)
    out = []
    for d in index.store.documents():
        key = d.metadata.get("file")
        if not isinstance(key, str) or not key:
            if "path" not in d.metadata:
                continue  # a caller's document, not a file's
            key = d.source.split("#", 1)[0]
        p = Path(key)
        if not p.is_absolute():
            p = Path(base) / p if base is not None else Path(os.path.realpath(p))
        if _under(p, real_roots) and find_display_path(p) is None:
            out.append(d.source)
    return out


def _pairs(items: Any) -> list[dict[str, str]]:
    return [{"source": str(a), "reason": str(b)} for a, b in (items or [])]


def ingest_json(index_dir: str, report: Any, missing: Sequence[str],
                warnings: Sequence[str]) -> dict[str, Any]:
    d: dict[str, Any] = report.as_dict() if hasattr(report, "as_dict") else (
        asdict(report) if is_dataclass(report) and not isinstance(report, type) else {})
    d.pop("ok", None)
    d["failed"] = _pairs(getattr(report, "failed", []))
    d["skipped"] = _pairs(getattr(report, "skipped", []))
    d["missing"] = list(missing)
    return {**_head("ingest", index_dir, not d["failed"], warnings), **d}


def ingest_lines(index_dir: str, doc: dict[str, Any]) -> list[str]:
    lines = [
        f"ingest into {hide_credentials(index_dir)}: {doc['added']} added, {doc['updated']} updated, "
        f"{doc['unchanged']} unchanged, {doc['removed']} removed, {len(doc['skipped'])} skipped, "
        f"{len(doc['failed'])} failed",
        f"{doc['chunks']} chunks written, {doc['embedded']} texts embedded "
        f"({doc.get('cache_hits', 0)} from cache), {doc['requests']} requests, "
        f"{doc['retries']} retries, {doc['rate_limited']} rate-limited (429), "
        f"{doc['wall_s']:.1f} s",
    ]
    for item in doc["skipped"]:
        lines.append(f"  skipped {item['source']}: {item['reason']}")
    for item in doc["failed"]:
        lines.append(f"  failed {item['source']}: {item['reason']}")
    missing = doc["missing"]
    if missing:
        lines.append(f"{len(missing)} indexed documents whose files are gone are still "
                     "searchable (rerun with --prune to remove them, or `parallelrag remove`):")
        lines.extend(f"  missing {s}" for s in missing)
    return lines


# --------------------------------------------------------------------------- stats
_STATS_TOP = ("documents", "chunks", "embedder", "splitter", "bytes_on_disk")


def stats_json(index_dir: str, s: dict[str, Any], warnings: Sequence[str]) -> dict[str, Any]:
    doc = _head("stats", index_dir, True, warnings)
    for key in _STATS_TOP:
        doc[key] = s.get(key)
    doc["store"] = {k: v for k, v in s.items() if k not in _STATS_TOP}
    return doc


def _fmt_bytes(n: Any) -> str:
    if not isinstance(n, int | float):
        return str(n)
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(n)


def stats_lines(doc: dict[str, Any]) -> list[str]:
    emb = doc.get("embedder") or {}
    lines = [
        f"index: {doc['index']}",
        f"documents: {doc['documents']}",
        f"chunks: {doc['chunks']}",
        f"embedder: {emb.get('provider')}:{emb.get('model')} ({emb.get('dimension')} dims)"
        if isinstance(emb, dict) else f"embedder: {emb}",
        f"splitter: {doc['splitter']}",
        f"bytes_on_disk: {doc['bytes_on_disk']} ({_fmt_bytes(doc['bytes_on_disk'])})",
    ]
    for key, value in doc["store"].items():
        lines.append(f"{key}: {value}")
    return lines


# --------------------------------------------------------------------------- remove
def remove_sources(index: Any, sources: Sequence[str]) -> tuple[list[str], list[str]]:
    """``index.remove`` each argument (a document id or source, or a file path: all of its
    records); (the documents removed, the arguments that matched nothing)."""
    removed: list[str] = []
    not_found: list[str] = []
    before = {d.source for d in index.store.documents()}
    for arg in sources:
        if not index.remove(arg):
            not_found.append(arg)
    after = {d.source for d in index.store.documents()}
    removed = sorted(before - after)
    return removed, not_found


def remove_json(index_dir: str, removed: Sequence[str], not_found: Sequence[str],
                warnings: Sequence[str]) -> dict[str, Any]:
    return {**_head("remove", index_dir, not not_found, warnings), "removed": list(removed),
            "not_found": list(not_found)}
