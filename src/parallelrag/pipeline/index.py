"""``Index``: streaming ingestion into a vector store, hybrid search, answers with citations.

Ingest runs as concurrent stages joined by bounded queues (backpressure, so memory does not grow
with the corpus)::

    load (thread) ─▶ split (batch, both cores) ─▶ embed (N workers, adaptive concurrency)
                  ─▶ write (one writer, batched transactions)

What goes in: file and directory paths, :class:`~parallelrag.documents.Document` objects,
``(text, metadata)`` pairs, and iterables or generators of any mix of them (consumed lazily by
the loader thread, so a generator of millions of records streams in bounded memory).

Identity (what an ingest replaces, what ``remove`` deletes):

* a **file** is one document whatever the spelling of its path or the working directory: its
  key is its resolved real path, stored relative to the index's *root* (the directory that
  holds the index directory, or ``root=``) when it lies under it, else absolute. An index that
  moves together with its corpus keeps its keys. The path as given is kept in
  ``metadata["path"]``; ``metadata["file"]`` holds the key (records of a JSON file share it, their
  keys are ``KEY#N``);
* a **document** is keyed by ``Document.id``, else ``metadata["id"]``, else ``Document.source``,
  else its content hash; ``metadata["id"]`` is set to that key. Ingesting the same key again
  replaces it (upsert), unchanged text and metadata are skipped.

A document is recorded with its content hash only in the transaction that writes its chunks, so a
run killed at any point resumes where it stopped and never leaves half a document visible.
Vectors are reused by content: before embedding, each chunk's embedded text is looked up in the
store (:meth:`~parallelrag.store.VectorStore.vectors_by_key`), so re-ingesting a changed file or
re-splitting with new settings embeds only chunk texts the store does not hold.

The index remembers how it was built: the embedder's spec and the splitter's settings are saved
in the store (:meth:`~parallelrag.store.VectorStore.save_config`). Reopening without them uses
the saved ones; reopening with different ones raises :class:`ConfigError` naming the difference,
unless ``rebuild=True`` (then the new settings are saved and the next ingest re-splits and
re-embeds what changed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson

# the splitters are imported with the pipeline, not when an index opens: an index opened
# while the interpreter exits (an atexit handler) could not import them then
from .. import splitters
from ..documents import Chunk, Document, content_hash
from ..embeddings import EmbeddingClient, _Tracker
from ..errors import BadRequestError, ConfigError, ParallelRagError, StoreError
from ..loaders import display_path, load_path
from ..runtime import CallbackRunner, WorkerPool, get_runtime, run_async, run_sync, to_thread
from ..store import EmbeddedStore, Hit, VectorStore
from ..store.base import embed_text, text_key
from ..store.embedded import on_read_only_media
from .grouping import DEFAULT_DOCUMENT_RANKING, rank_by_document
from .types import Answer, Citation, IngestProgress, IngestReport

__all__ = [
    "DEFAULT_INDEX_DIR", "DEFAULT_SYSTEM", "Index", "Source", "chunk_documents", "embed_text",
    "file_documents", "file_identity", "splitter_config", "splitter_from_config",
]

DEFAULT_INDEX_DIR = ".parallelrag"

#: What :meth:`Index.ingest` takes: one of these, or an iterable / generator of them.
Source = str | os.PathLike[str] | Document | tuple[str, Mapping[str, Any]]

#: The default system prompt of answers (the numbered sources follow it).
DEFAULT_SYSTEM = (
    "Answer the user's question using only the numbered sources below. Cite every claim "
    "with the source number in brackets, like [1]. If the sources do not contain the "
    "answer, say that they do not."
)

ProgressFn = Callable[[IngestProgress], None]

_CONFIG_VERSION = 1
# embedder spec parameters that change the vectors (with provider and model); every other
# option (batch size, rate limits, base URL, retries, truncation...) may change on a reopen: the
# new value is saved
_IDENTITY = frozenset({"dimensions", "dim", "document_prompt"})  # not query_prompt: see
# EmbeddingClient.identity_of (the stored vectors do not depend on it)

_SPLIT_BATCH_DOCS = 64
_SPLIT_BATCH_CHARS = 2_000_000
# a batch smaller than this waits up to _SPLIT_MIN_WAIT_S for the next document before it is split
_SPLIT_MIN_CHARS = 256_000
_SPLIT_MIN_WAIT_S = 0.02
# sentinel: the wait for more documents ran out
_FLUSH: tuple[str, str, list[Document], list[str]] = ("", "", [], [])
# Split batches in flight at the embed stage. The first batches of a run are tiny (the splitter
# takes whatever the loader has ready), and each holds its worker for a round trip; with 4
# workers the first ~0.7 s of a rate-limited run sent only small requests and left the
# provider's initial token bucket unused (sim log, 1b scenario of benchmarks/pipeline.py). The
# adaptive limiter still bounds the requests actually in flight.
_EMBED_WORKERS = 16
# Document text (characters) between the split stage and the end of its write: the bound that
# keeps peak memory independent of corpus size (the queues alone bound batches, not bytes, and a
# lagging writer would otherwise let every queue and worker fill with the largest batches).
# 4M characters is ~1M tokens in flight: a provider's whole initial bucket at 1M TPM.
_INFLIGHT_CHARS = 4_000_000
_WRITE_BATCH = 64


def default_splitter(embedder: EmbeddingClient) -> Any:
    """A recursive splitter sized for the embedder: model tokens for minilm, chars otherwise."""
    if embedder.provider == "local" and "minilm" in embedder.model.lower():
        # 128 model tokens: best recall@1 / MRR in docs/retrieval-eval.md (vs 200 tokens)
        return splitters.RecursiveSplitter(chunk_size=128, chunk_overlap=16, length="minilm")
    return splitters.RecursiveSplitter(chunk_size=1500, chunk_overlap=150)


def _splitter_signature(splitter: Any) -> str:
    """What decides the chunks: a change re-splits unchanged files on the next ingest."""
    parts = [type(splitter).__name__]
    for attr in ("chunk_size", "chunk_overlap", "separators", "separator", "tokenizer"):
        if hasattr(splitter, attr):
            parts.append(f"{attr}={getattr(splitter, attr)!r}")
    length = getattr(splitter, "length", None)
    parts.append(f"length={getattr(length, 'name', length)!r}")
    return ";".join(parts)


def splitter_config(splitter: Any) -> dict[str, Any]:
    """The settings that decide a splitter's chunks, as a JSON-able dict (saved with the index)."""
    cls = type(splitter)
    cfg: dict[str, Any] = {"type": cls.__name__}
    if not cls.__module__.startswith("parallelrag.splitters"):
        cfg["module"] = cls.__module__
    for attr in ("chunk_size", "chunk_overlap", "separators", "separator"):
        if hasattr(splitter, attr):
            value = getattr(splitter, attr)
            cfg[attr] = list(value) if isinstance(value, list | tuple) else value
    length = getattr(splitter, "length", None)
    if length is not None:
        cfg["length"] = getattr(length, "name", None) or repr(length)
    return cfg


def splitter_from_config(cfg: Mapping[str, Any]) -> Any:
    """Rebuild a splitter of :mod:`parallelrag.splitters` from :func:`splitter_config`'s dict."""
    name = str(cfg.get("type", ""))
    cls = getattr(splitters, name, None)
    if "module" in cfg or cls is None or not isinstance(cls, type):
        raise ConfigError(
            f"the index was built with the splitter {cfg.get('module', '')}.{name}, which cannot "
            "be rebuilt from its settings: pass the same splitter= when opening it"
        )
    kw: dict[str, Any] = {k: cfg[k] for k in ("chunk_size", "chunk_overlap", "separators",
                                               "separator") if k in cfg}
    if "length" in cfg:
        kw["tokenizer" if name == "TokenSplitter" else "length"] = cfg["length"]
    try:
        return cls(**kw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot rebuild the index's splitter {name}({kw}): {exc}") from exc


def _embedder_identity(spec: str) -> dict[str, str]:
    """What in an embedder spec decides the vectors: provider, model and vector options."""
    if "://" not in spec:
        scheme, _, rest = spec.partition(":")
        if not rest:
            return {"provider": "local", "model": scheme.lower()}
        spec = f"{scheme}://{rest}"
    parts = urlsplit(spec)
    out = {"provider": parts.scheme.lower(), "model": (parts.netloc + parts.path).strip("/")}
    for k, v in sorted(parse_qs(parts.query).items()):
        if k in _IDENTITY:
            out[k] = v[-1]
    if out["provider"] == "local":
        out["model"] = out["model"].lower()
    return out


#: The files an embedded index keeps in its folder (anchored ``exclude`` patterns).
_INDEX_FILES = ("/index.json", "/index.json.tmp", "/store.sqlite", "/store.sqlite-*",
                "/store.lock", "/matrix-*.bin", "/matrix.json", "/matrix.lock",
                "/vectors.meta.json")


def own_folder_excludes(index_path: str | os.PathLike[str] | None,
                        root: str | os.PathLike[str]) -> list[str]:
    """An ``exclude`` pattern that leaves the index folder ``index_path`` out of a walk of
    ``root`` when it lies inside it (``ingest .`` with ``--index rag-index``): its database and
    vector files are not documents. When ``root`` is the index folder itself (``ingest docs
    --index docs``), the index's own files in it. Empty when it does not hold it, or for a
    database URL (None)."""
    if index_path is None:
        return []
    try:
        rel = Path(os.path.realpath(index_path)).relative_to(os.path.realpath(root))
    except ValueError:
        return []
    if not rel.parts:
        return list(_INDEX_FILES)
    escaped = re.sub(r"([*?\[])", r"[\1]", rel.as_posix())  # glob characters taken literally
    return [f"/{escaped}/"]


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _fill(template: str, **values: str) -> str:
    """Replace ``{name}`` fields of ``template`` (other braces are left alone)."""
    return re.sub(r"\{(" + "|".join(values) + r")\}", lambda m: values[m.group(1)], template)


def file_identity(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> str:
    """A file's key in an index: its real path (symlinks and ``..`` resolved, relative paths
    taken from the working directory), ``/``-separated and relative to ``root`` (the index's
    :attr:`Index.root`) when it lies under it, else absolute. Every engine must key files with
    this (and the index's root) so that they agree on what is the same file. Bytes of the path
    that are not UTF-8 are written ``\\xNN`` (:func:`~parallelrag.loaders.display_path`), so the
    key can be stored and is the same on every run."""
    real = Path(os.path.realpath(path))
    if root is not None:
        try:
            return display_path(real.relative_to(os.path.realpath(root)).as_posix())
        except ValueError:
            pass
    return display_path(real.as_posix())


def file_documents(key: str, documents: Sequence[Document],
                   given: str | None = None) -> list[Document]:
    """A loaded file's documents as stored: each keyed ``key`` (one document) or ``key#N``
    (records of a JSON file keep their ``#N``), with ``metadata["file"] = key`` and
    ``metadata["path"]`` = the path as given (``given``: the path as the OS gives it, spelled
    here with :func:`~parallelrag.loaders.display_path`; default: the documents' source,
    already spelled so by the loaders)."""
    if given is None:
        given = (documents[0].source.split("#", 1)[0] if documents and documents[0].source
                 else key)
    else:
        given = display_path(given)  # once: the spelling is not idempotent (``\\xNN``)
    out: list[Document] = []
    for i, d in enumerate(documents):
        src = d.source or given
        if src == given:
            skey = key if len(documents) == 1 else f"{key}#{i}"
        elif src.startswith(given):
            skey = key + src[len(given):]
        else:
            skey = f"{key}#{i}"
        meta = dict(d.metadata)
        meta["file"] = key
        meta["path"] = given
        out.append(Document(d.text, source=skey, metadata=meta, outline=list(d.outline)))
    return out


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_text(value: str) -> tuple[str, int]:
    """``value`` with each lone surrogate as U+FFFD, and how many: UTF-8 (SQLite, PostgreSQL,
    JSON) cannot store them. Costs one C-speed check for text that is fine."""
    if value.isascii():
        return value, 0
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.subn("\ufffd", value)
    return value, 0


def _valid_document(doc: Document) -> tuple[Document, int]:
    """A caller's document with lone surrogates (what a broken JSON escape or an
    ``os.fsdecode``'d name leaves in a str) made storable, and how many values changed: U+FFFD
    in its text, outline and string metadata (keys and values); its ``id`` and ``source`` spelled
    as :func:`~parallelrag.loaders.display_path` spells file keys (``\\xNN``), so that they stay
    distinct and ``remove`` finds them by the same str."""
    fixed = 0

    def clean(value: Any) -> Any:
        nonlocal fixed
        if not isinstance(value, str):
            return value
        out, n = _valid_text(value)
        fixed += n
        return out

    respelled = False

    def key(value: str | None) -> str | None:
        nonlocal fixed, respelled
        if value is None:
            return None
        out = display_path(value)
        if out != value:  # a repair only when it held lone surrogates (not a literal \\xNN)
            respelled = True
            fixed += _SURROGATE.search(value) is not None
        return out

    text = clean(doc.text)
    meta = {clean(k): key(v) if k == "id" and isinstance(v, str) else clean(v)
            for k, v in doc.metadata.items()}
    doc_id = key(doc.id)
    source = key(doc.source) or ""
    outline = [(a, b, clean(t)) for a, b, t in doc.outline]
    if not fixed and not respelled:
        return doc, 0
    return Document(text, source=source, metadata=meta, id=doc_id, outline=outline), fixed


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception a caller should see for a failed ingest: the first of its stages' errors
    that is not a cancellation (the other stages are cancelled when one fails)."""
    flat: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for sub in exc.exceptions:
                walk(sub)
        else:
            flat.append(exc)

    walk(group)
    real = [e for e in flat if not isinstance(e, asyncio.CancelledError)]
    return (real or flat or [group])[0]


def _scalar_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool)}


def split_documents(splitter: Any, documents: Sequence[Document],
                    context: bool = False) -> list[list[Chunk]]:
    """Split documents (one ``split_many`` call); with ``context``, set each chunk's
    ``context`` (title > heading path, :func:`~parallelrag.pipeline.context.chunk_context`)."""
    from .context import chunk_context

    out: list[list[Chunk]] = splitter.split_many([d.text for d in documents],
                                                 metadatas=[dict(d.metadata) for d in documents])
    if context:
        for d, chunks in zip(documents, out, strict=True):
            for c in chunks:
                c.context = chunk_context(d, c)
    return out


def chunk_documents(splitter: Any, key: str, documents: Sequence[Document],
                    given: str | None = None, context: bool = False,
                    ) -> list[tuple[str, list[Chunk], dict[str, Any]]]:
    """A loaded file's documents ready to embed, exactly as :meth:`Index.ingest` makes them:
    ``(store key, chunks (with context when asked), metadata)`` per document (see
    :func:`file_documents`)."""
    docs = file_documents(key, documents, given)
    return [(d.source, chunks, _scalar_metadata(d.metadata))
            for d, chunks in zip(docs, split_documents(splitter, docs, context), strict=True)]


def _request_groups(docs: Sequence[tuple[str, str, list[Chunk], Any, Any]],
                    batch_inputs: int | None) -> list[list[Any]]:
    """Consecutive documents of a split batch (``(key, hash, chunks, ...)``) in groups whose
    chunks fit in one embedding request of ``batch_inputs`` texts; a larger document is a group
    of its own, and the documents of one file (the same content hash) stay together.

    The ingest embeds the groups of a batch concurrently and writes each as soon as it is
    back, so documents finish while a slow provider works through the batch, not all when its
    last request answers. With ``batch_inputs`` None, or a batch that fits one request, there
    is one group (the embedder packs requests as it did)."""
    if not batch_inputs or sum(len(d[2]) for d in docs) <= batch_inputs:
        return [list(docs)]
    groups: list[list[Any]] = []
    size = 0
    for d in docs:
        n = len(d[2])
        same_file = bool(groups) and groups[-1][-1][1] == d[1]
        if groups and (same_file or size + n <= batch_inputs):
            groups[-1].append(d)
            size += n
        else:
            groups.append([d])
            size = n
    return groups


def unit_rows(vecs: np.ndarray) -> np.ndarray:
    """``vecs`` (one vector or rows) scaled to length 1, zero ones left zero: the stores rank by
    inner product, which is the cosine only for unit vectors, and an embedding function or an
    OpenAI-compatible server may return vectors of any length."""
    wide = np.asarray(vecs, dtype=np.float64)  # no float32 underflow or overflow in the norm
    norms = np.linalg.norm(wide, axis=-1, keepdims=True)
    out = np.zeros(wide.shape, dtype=np.float64)
    np.divide(wide, norms, out=out, where=norms > 0)
    return out.astype(np.float32)


async def embed_texts(
    embedder: EmbeddingClient, store: VectorStore | None, texts: Sequence[str], dim: int,
    tracker: _Tracker,
) -> tuple[np.ndarray, dict[int, BaseException], np.ndarray, int]:
    """Vectors for chunk ``texts`` as every ingest engine gets them: reused from ``store`` by
    text key where it holds them (None: no reuse), the rest from ``embedder`` with per-text
    failures. Returns ``(rows, failures by index, which rows were computed, reused or cached
    count)``. Runs on the runtime loop."""
    rt = get_runtime()
    rows = np.zeros((len(texts), dim), dtype=np.float32)
    fresh = np.zeros(len(texts), dtype=bool)
    failures: dict[int, BaseException] = {}
    todo = list(range(len(texts)))
    reused = 0
    if store is not None and texts:
        keys = [text_key(x) for x in texts]
        try:
            found = await rt.to_thread(store.vectors_by_key, keys)
        except ParallelRagError:
            found = {}
        todo = []
        for i, k in enumerate(keys):
            v = found.get(k)
            if v is not None and v.shape == (dim,):
                rows[i] = v
            else:
                todo.append(i)
        reused = len(texts) - len(todo)
    if todo:
        hits_before = tracker.cache_hits
        try:
            got, fails = await embedder._embed_texts([texts[i] for i in todo], tracker, None)
            if got.shape == (len(todo), dim):
                rows[todo] = unit_rows(got)
            else:
                fails = {j: ParallelRagError(f"embedder returned shape {got.shape}")
                         for j in range(len(todo))}
        except ParallelRagError as exc:
            fails = dict.fromkeys(range(len(todo)), exc)
        failures = {todo[j]: e for j, e in fails.items()}
        fresh[todo] = True
        reused += tracker.cache_hits - hits_before
    return rows, failures, fresh, reused


class _Budget:
    """A counter of units in flight on one event loop; ``acquire`` waits while adding ``n``
    would pass ``limit`` (one oversized request still goes when nothing else is held)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def acquire(self, n: int) -> None:
        while self.used > 0 and self.used + n > self.limit:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            await fut
        self.used += n
        self.peak = max(self.peak, self.used)

    def release(self, n: int) -> None:
        self.used -= n
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)


class _Stopped(Exception):
    """The ingest was cancelled while the loader thread waited on a full queue."""


class Index:
    """A RAG index over a vector store. Thread-safe; sync methods work from any thread or event
    loop, and every public method has an ``a``-prefixed async twin."""

    def __init__(self, path: Path | None, store: VectorStore, embedder: EmbeddingClient,
                 splitter: Any, *, root: Path | None = None, reuse_vectors: bool = True,
                 prompt: str | None = None, system: str | None = None,
                 location: str | None = None, chunk_context: bool = False) -> None:
        self.path = path
        self.store = store
        self.embedder = embedder
        self.splitter = splitter
        #: the directory that file keys are relative to (None: absolute keys)
        self.root = root
        self.prompt = prompt
        self.system = system
        self.location = location or (str(path) if path is not None else repr(store))
        self._reuse = reuse_vectors
        #: embed and keyword-index each chunk with its document title and heading path
        self.chunk_context = chunk_context
        #: how search and answer order hits: ``"document"`` (documents first, see
        #: :mod:`parallelrag.pipeline.grouping`) or ``"chunk"`` (the store's chunk order)
        self.rank_by = "document"
        sig = _splitter_signature(splitter) + (";context" if chunk_context else "")
        self._sig = hashlib.sha256(sig.encode()).hexdigest()[:16]
        self._ingest_lock = threading.Lock()
        # store writes run on one thread of their own: SQLite's and FTS5's allocations then
        # stay in one malloc arena instead of spreading over the runtime's worker pool (which
        # made RSS creep with corpus size)
        self._write_pool: WorkerPool | None = None

    # ------------------------------------------------------------------ open
    @classmethod
    def open(
        cls,
        path_or_url: str | os.PathLike[str] = DEFAULT_INDEX_DIR,
        embedder: EmbeddingClient | str | None = None,
        splitter: Any = None,
        *,
        store: VectorStore | None = None,
        create: bool = True,
        rebuild: bool = False,
        cache: bool = True,
        root: str | os.PathLike[str] | None = None,
        prompt: str | None = None,
        system: str | None = None,
        chunk_context: bool | None = None,
    ) -> Index:
        """Create or open the index at ``path_or_url``.

        ``path_or_url``: a directory (the embedded SQLite store), or a ``postgresql://`` /
        ``postgres://`` URL (:class:`~parallelrag.store.postgres.PostgresStore`). ``store``: any
        :class:`~parallelrag.store.VectorStore` instead (``path_or_url`` is then only a label).

        ``embedder`` (a client or a one-string spec such as ``minilm`` or ``openai:MODEL``) and
        ``splitter`` default to the ones the index was built with (saved in the store), and for
        a new index to the local ``minilm`` model and :func:`default_splitter`. Passing ones that
        differ from the saved settings raises :class:`ConfigError` naming the difference, unless
        ``rebuild`` (the new settings are saved; the next ingest re-splits and re-embeds only
        what changed). Options that do not change vectors (batch size, rate limits, base URL)
        never need a rebuild: the new values are saved.

        ``create=False`` opens an existing index only: a missing one raises ConfigError naming
        the path (before any model is loaded). ``cache=False``: do not reuse stored vectors for
        unchanged chunk texts. ``root``: the directory file keys are relative to (default: the
        index directory's parent; absolute keys for URL and custom stores). ``prompt`` /
        ``system``: default answer prompt template and system prompt (see :meth:`answer`).
        ``chunk_context``: embed and keyword-index each chunk with its document's title and
        heading path (default: the saved setting, else off: on the project's retrieval
        evaluation it lowered MiniLM's recall; see docs/retrieval-eval.md); a change needs
        ``rebuild``, like a splitter setting.
        """
        if store is not None:
            return cls._open_with_store(store, path_or_url, embedder, splitter, rebuild=rebuild,
                                        cache=cache, root=root, prompt=prompt, system=system,
                                        chunk_context=chunk_context)
        if isinstance(path_or_url, str) and path_or_url.startswith(("postgresql://",
                                                                    "postgres://")):
            return cls._open_url(path_or_url, embedder, splitter, create=create, rebuild=rebuild,
                                 cache=cache, root=root, prompt=prompt, system=system,
                                 chunk_context=chunk_context)
        p = Path(path_or_url)
        exists = (p / "store.sqlite").exists() or (p / "index.json").exists()
        if not exists and not create:
            raise ConfigError(f"no index at {p.absolute()} (run `parallelrag ingest` first, or "
                              "check the path)")
        saved = EmbeddedStore.read_config(p) if exists else None
        if saved is None and (p / "index.json").exists():  # an index made before configs
            saved = orjson.loads((p / "index.json").read_bytes())
        client = cls._embedder(embedder, saved, rebuild)
        if saved and saved.get("dimension") and not rebuild:
            client.assume_dimension(int(saved["dimension"]))  # no probe request to open it
        model_id = f"{client.provider}:{client.model}"
        try:
            st = EmbeddedStore.open(p, dimension=client.dimension, model_id=model_id,
                                    create=create)
        except (StoreError, OSError, sqlite3.Error):
            if not (exists and on_read_only_media(p)):
                raise
            # read-only media (a read-only volume, a mounted backup, an index shipped in an
            # image): it can be searched; a write raises StoreError saying it is read-only
            st = EmbeddedStore.open(p, dimension=client.dimension, model_id=model_id,
                                    create=False, read_only=True)
        base = Path(root) if root is not None else p.absolute().parent
        return cls._finish_open(p, st, client, splitter, saved, rebuild=rebuild, cache=cache,
                                root=base, prompt=prompt, system=system,
                                chunk_context=chunk_context)

    @classmethod
    def _open_url(cls, url: str, embedder: EmbeddingClient | str | None, splitter: Any, *,
                  create: bool, rebuild: bool, cache: bool,
                  root: str | os.PathLike[str] | None, prompt: str | None,
                  system: str | None, chunk_context: bool | None) -> Index:
        from ..store import postgres

        pg = postgres.PostgresStore
        saved: dict[str, Any] | None = None
        reader = getattr(pg, "read_config", None)
        if embedder is None:
            if reader is None:
                raise ConfigError("pass embedder= to open a PostgreSQL index")
            saved = reader(url)
            if saved is None and not create:
                raise ConfigError(f"no index at {postgres.safe_url(url).split('@')[-1]}")
        client = cls._embedder(embedder, saved, rebuild)
        if saved and saved.get("dimension") and not rebuild:
            client.assume_dimension(int(saved["dimension"]))  # no probe request to open it
        st = pg.open(url, dimension=client.dimension,
                     model_id=f"{client.provider}:{client.model}", create=create)
        try:
            if saved is None:
                saved = st.load_config()
                cls._embedder(client, saved, rebuild)  # the same check against the store's config
        except BaseException:
            st.close()
            raise
        return cls._finish_open(None, st, client, splitter, saved, rebuild=rebuild, cache=cache,
                                root=root, prompt=prompt, system=system,
                                chunk_context=chunk_context, location=postgres.safe_url(url).split("@")[-1])

    @classmethod
    def _open_with_store(cls, store: VectorStore, label: str | os.PathLike[str],
                         embedder: EmbeddingClient | str | None, splitter: Any, *,
                         rebuild: bool, cache: bool, root: str | os.PathLike[str] | None,
                         prompt: str | None, system: str | None,
                         chunk_context: bool | None) -> Index:
        if not isinstance(store, VectorStore):
            raise ConfigError(f"store= must implement VectorStore, got {type(store).__name__}")
        saved = store.load_config()
        client = cls._embedder(embedder, saved, rebuild)
        model_id = f"{client.provider}:{client.model}"
        if store.model_id != model_id or store.dimension != client.dimension:
            raise ConfigError(
                f"the store holds vectors of {store.model_id!r} (dimension {store.dimension}), "
                f"the embedder makes {model_id!r} (dimension {client.dimension})"
            )
        return cls._finish_open(None, store, client, splitter, saved, rebuild=rebuild,
                                cache=cache, root=root, prompt=prompt, system=system,
                                chunk_context=chunk_context,
                                location=str(label) if label != DEFAULT_INDEX_DIR else None,
                                own_store=False)

    @classmethod
    def _finish_open(cls, path: Path | None, store: VectorStore, client: EmbeddingClient,
                     splitter: Any, saved: Mapping[str, Any] | None, *, rebuild: bool,
                     cache: bool, root: str | os.PathLike[str] | None, prompt: str | None,
                     system: str | None, chunk_context: bool | None,
                     location: str | None = None, own_store: bool = True) -> Index:
        """The part every way of opening shares: the splitter and chunk-context settings checked
        against the saved ones, the Index made, its config saved (the store is closed on an
        error when it was opened here)."""
        try:
            chosen = cls._splitter(splitter, saved, client, rebuild)
            index = cls(path, store, client, chosen,
                        root=Path(os.path.realpath(root)) if root is not None else None,
                        reuse_vectors=cache, prompt=prompt, system=system, location=location,
                        chunk_context=cls._context(chunk_context, saved, rebuild))
            index._save_config(saved)
        except BaseException:
            if own_store:
                store.close()
            raise
        return index

    @staticmethod
    def _context(given: bool | None, saved: Mapping[str, Any] | None, rebuild: bool) -> bool:
        """The chunk-context setting: as given (a change from the saved one needs a rebuild),
        else the saved one, else off."""
        # an index saved before this setting existed has no say (None)
        was = bool(saved["chunk_context"]) if saved and "chunk_context" in saved else None
        if given is None:
            return bool(was)
        if was is not None and bool(given) != was and not rebuild:
            raise ConfigError(
                f"the index was built with chunk_context={was}: open it without chunk_context= "
                "to use the saved setting, or pass rebuild=True (CLI: --rechunk) to re-embed"
            )
        return bool(given)

    @staticmethod
    def _embedder(embedder: EmbeddingClient | str | None, saved: Mapping[str, Any] | None,
                  rebuild: bool) -> EmbeddingClient:
        saved_spec = saved.get("embedder") if saved else None
        if embedder is None:
            return EmbeddingClient.from_url(saved_spec or "minilm")
        client = EmbeddingClient.from_url(embedder) if isinstance(embedder, str) else embedder
        if saved_spec:
            old = _embedder_identity(str(saved_spec))
            new = _embedder_identity(client.spec)
            diff = _differences(old, new)
            # a rebuild re-splits, but keeps the model (the store refuses another one) and the
            # vectors of unchanged chunk texts: another document prompt, which changes every
            # vector without changing the model, needs a new index as another model does
            if diff and (not rebuild
                         or old.get("document_prompt") != new.get("document_prompt")):
                raise ConfigError(
                    f"the index was built with the embedder {saved_spec!r}, not {client.spec!r} "
                    f"({'; '.join(diff)}): open it without embedder= (CLI: leave out --embed) "
                    "to use the saved one, or use a new index"
                )
        return client

    @staticmethod
    def _splitter(splitter: Any, saved: Mapping[str, Any] | None, embedder: EmbeddingClient,
                  rebuild: bool) -> Any:
        saved_cfg = saved.get("splitter") if saved else None
        if splitter is None:
            return splitter_from_config(saved_cfg) if saved_cfg else default_splitter(embedder)
        if saved_cfg and not rebuild:
            diff = _differences(saved_cfg, splitter_config(splitter))
            if diff:
                raise ConfigError(
                    f"the index was built with other splitter settings ({'; '.join(diff)}): "
                    "open it without splitter= to use the saved ones, or pass rebuild=True "
                    "(CLI: --rechunk) to re-split and re-embed what changes"
                )
        return splitter

    def config(self) -> dict[str, Any]:
        """How the index is built: embedder spec, model, dimension and splitter settings."""
        return {
            "version": _CONFIG_VERSION,
            "embedder": self.embedder.spec,
            "model_id": f"{self.embedder.provider}:{self.embedder.model}",
            "dimension": self.embedder.dimension,
            "splitter": splitter_config(self.splitter),
            "chunk_context": self.chunk_context,
        }

    def _save_config(self, saved: Mapping[str, Any] | None) -> None:
        cfg = self.config()
        if saved is None or any(saved.get(k) != v for k, v in cfg.items()):
            self.store.save_config(cfg)
            if self.path is not None:
                # a readable copy beside the store (the store's copy is the one that counts)
                tmp = self.path / "index.json.tmp"
                tmp.write_bytes(orjson.dumps(cfg, option=orjson.OPT_INDENT_2))
                os.replace(tmp, self.path / "index.json")

    def close(self) -> None:
        pool, self._write_pool = self._write_pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.store.close()

    def _writer(self) -> WorkerPool:
        # the runtime's pool, not a ThreadPoolExecutor: it keeps taking work after the main
        # thread returned (a non-daemon thread or an atexit handler still ingesting)
        if self._write_pool is None:
            self._write_pool = WorkerPool(1, "parallelrag-index-writer", idle_s=None)
        return self._write_pool

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({self.location!r}, embedder={self.embedder!r})"

    # ------------------------------------------------------------------ identity
    def file_key(self, path: str | os.PathLike[str]) -> str:
        """The key a file is stored under: its real path, relative to :attr:`root` if under it."""
        return file_identity(path, self.root)

    def _file_path(self, key: str) -> Path:
        p = Path(key)
        return p if p.is_absolute() or self.root is None else self.root / p

    def _key_path(self, key: str) -> Path:
        """A file key as an absolute path spelled as keys are (the root spelled the same)."""
        p = Path(key)
        if p.is_absolute():
            return p
        base = os.path.realpath(self.root) if self.root is not None else os.getcwd()
        return Path(display_path(base)) / p

    @staticmethod
    def document_key(doc: Document) -> str:
        """The key a caller's document is stored under (see the module docstring)."""
        if doc.id not in (None, ""):
            return str(doc.id)
        mid = doc.metadata.get("id")
        if mid not in (None, ""):
            return str(mid)
        if doc.source:
            return doc.source
        return "doc:" + content_hash(doc.text)[:32]

    @staticmethod
    def _is_file_doc(metadata: Mapping[str, Any]) -> bool:
        return isinstance(metadata.get("file"), str) or (
            "mtime" in metadata and "bytes" in metadata)

    def _owner(self, source: str, metadata: Mapping[str, Any]) -> str:
        """The file key a stored document belongs to, or its own key (caller's document)."""
        f = metadata.get("file")
        if isinstance(f, str) and f:
            return f
        if self._is_file_doc(metadata):
            # a file's document in an index made before file keys: the path as given then
            return self.file_key(source.split("#", 1)[0])
        return source

    # ------------------------------------------------------------------ ingest
    def ingest(
        self,
        sources: Source | Iterable[Source],
        *,
        progress: ProgressFn | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        prune: bool = False,
        text_field: str | None = None,
        max_bytes: int | None = 50_000_000,
        rebuild: bool = False,
        engine: str = "local",
        ray_address: str | None = None,
        ray_options: Any = None,
    ) -> IngestReport:
        """Load, split, embed and store ``sources``. Incremental and crash-safe.

        ``sources``: a file or directory path, a :class:`Document`, a ``(text, metadata)`` pair,
        or an iterable / generator of any mix of them (read lazily). Unchanged files and
        documents are skipped; a changed one is replaced whole. An indexed file that is now
        empty (no text) loses its documents (counted in ``removed``); one that cannot be read
        or loaded any more keeps them. ``prune`` removes documents
        of files under the given directories that are gone. ``rebuild`` re-splits every given
        source even when unchanged (vectors of unchanged chunk texts are reused).
        ``include``/``exclude``/``text_field``/``max_bytes`` apply to files.

        ``engine="ray"`` runs the pipeline on a Ray cluster (files and directories only; see
        :mod:`parallelrag.distributed`): ``ray_address`` names the cluster (default:
        ``RAY_ADDRESS``, else a local Ray), ``ray_options`` is a
        :class:`~parallelrag.distributed.RayOptions`. The result is the same as the local
        engine's.
        """
        if engine != "local":
            return self._ingest_ray(engine, sources, progress, include, exclude, prune,
                                    text_field, max_bytes, rebuild, ray_address, ray_options)
        return run_sync(
            self._ingest(sources, progress, include, exclude, prune, text_field, max_bytes,
                         rebuild),
            alternative="await index.aingest(...)",
        )

    def _ingest_ray(self, engine: str, sources: Source | Iterable[Source],
                    progress: ProgressFn | None, include: Sequence[str] | None,
                    exclude: Sequence[str] | None, prune: bool, text_field: str | None,
                    max_bytes: int | None, rebuild: bool, ray_address: str | None,
                    ray_options: Any) -> IngestReport:
        if engine != "ray":
            raise ConfigError(f"engine must be 'local' or 'ray', not {engine!r}")
        from ..distributed import RayOptions, ray_ingest

        items: list[Any] = ([sources] if isinstance(sources, str | os.PathLike | Document | tuple)
                            else list(sources))
        paths: list[Path] = []
        for item in items:
            if not isinstance(item, str | os.PathLike):
                raise ConfigError("engine='ray' ingests files and directories; ingest "
                                  "Documents and (text, metadata) pairs with engine='local'")
            paths.append(Path(item))
        opts = ray_options if ray_options is not None else RayOptions()
        if ray_address is not None:
            opts.address = ray_address
        return ray_ingest(self, paths, options=opts, progress=progress, include=include,
                          exclude=exclude, prune=prune, text_field=text_field,
                          max_bytes=max_bytes, rebuild=rebuild)

    async def aingest(
        self,
        sources: Source | Iterable[Source],
        *,
        progress: ProgressFn | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        prune: bool = False,
        text_field: str | None = None,
        max_bytes: int | None = 50_000_000,
        rebuild: bool = False,
        engine: str = "local",
        ray_address: str | None = None,
        ray_options: Any = None,
    ) -> IngestReport:
        """Async twin of :meth:`ingest`."""
        if engine != "local":
            return await to_thread(self._ingest_ray, engine, sources, progress, include,
                                   exclude, prune, text_field, max_bytes, rebuild,
                                   ray_address, ray_options)
        return await run_async(self._ingest(sources, progress, include, exclude, prune,
                                            text_field, max_bytes, rebuild))

    @staticmethod
    def _items(sources: Source | Iterable[Source]) -> Iterator[Path | Document]:
        """Flatten ``sources`` lazily into paths and documents."""

        def one(item: Any) -> Path | Document | None:
            if isinstance(item, Document):
                return item
            if isinstance(item, str | os.PathLike):
                return Path(item)
            if (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(item[1], Mapping)):
                return Document(item[0], metadata=dict(item[1]))
            return None

        single = one(sources)
        if single is not None:
            yield single
            return
        if isinstance(sources, bytes) or not isinstance(sources, Iterable):
            raise TypeError(f"cannot ingest {type(sources).__name__}: pass paths, Documents, "
                            "(text, metadata) pairs or an iterable of them")
        for item in sources:
            got = one(item)
            if got is None:
                raise TypeError(
                    f"cannot ingest {type(item).__name__}: items are paths, Documents or "
                    "(text, metadata) pairs"
                )
            yield got

    def _doc_hash(self, text: str, metadata: Mapping[str, Any]) -> str:
        meta = orjson.dumps(dict(metadata), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
                            default=str)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass") + b"\0" + meta).hexdigest()

    async def _ingest(
        self,
        sources: Source | Iterable[Source],
        progress: ProgressFn | None,
        include: Sequence[str] | None,
        exclude: Sequence[str] | None,
        prune: bool,
        text_field: str | None,
        max_bytes: int | None,
        rebuild: bool,
    ) -> IngestReport:
        rt = get_runtime()
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        report = IngestReport()
        stages = {"load": 0.0, "split": 0.0, "embed": 0.0, "write": 0.0}
        tracker = _Tracker()
        records = await rt.to_thread(self.store.documents)
        existing: dict[str, str] = {d.source: d.content_hash for d in records}
        by_owner: dict[str, list[str]] = {}
        for d in records:
            by_owner.setdefault(self._owner(d.source, d.metadata), []).append(d.source)
        file_owners = {self._owner(d.source, d.metadata) for d in records
                       if self._is_file_doc(d.metadata)}
        seen: dict[str, str] = {}  # key (file or document) -> as given, this run
        roots: list[Path] = []
        emptied: list[str] = []  # indexed files that hold no text now (their documents go)
        counters = {"files": 0, "done": 0, "chunks": 0, "embedded": 0}
        scan_done = threading.Event()

        # progress callbacks run in order on a worker thread, never on the runtime loop: one
        # that makes a sync parallelrag call would otherwise block the loop that serves it
        callbacks = CallbackRunner()

        # the loader thread emits too (files read): the snapshot and its place in the queue are
        # taken together, so the callback never sees a counter go backwards
        emit_lock = threading.Lock()
        last_read_emit = [0.0]

        def emit() -> None:
            if progress is not None:
                with emit_lock:
                    callbacks.call(progress, IngestProgress(
                        files_seen=counters["files"], documents_done=counters["done"],
                        chunks=counters["chunks"], embedded=counters["embedded"],
                        elapsed_s=time.perf_counter() - t0, scan_done=scan_done.is_set(),
                        files_total=counters["files"] if scan_done.is_set() else None,
                    ))

        def emit_read() -> None:
            """From the loader thread: a file was read (at most every 0.1 s, and the first)."""
            now = time.perf_counter()
            if counters["files"] == 1 or now - last_read_emit[0] >= 0.1:
                last_read_emit[0] = now
                emit()

        # item: (owner key, hash, documents (source = store key), stale store keys to delete)
        q_docs: asyncio.Queue[tuple[str, str, list[Document], list[str]] | None] = asyncio.Queue(64)
        q_chunks: asyncio.Queue[list[tuple[str, str, list[Chunk], dict[str, Any], list[str]]]
                                | None] = asyncio.Queue(4)
        q_write: asyncio.Queue[list[tuple[str, str, list[Chunk], np.ndarray, dict[str, Any],
                                          list[str], int]] | None] = asyncio.Queue(4)

        stop = threading.Event()
        budget = _Budget(_INFLIGHT_CHARS)
        held: dict[str, int] = {}  # document key -> its characters held in the budget

        def put(item: tuple[str, str, list[Document], list[str]] | None) -> None:
            fut = asyncio.run_coroutine_threadsafe(q_docs.put(item), loop)
            while True:
                try:
                    fut.result(timeout=0.5)
                    return
                except concurrent.futures.TimeoutError:
                    if stop.is_set():
                        fut.cancel()
                        raise _Stopped() from None
                except concurrent.futures.CancelledError:
                    # the put was cancelled with the ingest (a failed write, the runtime
                    # shutting down): stop quietly, rather than end the loader thread with a
                    # CancelledError that asyncio reports as never retrieved at exit
                    raise _Stopped() from None

        def unchanged(owner: str, keys: list[str], h: str) -> bool:
            old = by_owner.get(owner, [])
            return (not rebuild and bool(old) and sorted(old) == sorted(keys)
                    and all(existing.get(k) == h for k in old))

        def feed_document(doc: Document) -> None:
            doc, fixed = _valid_document(doc)
            report.decode_replacements += fixed
            key = self.document_key(doc)
            if key in seen:
                report.skipped.append((key, "duplicate id in this ingest"))
                return
            seen[key] = key
            meta = _scalar_metadata(doc.metadata)
            meta["id"] = key
            h = f"{self._doc_hash(doc.text, meta)}:{self._sig}"
            if not doc.text.strip():
                report.skipped.append((key, "empty"))
                return
            if unchanged(key, [key], h):
                report.unchanged += 1
                report.documents += 1
                return
            stale = [s for s in by_owner.get(key, []) if s != key]
            put((key, h, [Document(doc.text, source=key, metadata=meta, id=key,
                                   outline=list(doc.outline))], stale))

        def feed_path(root: Path) -> None:
            roots.append(Path(os.path.realpath(root)))
            own = own_folder_excludes(self.path, root)  # the index's files are not documents
            results = load_path([root], include=include,
                                exclude=[*(exclude or ()), *own] if own else exclude,
                                max_bytes=max_bytes, text_field=text_field)
            while True:
                t = time.perf_counter()  # load = walking, reading, decoding, converting
                res = next(results, None)
                stages["load"] += time.perf_counter() - t
                if res is None:
                    return
                given = display_path(res.path)
                key = self.file_key(res.path)
                if key in seen:
                    if seen[key] != given:
                        report.skipped.append((given, f"duplicate of {seen[key]}"))
                    continue
                if res.skip is not None:
                    (report.failed if res.skip.failed else report.skipped).append(
                        (res.skip.path, res.skip.reason))
                    if key in by_owner:  # a file we had is now unreadable: keep it unless pruned
                        seen[key] = given
                        if res.skip.reason == "empty":  # readable, and holds no text now:
                            emptied.append(key)  # its old text must not stay searchable
                    continue
                seen[key] = given
                counters["files"] += 1
                emit_read()
                if res.replacements:
                    report.decode_replaced_files += 1
                    report.decode_replacements += res.replacements
                h = f"{res.content_hash}:{self._sig}"
                docs = file_documents(key, res.documents, res.path)
                keys = [d.source for d in docs]
                if unchanged(key, keys, h):
                    report.unchanged += len(keys)
                    report.documents += len(keys)
                    continue
                fresh = set(keys)
                stale = [s for s in by_owner.get(key, []) if s not in fresh]
                put((key, h, docs, stale))

        def produce() -> None:
            """Runs in a worker thread: walk, load, hash, skip unchanged; feed q_docs."""
            try:
                items = self._items(sources)
                while True:
                    t = time.perf_counter()
                    item = next(items, None)  # a caller's generator may do real work here
                    stages["load"] += time.perf_counter() - t
                    if item is None:
                        break
                    if isinstance(item, Document):
                        feed_document(item)
                    else:
                        feed_path(item)
                put(None)
            except _Stopped:
                pass
            finally:
                scan_done.set()
                emit()  # every file read, and the total now known

        # a split batch is at most a quarter of the in-flight budget, so several overlap
        batch_chars = min(_SPLIT_BATCH_CHARS, max(1, _INFLIGHT_CHARS // 4))
        min_chars = min(_SPLIT_MIN_CHARS, batch_chars)

        async def split_stage() -> None:
            batch: list[tuple[str, str, list[Document], list[str]]] = []
            chars = 0
            done = False
            item: tuple[str, str, list[Document], list[str]] | None
            while not done:
                if batch and chars < min_chars:
                    # a small batch waits a moment for more documents: a round trip per
                    # tiny batch would keep the provider's initial budget idle
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
                    # cancellation that comes as the get() completes, and this task then
                    # blocked forever on a queue whose readers were gone (a failed write
                    # hung the ingest instead of raising)
                    try:
                        async with asyncio.timeout(_SPLIT_MIN_WAIT_S):
                            item = await q_docs.get()
                    except TimeoutError:
                        item = _FLUSH
                else:
                    item = await q_docs.get()
                if item is None:
                    done = True
                elif item is not _FLUSH:
                    batch.append(item)
                    chars += sum(len(d.text) for d in item[2])
                    # split when the batch is full, or when nothing more is ready (don't stall
                    # the embedder waiting for a full batch)
                    full = len(batch) >= _SPLIT_BATCH_DOCS or chars >= batch_chars
                    if not full and (not q_docs.empty() or chars < min_chars):
                        continue
                if not batch:
                    continue
                docs = [(owner, h, d, stale if k == 0 else [])
                        for owner, h, ds, stale in batch for k, d in enumerate(ds)]
                for _, _, d, _ in docs:
                    held[d.source] = held.get(d.source, 0) + len(d.text)
                await budget.acquire(chars)
                t = time.perf_counter()
                try:
                    chunked: list[list[Chunk]] | None = await rt.to_thread(
                        split_documents, self.splitter, [d for _, _, d, _ in docs],
                        self.chunk_context)
                except Exception as exc:
                    for owner, _, _, _ in batch:
                        report.failed.append((owner, f"split failed: {exc}"))
                    for _, _, d, _ in docs:
                        budget.release(held.pop(d.source, 0))
                    chunked = None
                stages["split"] += time.perf_counter() - t
                if chunked is not None:
                    out = []
                    for (_, h, d, stale), chunks in zip(docs, chunked, strict=True):
                        out.append((d.source, h, chunks, _scalar_metadata(d.metadata), stale))
                    await q_chunks.put(out)
                batch, chars = [], 0
            for _ in range(_EMBED_WORKERS):
                await q_chunks.put(None)

        async def embed_worker() -> None:
            dim = self.store.dimension
            while True:
                item = await q_chunks.get()
                if item is None:
                    await q_write.put(None)
                    return
                # each group's documents go to the writer as soon as its request answers, so
                # documents finish (and progress moves) while a slow provider works the batch
                groups = _request_groups(item, getattr(getattr(self.embedder, "_backend", None),
                                                       "max_batch_inputs", None))
                t = time.perf_counter()
                if len(groups) == 1:
                    await embed_group(groups[0], dim)
                else:
                    async with asyncio.TaskGroup() as tg:
                        for group in groups:
                            tg.create_task(embed_group(group, dim))
                stages["embed"] += time.perf_counter() - t

        async def embed_group(
            item: list[tuple[str, str, list[Chunk], dict[str, Any], list[str]]], dim: int,
        ) -> None:
            texts = [embed_text(c) for _, _, chunks, _, _ in item for c in chunks]
            rows, failures, fresh, reused = await embed_texts(
                self.embedder, self.store if self._reuse else None, texts, dim, tracker)
            report.cache_hits += reused
            out = []
            pos = 0
            for source, h, chunks, meta, stale in item:
                n = len(chunks)
                bad = [failures[i] for i in range(pos, pos + n) if i in failures]
                if bad:
                    report.failed.append((source, f"embedding failed: {bad[0]}"))
                    budget.release(held.pop(source, 0))
                else:
                    out.append((source, h, chunks, rows[pos:pos + n], meta, stale,
                                int(fresh[pos:pos + n].sum())))
                pos += n
            counters["embedded"] += int(fresh.sum())
            emit()
            if out:
                await q_write.put(out)

        async def writer() -> None:
            finished = 0
            pending: list[tuple[str, str, list[Chunk], np.ndarray, dict[str, Any], list[str],
                                int]] = []

            async def flush() -> None:
                if not pending:
                    return
                items = [(s, h, c, v, m) for s, h, c, v, m, _, _ in pending]
                stale = [s for _, _, _, _, _, st, _ in pending for s in st]
                t = time.perf_counter()
                await loop.run_in_executor(self._writer(), self._write, items, stale)
                stages["write"] += time.perf_counter() - t
                for s, _, c, _, _, _, new in pending:
                    if s in existing:
                        report.updated += 1
                    else:
                        report.added += 1
                    report.chunks += len(c)
                    report.embedded += new
                    counters["chunks"] += len(c)
                    counters["done"] += 1
                    budget.release(held.pop(s, 0))
                report.removed += len([s for s in stale if s in existing])
                report.documents += len(pending)
                pending.clear()
                emit()

            while finished < _EMBED_WORKERS:
                item = await q_write.get()
                if item is None:
                    finished += 1
                    continue
                pending.extend(item)
                if len(pending) >= _WRITE_BATCH or q_write.empty():
                    await flush()
            await flush()

        producer = loop.run_in_executor(rt.executor, produce)
        # a failed run raises without waiting for the loader thread, which may still end with an
        # error (its queue put cancelled at shutdown): read it here so asyncio does not print
        # "Future exception was never retrieved" under the command's one error line
        producer.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(split_stage())
                for _ in range(_EMBED_WORKERS):
                    tg.create_task(embed_worker())
                tg.create_task(writer())
                await asyncio.shield(producer)
        except BaseExceptionGroup as group:
            stop.set()
            raise _first_error(group) from None
        except BaseException:
            stop.set()
            raise
        await producer
        for s in [s for owner in emptied for s in by_owner.get(owner, [])]:
            if await rt.to_thread(self.store.remove_document, s):
                report.removed += 1
        if prune and roots:
            gone = [s for owner, keys in by_owner.items()
                    if owner in file_owners and owner not in seen
                    and self._under(self._key_path(owner), roots) for s in keys]
            for s in gone:
                if await rt.to_thread(self.store.remove_document, s):
                    report.removed += 1
        report.texts_sent = tracker.texts_sent
        report.requests = tracker.requests
        report.retries = max(0, tracker.requests - tracker.packs)
        report.rate_limited = tracker.rate_limited
        report.tokens = tracker.tokens
        report.wall_s = time.perf_counter() - t0
        report.stages = {k: round(v, 4) for k, v in stages.items()}
        emit()
        await callbacks.aflush()
        return report

    def under_roots(self, source: str, roots: Sequence[str | os.PathLike[str]]) -> bool:
        """Whether the file of the stored document ``source`` (a file key, ``KEY#N`` for
        records) lies under one of ``roots`` (paths as given): what ``prune`` may remove."""
        path = self._key_path(source.split("#", 1)[0])
        return self._under(path, [Path(os.path.realpath(r)) for r in roots])

    @staticmethod
    def _under(path: Path, roots: list[Path]) -> bool:
        # compared as keys spell them (undecodable bytes of a name as \xNN): ``path`` is
        # spelled so already (a key's path), ``roots`` are paths as the OS gives them
        return any(path == r or r in path.parents for r in (Path(display_path(r)) for r in roots))

    def _write(self, items: list[tuple[str, str, list[Chunk], np.ndarray, dict[str, Any]]],
               stale: list[str]) -> None:
        try:
            self.store.replace_documents(items)
            for s in stale:
                self.store.remove_document(s)
        except ParallelRagError:
            raise
        except Exception as exc:  # a store's own driver error (sqlite3, OSError, ...)
            raise StoreError(f"writing {len(items)} documents to {self.location} failed: "
                             f"{type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------------ search
    async def _embed_query(self, query: str) -> np.ndarray:
        # a query over the model's limit is cut until it fits: its first 600 characters, then
        # halves of them (600 characters of a dense script are ~600 word pieces); the limit
        # is checked on the local token count, before any request
        cut = query
        while True:
            try:
                return unit_rows(await self.embedder.aembed_query(cut))
            except BadRequestError as exc:
                if "over the model's limit" not in str(exc) or len(cut) <= 1:
                    raise
                cut = cut[:600] if len(cut) > 600 else cut[:len(cut) // 2]

    async def _search(self, query: str, k: int, mode: str,
                      where: dict[str, Any] | None, reranker: Any = None,
                      rerank_depth: int | None = None, rank_by: str | None = None) -> list[Hit]:
        if mode not in ("vector", "keyword", "hybrid"):
            raise ConfigError(f"mode must be vector, keyword or hybrid, not {mode!r}")
        rank_by = self.rank_by if rank_by is None else rank_by
        if rank_by not in ("document", "chunk"):
            raise ConfigError(f"rank_by must be document or chunk, not {rank_by!r}")
        if not isinstance(query, str) or not query.strip():
            raise BadRequestError("the query is empty")
        if reranker is not None:
            from .rerank import DEFAULT_RERANK_DEPTH, arerank

            depth = max(k, rerank_depth if rerank_depth is not None else DEFAULT_RERANK_DEPTH)
            hits = await self._search(query, depth, mode, where, rank_by=rank_by)
            return await arerank(reranker, query, hits, k)
        if k <= 0:
            return []
        fetch = k if rank_by == "chunk" else max(k, DEFAULT_DOCUMENT_RANKING.candidates)
        rt = get_runtime()
        if mode == "keyword":
            hits = await rt.to_thread(self.store.search_keyword, query, fetch, where=where)
            return hits[:k] if rank_by == "chunk" else rank_by_document(hits, k)
        qv = await self._embed_query(query)
        if mode == "vector":
            hits = await rt.to_thread(self.store.search_vector, qv, fetch, where=where)
        else:
            hits = await rt.to_thread(self.store.search_hybrid, query, qv, fetch, where=where)
        if rank_by == "chunk":
            return hits[:k]
        doc_scores = None
        scorer = getattr(self.store, "document_scores", None)
        if scorer is not None and len({h.source for h in hits}) > 1:
            doc_scores = await rt.to_thread(scorer, qv, [h.source for h in hits])
        return rank_by_document(hits, k, document_scores=doc_scores)

    def search(self, query: str, k: int = 5, mode: str = "hybrid",
               where: dict[str, Any] | None = None, *, reranker: Any = None,
               rerank_depth: int | None = None, rank_by: str | None = None) -> list[Hit]:
        """Top-k chunks for ``query``: ``vector``, ``keyword`` (BM25) or ``hybrid`` (both, fused).

        ``where`` filters on metadata (``{"lang": "en"}``; ``source`` is a glob on the key).
        ``rank_by="document"`` (the default, from :attr:`rank_by`) orders the hits by document
        first (:mod:`parallelrag.pipeline.grouping`): a document's best chunk ranks with the
        support of its other matching chunks, and further chunks of one document are pushed
        down, so the top k spans more documents; ``"chunk"`` keeps the store's chunk order.
        ``reranker`` (:mod:`parallelrag.pipeline.rerank`; off by default): the top
        ``rerank_depth`` hits (default 20) are reranked and the best ``k`` returned."""
        return run_sync(self._search(query, k, mode, where, reranker, rerank_depth, rank_by),
                        alternative="await index.asearch(...)")

    async def asearch(self, query: str, k: int = 5, mode: str = "hybrid",
                      where: dict[str, Any] | None = None, *, reranker: Any = None,
                      rerank_depth: int | None = None, rank_by: str | None = None) -> list[Hit]:
        """Async twin of :meth:`search`."""
        return await run_async(self._search(query, k, mode, where, reranker, rerank_depth,
                                            rank_by))

    # ------------------------------------------------------------------ answers
    def _messages(self, question: str, hits: list[Hit], prompt: str | None,
                  system: str | None) -> list[dict[str, str]]:
        """Messages for the LLM. Without a prompt template the numbered sources follow the
        system prompt and the question is the user message; with one, the template (its
        ``{question}`` and ``{sources}`` filled in) is the user message."""
        blocks = []
        for i, h in enumerate(hits, 1):
            blocks.append(f"[{i}] (source: {h.source})\n{h.text.strip()}")
        sources = "\n\n".join(blocks) if blocks else "(no sources matched)"
        instructions = system if system is not None else (self.system or DEFAULT_SYSTEM)
        template = prompt if prompt is not None else self.prompt
        if template is None:
            return [{"role": "system", "content": f"{instructions}\n\nSources:\n{sources}"},
                    {"role": "user", "content": question}]
        return [{"role": "system", "content": instructions},
                {"role": "user", "content": _fill(template, question=question, sources=sources)}]

    @staticmethod
    def _citations(text: str, hits: list[Hit], extractive: bool) -> list[Citation]:
        numbers: list[int] = []
        if extractive:
            numbers = list(range(1, len(hits) + 1))
        else:
            for m in re.finditer(r"\[(\d+(?:\s*,\s*\d+)*)\]", text):
                for part in m.group(1).split(","):
                    n = int(part)
                    if 1 <= n <= len(hits) and n not in numbers:
                        numbers.append(n)
        return [
            Citation(number=n, source=hits[n - 1].source, start=hits[n - 1].start,
                     end=hits[n - 1].end, chunk_id=hits[n - 1].chunk_id, text=hits[n - 1].text)
            for n in sorted(numbers)
        ]

    @staticmethod
    def _extractive(question: str, hits: list[Hit]) -> Answer:
        if not hits:
            text = "No passages in the index match the question."
        else:
            parts = [f"[{i}] {h.text.strip()}" for i, h in enumerate(hits, 1)]
            text = "\n\n".join(parts)
        return Answer(question=question, text=text,
                      citations=Index._citations(text, hits, True), hits=hits, extractive=True)

    @staticmethod
    def _usage(usage: Any) -> dict[str, int]:
        if usage is None:
            return {}
        return {"prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens}

    async def _answer(self, question: str, llm: Any, k: int, mode: str,
                      where: dict[str, Any] | None, prompt: str | None,
                      system: str | None, reranker: Any = None, expand: str | None = None,
                      min_score: float | str | None = "auto") -> Answer:
        from . import support

        if expand is not None:
            from .expand import expanded_search

            hits = await expanded_search(self, question, llm, k=k, how=expand,
                                         mode=mode, where=where)
            if reranker is not None:
                from .rerank import arerank

                hits = await arerank(reranker, question, hits, k)
        else:
            hits = await self._search(question, k, mode, where, reranker)
        threshold = (support.min_score_for(self.embedder) if min_score == "auto"
                     else None if min_score is None else float(min_score))
        if not support.is_supported(hits, threshold):
            # no hits at all (an empty index, a filter nothing passes): there are no "closest
            # passages" to speak of, so say so as the extractive answer does
            text = support.UNSUPPORTED_TEXT if hits else self._extractive(question, []).text
            return Answer(question=question, text=text, citations=[],
                          hits=hits, extractive=llm is None, supported=False)
        if llm is None:
            return self._extractive(question, hits)
        resp = await llm.acomplete_full(self._messages(question, hits, prompt, system))
        return Answer(question=question, text=resp.text,
                      citations=self._citations(resp.text, hits, False), hits=hits,
                      usage=self._usage(resp.usage))

    def answer(self, question: str, llm: Any = None, k: int = 5, mode: str = "hybrid", *,
               where: dict[str, Any] | None = None, prompt: str | None = None,
               system: str | None = None, reranker: Any = None, expand: str | None = None,
               min_score: float | str | None = "auto") -> Answer:
        """Retrieve k chunks and answer with numbered citations (extractive without an LLM).

        ``where`` filters the retrieval as in :meth:`search`. ``system`` replaces the system
        prompt (default :data:`DEFAULT_SYSTEM`, or ``Index.open(system=...)``); ``prompt`` is a
        template for the user message with ``{question}`` and ``{sources}`` (the numbered
        passages) filled in; other braces are kept as they are. ``reranker`` as in
        :meth:`search`. ``expand`` (``"multi"`` or ``"hyde"``, needs ``llm``): query expansion
        (:mod:`parallelrag.pipeline.expand`). ``min_score``: below this best-hit similarity
        the answer is ``supported=False`` and says it found no support instead of answering
        (``"auto"``: the embedder's calibrated threshold, if it has one; None: never)."""
        return run_sync(self._answer(question, llm, k, mode, where, prompt, system, reranker,
                                     expand, min_score),
                        alternative="await index.aanswer(...)")

    async def aanswer(self, question: str, llm: Any = None, k: int = 5, mode: str = "hybrid", *,
                      where: dict[str, Any] | None = None, prompt: str | None = None,
                      system: str | None = None, reranker: Any = None,
                      expand: str | None = None,
                      min_score: float | str | None = "auto") -> Answer:
        """Async twin of :meth:`answer`."""
        return await run_async(self._answer(question, llm, k, mode, where, prompt, system,
                                            reranker, expand, min_score))

    async def _answer_many(self, questions: Sequence[str], llm: Any, k: int, mode: str,
                           where: dict[str, Any] | None, prompt: str | None,
                           system: str | None) -> list[Answer]:
        if isinstance(questions, str):
            raise TypeError("answer_many takes a sequence of questions, not one str")
        return list(await asyncio.gather(
            *(self._answer(q, llm, k, mode, where, prompt, system) for q in questions)))

    def answer_many(self, questions: Sequence[str], llm: Any = None, k: int = 5,
                    mode: str = "hybrid", *, where: dict[str, Any] | None = None,
                    prompt: str | None = None, system: str | None = None,
                    engine: str = "local", ray_address: str | None = None,
                    ray_options: Any = None) -> list[Answer]:
        """Answer many questions concurrently; results in input order.

        ``engine="ray"`` answers them on Ray actors that each open this index (an index on a
        path every node sees, or a PostgreSQL URL) for large offline question sets; ``llm``
        must then be an :class:`~parallelrag.llm.LlmClient` (rebuilt on each actor)."""
        if engine != "local":
            if engine != "ray":
                raise ConfigError(f"engine must be 'local' or 'ray', not {engine!r}")
            from ..distributed import RayOptions, ray_answer_many

            opts = ray_options if ray_options is not None else RayOptions()
            if ray_address is not None:
                opts.address = ray_address
            return ray_answer_many(self, questions, llm=llm, options=opts, k=k, mode=mode,
                                   where=where, prompt=prompt, system=system)
        return run_sync(self._answer_many(questions, llm, k, mode, where, prompt, system),
                        alternative="await index.aanswer_many(...)")

    async def aanswer_many(self, questions: Sequence[str], llm: Any = None, k: int = 5,
                           mode: str = "hybrid", *, where: dict[str, Any] | None = None,
                           prompt: str | None = None,
                           system: str | None = None, engine: str = "local",
                           ray_address: str | None = None,
                           ray_options: Any = None) -> list[Answer]:
        """Async twin of :meth:`answer_many`."""
        if engine != "local":
            return await to_thread(self.answer_many, questions, llm, k, mode, where=where,
                                   prompt=prompt, system=system, engine=engine,
                                   ray_address=ray_address, ray_options=ray_options)
        return await run_async(self._answer_many(questions, llm, k, mode, where, prompt, system))

    def stream_answer(self, question: str, llm: Any, k: int = 5, mode: str = "hybrid", *,
                      where: dict[str, Any] | None = None, prompt: str | None = None,
                      system: str | None = None) -> AnswerStream:
        """Stream the answer's text deltas; ``.answer`` holds the full Answer afterwards."""
        hits = self.search(question, k=k, mode=mode, where=where)
        return AnswerStream(self, question, hits, llm, prompt, system)

    def astream_answer(self, question: str, llm: Any, k: int = 5, mode: str = "hybrid", *,
                       where: dict[str, Any] | None = None, prompt: str | None = None,
                       system: str | None = None) -> AsyncAnswerStream:
        """Async twin of :meth:`stream_answer`: ``async for delta in index.astream_answer(...)``;
        ``.answer`` holds the full Answer afterwards."""
        return AsyncAnswerStream(self, question, llm, k, mode, where, prompt, system)

    # ------------------------------------------------------------------ admin
    def _remove(self, key: str) -> int:
        """Remove a document by key, or every document of a file (any spelling of its path)."""
        given, key = key, display_path(key)  # a path as the OS gives it: as keys spell it
        n = self._remove_keys(key, self.file_key(given))
        if n == 0 and key != given:
            # a key as listed (``caf\\xe9.txt`` for ``b"caf\\xe9.txt"``), when no name
            # spelled that way (a literal ``caf\\xe9.txt``) matched first
            n = self._remove_keys(given, None)
        return n

    def _remove_keys(self, key: str, fkey: str | None) -> int:
        if self.store.remove_document(key):
            return 1
        n = 0
        for d in self.store.documents():
            if self._is_file_doc(d.metadata) and self._owner(d.source, d.metadata) in (key, fkey):
                n += int(self.store.remove_document(d.source))
        return n

    def remove(self, id_or_source: str | os.PathLike[str]) -> bool:
        """Remove a document by its id (key), or a file's documents by its path (any spelling).
        Returns whether anything was removed."""
        key = os.fspath(id_or_source)
        return run_sync(get_runtime().to_thread(self._remove, key),
                        alternative="await index.aremove(...)") > 0

    async def aremove(self, id_or_source: str | os.PathLike[str]) -> bool:
        """Async twin of :meth:`remove`."""
        key = os.fspath(id_or_source)
        return await run_async(get_runtime().to_thread(self._remove, key)) > 0

    def _stats(self) -> dict[str, Any]:
        s = dict(self.store.stats())
        settings = getattr(self.embedder, "settings", None)
        emb: dict[str, Any] = dict(settings()) if callable(settings) else {}
        emb.update(provider=self.embedder.provider, model=self.embedder.model,
                   dimension=self.embedder.dimension, spec=self.embedder.spec)
        s["embedder"] = emb
        s["splitter"] = splitter_config(self.splitter)
        s["root"] = str(self.root) if self.root is not None else None
        stale = sum(1 for d in self.store.documents()
                    if not d.content_hash.endswith(":" + self._sig))
        s["documents_with_other_settings"] = stale
        return s

    def stats(self) -> dict[str, Any]:
        """What the store holds, and how the index is built (embedder and splitter settings as
        fields; ``documents_with_other_settings`` counts documents split with older settings,
        which the next ingest of their sources re-splits)."""
        return run_sync(get_runtime().to_thread(self._stats), alternative="await index.astats()")

    async def astats(self) -> dict[str, Any]:
        """Async twin of :meth:`stats`."""
        return await run_async(get_runtime().to_thread(self._stats))

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        await asyncio.to_thread(self.close)

    @classmethod
    async def aopen(cls, path_or_url: str | os.PathLike[str] = DEFAULT_INDEX_DIR,
                    embedder: EmbeddingClient | str | None = None, splitter: Any = None,
                    **kw: Any) -> Index:
        """Async twin of :meth:`open` (loading a model and opening the store run in a thread)."""
        return await asyncio.to_thread(lambda: cls.open(path_or_url, embedder, splitter, **kw))

    def as_langchain_retriever(self, **kw: Any) -> Any:
        """A LangChain ``BaseRetriever`` over :meth:`search` (the ``langchain`` extra); ``kw``:
        ``k``, ``mode``, ``where``."""
        from ..adapters.langchain import ParallelRagRetriever

        return ParallelRagRetriever(index=self, **kw)

    def as_llamaindex_retriever(self, **kw: Any) -> Any:
        """A LlamaIndex ``BaseRetriever`` over :meth:`search` (the ``llamaindex`` extra); ``kw``:
        ``k``, ``mode``, ``where``."""
        from ..adapters.llamaindex import ParallelRagRetriever

        return ParallelRagRetriever(self, **kw)


class AnswerStream:
    """Iterate text deltas of a streamed answer; then ``.answer`` is the complete Answer."""

    def __init__(self, index: Index, question: str, hits: list[Hit], llm: Any,
                 prompt: str | None = None, system: str | None = None) -> None:
        self._index = index
        self.question = question
        self.hits = hits
        self._llm = llm
        self._prompt = prompt
        self._system = system
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        if self._llm is None:
            ans = Index._extractive(self.question, self.hits)
            self.answer = ans
            yield ans.text
            return
        parts: list[str] = []
        stream = self._llm.stream(
            self._index._messages(self.question, self.hits, self._prompt, self._system))
        for delta in stream:
            parts.append(delta)
            yield delta
        text = "".join(parts)
        self.answer = Answer(
            question=self.question, text=text,
            citations=Index._citations(text, self.hits, False), hits=self.hits,
            usage=Index._usage(getattr(stream, "usage", None)),
        )


class AsyncAnswerStream:
    """``async for`` over the text deltas of a streamed answer; then ``.answer`` is the
    complete Answer and ``.hits`` the passages it was given."""

    def __init__(self, index: Index, question: str, llm: Any, k: int, mode: str,
                 where: dict[str, Any] | None, prompt: str | None, system: str | None) -> None:
        self._index = index
        self.question = question
        self._llm = llm
        self._args = (k, mode, where)
        self._prompt = prompt
        self._system = system
        self.hits: list[Hit] = []
        self.answer: Answer | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._run()

    async def _run(self) -> AsyncIterator[str]:
        k, mode, where = self._args
        self.hits = await self._index.asearch(self.question, k=k, mode=mode, where=where)
        if self._llm is None:
            ans = Index._extractive(self.question, self.hits)
            self.answer = ans
            yield ans.text
            return
        parts: list[str] = []
        stream = self._llm.astream(
            self._index._messages(self.question, self.hits, self._prompt, self._system))
        async for delta in stream:
            parts.append(delta)
            yield delta
        text = "".join(parts)
        self.answer = Answer(
            question=self.question, text=text,
            citations=Index._citations(text, self.hits, False), hits=self.hits,
            usage=Index._usage(getattr(stream, "usage", None)),
        )
