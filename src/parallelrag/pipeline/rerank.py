"""Reranking: a second look at the top search hits with a model that reads query and passage
together, before the best ``k`` go to the answer.

A reranker is anything with ``async arerank(query, hits, k) -> list[Hit]`` (:class:`Reranker`).
Three come with the library:

* :class:`CrossEncoderReranker`: a local sentence-transformers ``CrossEncoder`` loaded from a
  folder (no download: give it a path);
* :class:`~parallelrag.providers.rerank.HttpReranker`: a ``/rerank`` endpoint in the Cohere,
  Jina or Hugging Face TEI format, through the same resilience layer as the other providers;
* :class:`LlmReranker`: an :class:`~parallelrag.llm.LlmClient` asked to order the passages
  (listwise).

``Index.search(..., reranker=r)`` fetches ``rerank_depth`` hybrid hits, reranks them and keeps
``k``. Reranked hits are copies: ``score`` is the reranker's score (higher is better),
``vector_score`` / ``keyword_score`` are kept from the search. Off unless a reranker is given.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError
from ..runtime import run_sync, to_thread
from ..store import Hit

__all__ = [
    "DEFAULT_RERANK_DEPTH",
    "CrossEncoderReranker",
    "LlmReranker",
    "Reranker",
    "hit_text",
    "reorder",
]

#: How many search hits a reranker sees by default (it keeps ``k`` of them).
DEFAULT_RERANK_DEPTH = 20


@runtime_checkable
class Reranker(Protocol):
    """Orders hits by relevance to the query; returns at most ``k`` of them, best first."""

    async def arerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]: ...


def hit_text(hit: Hit, max_chars: int | None = None) -> str:
    """The passage a reranker reads: the hit's context line (title, headings) and its text."""
    ctx = getattr(hit, "context", "") or ""
    text = f"{ctx}\n\n{hit.text}" if ctx else hit.text
    return text if max_chars is None or len(text) <= max_chars else text[:max_chars]


def reorder(hits: Sequence[Hit], scores: Sequence[float], k: int) -> list[Hit]:
    """Copies of ``hits`` sorted by ``scores`` (descending; ties keep the search order), the
    first ``k``, with ``score`` set to the reranker's score."""
    if len(scores) != len(hits):
        raise ValueError(f"{len(scores)} scores for {len(hits)} hits")
    order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))[: max(k, 0)]
    return [dataclasses.replace(hits[i], score=float(scores[i])) for i in order]


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder`` from a local folder (``config.json``, weights,
    tokenizer), loaded on first use in a worker thread; scoring runs in a worker thread too
    (torch releases the GIL), so the event loop never blocks on the model."""

    def __init__(self, path: str | Path, *, batch_size: int = 32, max_length: int = 512,
                 max_chars: int = 2000, device: str | None = None) -> None:
        p = Path(path)
        if not (p / "config.json").is_file():
            raise ConfigError(f"no CrossEncoder model at {p} (a folder with config.json)")
        self.path = p
        self.batch_size = batch_size
        self.max_length = max_length
        self.max_chars = max_chars
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CrossEncoderReranker({str(self.path)!r})"

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                from ..providers.local import _st_imports

                _st_imports()  # offline, quiet; ConfigError when the local extra is missing
                from sentence_transformers import CrossEncoder

                self._model = CrossEncoder(str(self.path), max_length=self.max_length,
                                           device=self.device, local_files_only=True)
            return self._model

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        """Relevance scores of ``texts`` for ``query`` (blocking; higher is better)."""
        if not texts:
            return []
        model = self._load()
        out = model.predict([(query, t) for t in texts], batch_size=self.batch_size,
                            show_progress_bar=False, convert_to_numpy=True)
        return [float(s) for s in out.reshape(len(texts), -1)[:, -1]]

    async def arerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        if not hits or k <= 0:
            return []
        texts = [hit_text(h, self.max_chars) for h in hits]
        scores = await to_thread(self.scores, query, texts)
        return reorder(hits, scores, k)

    def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        """Sync twin of :meth:`arerank`."""
        return run_sync(self.arerank(query, hits, k), alternative="await reranker.arerank(...)")


_NUMBERS = re.compile(r"\d+")


class LlmReranker:
    """Listwise reranking by a chat model: the passages are numbered in the prompt and the
    model answers with their numbers, most relevant first (``3 > 1 > 2``). Numbers it leaves
    out keep their search order after the ones it names; an answer with no usable number keeps
    the search order. One request per query, through the client's own resilience."""

    def __init__(self, llm: Any, *, max_chars: int = 700, max_tokens: int = 100) -> None:
        if not hasattr(llm, "acomplete_full"):
            raise ConfigError("LlmReranker needs an LlmClient (or anything with acomplete_full)")
        self.llm = llm
        self.max_chars = max_chars
        self.max_tokens = max_tokens

    def __repr__(self) -> str:
        return f"LlmReranker({self.llm!r})"

    def messages(self, query: str, hits: Sequence[Hit]) -> list[dict[str, str]]:
        blocks = "\n\n".join(f"[{i}] {hit_text(h, self.max_chars)}"
                             for i, h in enumerate(hits, 1))
        system = ("You rank passages by how well they answer the user's question. Reply with "
                  "the passage numbers only, most relevant first, separated by ' > ', for "
                  "example '3 > 1 > 2'. Leave out passages that do not help.\n\nPassages:\n"
                  + blocks)
        return [{"role": "system", "content": system}, {"role": "user", "content": query}]

    @staticmethod
    def parse(text: str, n: int) -> list[int]:
        """0-based passage indexes in the order the reply names them (valid, first mention)."""
        seen: list[int] = []
        for m in _NUMBERS.finditer(text):
            i = int(m.group()) - 1
            if 0 <= i < n and i not in seen:
                seen.append(i)
        return seen

    async def arerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        if not hits or k <= 0:
            return []
        resp = await self.llm.acomplete_full(self.messages(query, hits),
                                             max_tokens=self.max_tokens, temperature=0)
        named = self.parse(getattr(resp, "text", "") or "", len(hits))
        order = named + [i for i in range(len(hits)) if i not in named]
        n = len(hits)
        scores = [0.0] * n
        for rank, i in enumerate(order):
            scores[i] = float(n - rank)
        return reorder(hits, scores, k)

    def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        """Sync twin of :meth:`arerank`."""
        return run_sync(self.arerank(query, hits, k), alternative="await reranker.arerank(...)")


async def arerank(reranker: Reranker, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
    """Run ``reranker`` and check what it returned (hits, at most ``k``)."""
    out = await reranker.arerank(query, list(hits), k)
    if not isinstance(out, list) or not all(isinstance(h, Hit) for h in out):
        raise ConfigError(f"{reranker!r}.arerank must return a list of Hit")
    return out[:k]
