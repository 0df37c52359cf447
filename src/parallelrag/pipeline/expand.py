"""Query expansion for ``Index.answer`` when an LLM is configured: retrieve with more than the
user's own words.

* ``multi`` (multi-query): the LLM rewrites the question ``n`` ways (one per line); each
  rewrite and the original are searched, and the lists are merged by reciprocal-rank fusion.
* ``hyde`` (hypothetical document): the LLM writes a short passage that would answer the
  question; the passage and the original are searched and merged the same way (a passage in
  the docs' own vocabulary lands nearer the real one than the question does).

Both cost one LLM call before retrieval plus one search per query. Never on by default: the
caller asks with ``Index.answer(..., llm=llm, expand="multi")``; without an LLM it is a
:class:`~parallelrag.errors.ConfigError`. The original question is always searched too, so a
useless rewrite (a simulated model's reply) degrades ranking only through the merge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from ..store import Hit

__all__ = ["EXPANSIONS", "expanded_search", "expansion_queries", "rrf_merge"]

#: The expansion methods (``Index.answer(expand=...)``).
EXPANSIONS = ("multi", "hyde")

_MULTI_SYSTEM = ("Rewrite the user's question for a search engine over technical "
                 "documentation. Give {n} different rewrites, one per line, using the words the "
                 "documentation would use (names of functions, modules, concepts). No numbering, "
                 "no other text.")
_HYDE_SYSTEM = ("Write a short passage (at most 80 words) from technical documentation that "
                "answers the user's question. Use the documentation's vocabulary. No preamble.")


async def expansion_queries(question: str, llm: Any, how: str, n: int = 3) -> list[str]:
    """The extra queries the LLM proposes (without the original question)."""
    if how == "multi":
        system = _MULTI_SYSTEM.format(n=n)
        max_tokens = 60 * n
    elif how == "hyde":
        system = _HYDE_SYSTEM
        max_tokens = 160
    else:
        raise ConfigError(f"expand must be one of {', '.join(EXPANSIONS)}, not {how!r}")
    resp = await llm.acomplete_full(
        [{"role": "system", "content": system}, {"role": "user", "content": question}],
        max_tokens=max_tokens, temperature=0)
    text = (getattr(resp, "text", "") or "").strip()
    if how == "hyde":
        return [text] if text else []
    lines = [ln.strip(" -*\t0123456789.)") for ln in text.splitlines()]
    out = [ln for ln in lines if ln and ln.casefold() != question.casefold()]
    return list(dict.fromkeys(out))[:n]


def rrf_merge(lists: Sequence[Sequence[Hit]], k: int, rrf_k: int = 60) -> list[Hit]:
    """Reciprocal-rank fusion of hit lists by chunk id; the first list's hit object is kept for
    each id (its scores are the search's), ``score`` becomes the fused score."""
    fused: dict[int, float] = {}
    first: dict[int, Hit] = {}
    for hits in lists:
        for rank, h in enumerate(hits, 1):
            fused[h.chunk_id] = fused.get(h.chunk_id, 0.0) + 1.0 / (rrf_k + rank)
            first.setdefault(h.chunk_id, h)
    order = sorted(fused, key=lambda c: (-fused[c], c))[:k]
    out = []
    for cid in order:
        h = first[cid]
        h.score = fused[cid]
        out.append(h)
    return out


async def expanded_search(index: Any, question: str, llm: Any, *, k: int = 5,
                          how: str = "multi", n: int = 3, mode: str = "hybrid",
                          where: dict[str, Any] | None = None) -> list[Hit]:
    """Top ``k`` hits for ``question`` and the LLM's expansions, merged by RRF.

    ``index`` is an :class:`~parallelrag.pipeline.Index`; each query fetches ``2 * k`` hits.
    """
    if llm is None:
        raise ConfigError("query expansion needs an LLM (llm=...)")
    if how not in EXPANSIONS:
        raise ConfigError(f"expand must be one of {', '.join(EXPANSIONS)}, not {how!r}")
    extra = await expansion_queries(question, llm, how, n)
    queries = [question, *extra]
    lists = await asyncio.gather(*(index.asearch(q, k=2 * k, mode=mode, where=where)
                                   for q in queries))
    return rrf_merge(lists, k)
