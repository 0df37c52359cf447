"""``/rerank`` endpoints: Cohere, Jina and Hugging Face Text Embeddings Inference (TEI).

Wire formats (``POST {base_url}/rerank``):

* ``cohere`` (also Jina, Voyage-style servers, vLLM's ``/v1/rerank``): request
  ``{"model", "query", "documents": [str], "top_n"}``, response
  ``{"results": [{"index", "relevance_score"}]}``;
* ``tei``: request ``{"query", "texts": [str], "raw_scores": false}``, response
  ``[{"index", "score"}]``.

Every request goes through :func:`parallelrag.providers.http.request` and the shared
:class:`~parallelrag.resilience.Resilience` of its ``(base_url, model)`` (retries with backoff,
rate limits from ``x-ratelimit-*`` headers, adaptive concurrency, circuit breaker), like the
embedding and chat providers. The API key is held as a :class:`~parallelrag.config.Secret`.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ..config import MaskedStr, Secret, Timeouts, env, secret_from
from ..errors import ConfigError, ResponseError
from ..resilience import Resilience, ResilienceConfig, shared_resilience
from ..runtime import run_async, run_sync
from ..store import Hit
from .http import HttpOptions, HttpResponse, masked_headers, request
from .tokens import estimate_tokens

__all__ = ["HttpReranker", "RerankFormat"]

RerankFormat = Literal["cohere", "jina", "tei"]


class HttpReranker:
    """A reranker served over HTTP (see the module doc for the formats).

    ``base_url``: the API root (``https://api.cohere.com/v2``, ``https://api.jina.ai/v1``,
    ``http://localhost:8080`` for TEI); the request goes to ``{base_url}/{path}``. ``api_key``
    defaults to ``PARALLELRAG_RERANK_API_KEY``. ``max_chars`` trims each passage (servers
    reject over-long inputs). ``max_response_bytes`` as for
    :class:`~parallelrag.providers.openai.OpenAICompat`. Implements
    :class:`parallelrag.pipeline.rerank.Reranker`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str = "",
        api_key: str | Secret | None = None,
        format: RerankFormat = "cohere",
        path: str = "rerank",
        timeouts: Timeouts | float | None = None,
        resilience: ResilienceConfig | None = None,
        headers: Mapping[str, str] | None = None,
        max_chars: int = 4000,
        provider: str = "rerank",
        proxy: str | None = None,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
        max_response_bytes: int | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
        if format not in ("cohere", "jina", "tei"):
            raise ConfigError(f"format must be cohere, jina or tei, not {format!r}")
        if format != "tei" and not model:
            raise ConfigError(f"a {format} rerank endpoint needs model=")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.format = format
        self.path = path.strip("/")
        self.api_key = secret_from(api_key, "PARALLELRAG_RERANK_API_KEY")
        self.timeouts = Timeouts.of(timeouts)
        self.extra_headers = dict(headers or {})
        self.max_chars = max_chars
        self.provider = provider
        self.http = HttpOptions(proxy=proxy, verify=verify,  # proxies from the environment too
                                max_response_bytes=max_response_bytes)
        self.resilience: Resilience = shared_resilience((self.base_url, model or "rerank"),
                                                        resilience)

    @classmethod
    def from_env(cls, **kw: Any) -> HttpReranker:
        """From ``PARALLELRAG_RERANK_URL``, ``PARALLELRAG_RERANK_MODEL`` and
        ``PARALLELRAG_RERANK_FORMAT`` (explicit arguments win)."""
        url = kw.pop("base_url", None) or env("PARALLELRAG_RERANK_URL")
        if not url:
            raise ConfigError("no rerank endpoint: pass base_url= or set PARALLELRAG_RERANK_URL")
        kw.setdefault("model", env("PARALLELRAG_RERANK_MODEL", ""))
        kw.setdefault("format", env("PARALLELRAG_RERANK_FORMAT", "cohere"))
        return cls(url, **kw)

    def __repr__(self) -> str:
        return (f"HttpReranker(base_url={self.base_url!r}, model={self.model!r}, "
                f"format={self.format!r})")

    def _headers(self) -> dict[str, str]:
        h = masked_headers(self.extra_headers)
        if self.api_key is not None:  # masked in reprs and captured-locals tracebacks
            h["authorization"] = MaskedStr(f"Bearer {self.api_key.get()}")
        return h

    def _payload(self, query: str, texts: list[str], top_n: int) -> dict[str, Any]:
        if self.format == "tei":
            return {"query": query, "texts": texts, "raw_scores": False}
        return {"model": self.model, "query": query, "documents": texts, "top_n": top_n}

    def _parse(self, resp: HttpResponse, n: int) -> list[float]:
        data = resp.json(self.provider)
        items = data if self.format == "tei" else (
            data.get("results") if isinstance(data, dict) else None)
        key = "score" if self.format == "tei" else "relevance_score"
        if not isinstance(items, list):
            raise ResponseError("unexpected rerank response shape: no result list",
                                provider=self.provider, status_code=resp.status)
        scores: list[float | None] = [None] * n
        try:
            for item in items:
                i = int(item["index"])
                if not 0 <= i < n:
                    raise ValueError(f"index {i} out of range for {n} documents")
                scores[i] = float(item[key])
        except (KeyError, TypeError, ValueError) as exc:
            raise ResponseError(f"unexpected rerank response shape: {type(exc).__name__}: "
                                f"{exc}", provider=self.provider,
                                status_code=resp.status) from None
        # a server that returns only its top_n leaves the rest below every scored document
        low = min((s for s in scores if s is not None), default=0.0) - 1.0
        return [s if s is not None else low for s in scores]

    async def ascores(self, query: str, texts: Sequence[str]) -> list[float]:
        """Relevance scores of ``texts`` for ``query``, in input order (one request, on the
        runtime loop whatever loop the caller awaits from)."""
        if not texts:
            return []
        return await run_async(self._scores(query, list(texts)))

    def scores(self, query: str, texts: Sequence[str]) -> list[float]:
        """Sync twin of :meth:`ascores`."""
        return run_sync(self.ascores(query, texts), alternative="await reranker.ascores(...)")

    def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        """Sync twin of :meth:`arerank`."""
        return run_sync(self.arerank(query, hits, k), alternative="await reranker.arerank(...)")

    async def _scores(self, query: str, texts: list[str]) -> list[float]:
        docs = [t[: self.max_chars] for t in texts]
        payload = self._payload(query, docs, len(docs))
        url = f"{self.base_url}/{self.path}"
        tokens = estimate_tokens(query) * len(docs) + sum(estimate_tokens(d) for d in docs)

        async def attempt() -> HttpResponse:
            resp = await request("POST", url, provider=self.provider, headers=self._headers(),
                                 json_body=payload, timeouts=self.timeouts, options=self.http)
            self.resilience.rate_limiter.update_from_headers(resp.headers)
            return resp

        resp = await self.resilience.execute(attempt, tokens=tokens)
        return self._parse(resp, len(docs))

    async def arerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        from ..pipeline.rerank import hit_text, reorder

        if not hits or k <= 0:
            return []
        scores = await self.ascores(query, [hit_text(h) for h in hits])
        return reorder(hits, scores, k)
