"""``Index``: streaming ingestion into the embedded store, hybrid search, answers with citations.

Ingest runs as concurrent stages joined by bounded queues (backpressure, so memory does not grow
with the corpus)::

    load (thread) ─▶ split (batch, both cores) ─▶ embed (N workers, adaptive concurrency)
                  ─▶ write (one writer, batched transactions)

A document is recorded with its content hash only in the transaction that writes its chunks, so a
run killed at any point resumes where it stopped and never leaves half a document visible.
Chunk embeddings are cached by content in the index directory: identical chunk texts are embedded
once, and re-ingesting a changed file embeds only its new chunks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..cache import EmbeddingCache
from ..documents import Chunk, Document
from ..embeddings import EmbeddingClient, _Tracker
from ..errors import BadRequestError, ConfigError, ParallelRagError
from ..loaders import load_path
from ..runtime import get_runtime, run_async, run_sync
from ..store import EmbeddedStore, Hit
from .types import Answer, Citation, IngestProgress, IngestReport

__all__ = ["DEFAULT_INDEX_DIR", "Index"]

DEFAULT_INDEX_DIR = ".parallelrag"

ProgressFn = Callable[[IngestProgress], None]

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
    from ..splitters import RecursiveSplitter

    if embedder.provider == "local" and "minilm" in embedder.model.lower():
        # 128 model tokens: best recall@1 / MRR in docs/retrieval-eval.md (vs 200 tokens)
        return RecursiveSplitter(chunk_size=128, chunk_overlap=16, length="minilm")
    return RecursiveSplitter(chunk_size=1500, chunk_overlap=150)


def _splitter_signature(splitter: Any) -> str:
    """What decides the chunks: a change re-splits unchanged files on the next ingest."""
    parts = [type(splitter).__name__]
    for attr in ("chunk_size", "chunk_overlap", "separators", "separator", "tokenizer"):
        if hasattr(splitter, attr):
            parts.append(f"{attr}={getattr(splitter, attr)!r}")
    length = getattr(splitter, "length", None)
    parts.append(f"length={getattr(length, 'name', length)!r}")
    return ";".join(parts)


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
    """A RAG index on disk. Thread-safe; sync methods work from any thread or event loop."""

    def __init__(self, path: Path, store: EmbeddedStore, embedder: EmbeddingClient,
                 splitter: Any) -> None:
        self.path = path
        self.store = store
        self.embedder = embedder
        self.splitter = splitter
        self._sig = hashlib.sha256(_splitter_signature(splitter).encode()).hexdigest()[:16]
        self._ingest_lock = threading.Lock()
        self._own_cache: EmbeddingCache | None = None
        # store writes run on one thread of their own: SQLite's and FTS5's allocations then
        # stay in one malloc arena instead of spreading over the runtime's worker pool (which
        # made RSS creep with corpus size)
        self._write_pool: concurrent.futures.ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ open
    @classmethod
    def open(
        cls,
        path: str | Path = DEFAULT_INDEX_DIR,
        embedder: EmbeddingClient | str | None = None,
        splitter: Any = None,
        *,
        create: bool = True,
        cache: bool = True,
    ) -> Index:
        """Create or open the index at ``path``.

        The embedder's model and dimension are recorded; reopening with another → ConfigError.
        ``embedder`` may be a client or a one-string config (``minilm``, ``openai:MODEL``...);
        default: the local ``minilm`` model.
        """
        p = Path(path)
        cfg_path = p / "index.json"
        saved: dict[str, Any] = {}
        if cfg_path.exists():
            saved = orjson.loads(cfg_path.read_bytes())
        elif not create:
            raise ConfigError(f"no index at {p} (run `parallelrag ingest` first)")
        if isinstance(embedder, str) or embedder is None:
            embedder = EmbeddingClient.from_url(embedder or saved.get("embedder") or "minilm")
        own_cache = None
        if cache and embedder.cache is None:
            p.mkdir(parents=True, exist_ok=True)
            embedder.cache = own_cache = EmbeddingCache(p / "embeddings.sqlite")
        model_id = f"{embedder.provider}:{embedder.model}"
        store = EmbeddedStore.open(p, dimension=embedder.dimension, model_id=model_id,
                                   create=create)
        if not cfg_path.exists():
            cfg_path.write_bytes(orjson.dumps({"embedder": embedder.spec, "model_id": model_id},
                                              option=orjson.OPT_INDENT_2))
        index = cls(p, store, embedder, splitter or default_splitter(embedder))
        index._own_cache = own_cache
        return index

    def close(self) -> None:
        pool, self._write_pool = self._write_pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.store.close()
        if self._own_cache is not None:
            self._own_cache.close()

    def _writer(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._write_pool is None:
            self._write_pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="parallelrag-index-writer"
            )
        return self._write_pool

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Index({str(self.path)!r}, embedder={self.embedder!r})"

    # ------------------------------------------------------------------ ingest
    def ingest(
        self,
        paths: str | Path | Iterable[str | Path],
        *,
        progress: ProgressFn | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        prune: bool = False,
        text_field: str | None = None,
        max_bytes: int | None = 50_000_000,
    ) -> IngestReport:
        """Load, split, embed and store ``paths`` (files or directories). Incremental."""
        return run_sync(
            self.aingest(paths, progress=progress, include=include, exclude=exclude, prune=prune,
                         text_field=text_field, max_bytes=max_bytes, _bridge=False),
            alternative="await index.aingest(...)",
        )

    async def aingest(
        self,
        paths: str | Path | Iterable[str | Path],
        *,
        progress: ProgressFn | None = None,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        prune: bool = False,
        text_field: str | None = None,
        max_bytes: int | None = 50_000_000,
        _bridge: bool = True,
    ) -> IngestReport:
        if isinstance(paths, str | Path):
            paths = [paths]
        roots = [Path(p) for p in paths]
        coro = self._ingest(roots, progress, include, exclude, prune, text_field, max_bytes)
        return await run_async(coro) if _bridge else await coro

    async def _ingest(
        self,
        roots: list[Path],
        progress: ProgressFn | None,
        include: Sequence[str] | None,
        exclude: Sequence[str] | None,
        prune: bool,
        text_field: str | None,
        max_bytes: int | None,
    ) -> IngestReport:
        rt = get_runtime()
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        report = IngestReport()
        stages = {"load": 0.0, "split": 0.0, "embed": 0.0, "write": 0.0}
        tracker = _Tracker()
        existing: dict[str, str] = {
            d.source: d.content_hash for d in await rt.to_thread(self.store.documents)
        }
        by_file: dict[str, list[str]] = {}
        for src in existing:
            by_file.setdefault(src.split("#", 1)[0], []).append(src)
        seen_files: set[str] = set()
        counters = {"files": 0, "done": 0, "chunks": 0, "embedded": 0}
        scan_done = threading.Event()

        def emit() -> None:
            if progress is not None:
                try:
                    progress(IngestProgress(
                        files_seen=counters["files"], documents_done=counters["done"],
                        chunks=counters["chunks"], embedded=counters["embedded"],
                        elapsed_s=time.perf_counter() - t0, scan_done=scan_done.is_set(),
                        files_total=counters["files"] if scan_done.is_set() else None,
                    ))
                except Exception:  # a progress callback must never break an ingest
                    pass

        # item: (file source, hash, documents, stale sources to delete)
        q_docs: asyncio.Queue[tuple[str, str, list[Document], list[str]] | None] = asyncio.Queue(64)
        q_chunks: asyncio.Queue[list[tuple[str, str, list[Chunk], dict[str, Any], list[str]]]
                                | None] = asyncio.Queue(4)
        q_write: asyncio.Queue[list[tuple[str, str, list[Chunk], np.ndarray, dict[str, Any],
                                          list[str]]] | None] = asyncio.Queue(4)

        stop = threading.Event()
        budget = _Budget(_INFLIGHT_CHARS)
        held: dict[str, int] = {}  # document source -> its characters held in the budget

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

        def produce() -> None:
            """Runs in a worker thread: walk, load, hash, skip unchanged; feed q_docs."""
            try:
                results = load_path(roots, include=include, exclude=exclude,
                                    max_bytes=max_bytes, text_field=text_field)
                while True:
                    t = time.perf_counter()  # load = walking, reading, decoding, converting
                    res = next(results, None)
                    stages["load"] += time.perf_counter() - t
                    if res is None:
                        break
                    src = str(res.path)
                    if res.skip is not None:
                        report.skipped.append((res.skip.path, res.skip.reason))
                        if src in by_file:  # a file we had is now unreadable: keep it unless pruned
                            seen_files.add(src)
                        continue
                    seen_files.add(src)
                    counters["files"] += 1
                    h = f"{res.content_hash}:{self._sig}"
                    old = by_file.get(src, [])
                    new_sources = [d.source or src for d in res.documents]
                    if old and sorted(old) == sorted(new_sources) and all(
                        existing.get(s) == h for s in old
                    ):
                        report.unchanged += len(old)
                        report.documents += len(old)
                        continue
                    fresh = set(new_sources)
                    stale = [s for s in old if s not in fresh]
                    put((src, h, res.documents, stale))
                put(None)
            except _Stopped:
                pass
            finally:
                scan_done.set()

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
                    try:
                        item = await asyncio.wait_for(q_docs.get(), _SPLIT_MIN_WAIT_S)
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
                docs = [(src, h, d, stale if k == 0 else [])
                        for src, h, ds, stale in batch for k, d in enumerate(ds)]
                for src, _, d, _ in docs:
                    held[d.source or src] = held.get(d.source or src, 0) + len(d.text)
                await budget.acquire(chars)
                texts = [d.text for _, _, d, _ in docs]
                metas = [dict(d.metadata) for _, _, d, _ in docs]
                t = time.perf_counter()
                try:
                    split = await rt.to_thread(self.splitter.split_many, texts, metadatas=metas)
                except Exception as exc:
                    for src, _, _, _ in batch:
                        report.failed.append((src, f"split failed: {exc}"))
                    for src, _, d, _ in docs:
                        budget.release(held.pop(d.source or src, 0))
                    split = None
                stages["split"] += time.perf_counter() - t
                if split is not None:
                    out = []
                    for (src, h, d, stale), chunks in zip(docs, split, strict=True):
                        source = d.source or src
                        meta = {k: v for k, v in d.metadata.items()
                                if isinstance(v, str | int | float | bool)}
                        out.append((source, h, chunks, meta, stale))
                    await q_chunks.put(out)
                batch, chars = [], 0
            for _ in range(_EMBED_WORKERS):
                await q_chunks.put(None)

        async def embed_worker() -> None:
            while True:
                item = await q_chunks.get()
                if item is None:
                    await q_write.put(None)
                    return
                texts = [c.text for _, _, chunks, _, _ in item for c in chunks]
                t = time.perf_counter()
                hits_before = tracker.cache_hits
                try:
                    rows, failures = await self.embedder._embed_texts(texts, tracker, None)
                except ParallelRagError as exc:
                    rows, failures = None, {i: exc for i in range(len(texts))}
                stages["embed"] += time.perf_counter() - t
                report.cache_hits += tracker.cache_hits - hits_before
                out = []
                pos = 0
                for source, h, chunks, meta, stale in item:
                    n = len(chunks)
                    bad = [failures[i] for i in range(pos, pos + n) if i in failures]
                    if bad:
                        report.failed.append((source, f"embedding failed: {bad[0]}"))
                        budget.release(held.pop(source, 0))
                    elif rows is not None:
                        out.append((source, h, chunks, rows[pos:pos + n], meta, stale))
                    else:  # nothing to write for it (no chunks, and the request failed)
                        budget.release(held.pop(source, 0))
                    pos += n
                counters["embedded"] += len(texts)
                report.embedded = tracker.texts_sent
                emit()
                if out:
                    await q_write.put(out)

        async def writer() -> None:
            finished = 0
            pending: list[tuple[str, str, list[Chunk], np.ndarray, dict[str, Any], list[str]]] = []

            async def flush() -> None:
                if not pending:
                    return
                items = [(s, h, c, v, m) for s, h, c, v, m, _ in pending]
                stale = [s for *_, st in pending for s in st]
                t = time.perf_counter()
                await loop.run_in_executor(self._writer(), self._write, items, stale)
                stages["write"] += time.perf_counter() - t
                for s, _, c, _, _, _ in pending:
                    if s in existing:
                        report.updated += 1
                    else:
                        report.added += 1
                    report.chunks += len(c)
                    counters["chunks"] += len(c)
                    counters["done"] += 1
                    budget.release(held.pop(s, 0))
                report.removed += len(stale)
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
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(split_stage())
                for _ in range(_EMBED_WORKERS):
                    tg.create_task(embed_worker())
                tg.create_task(writer())
                await asyncio.shield(producer)
        except BaseException:
            stop.set()
            raise
        await producer
        if prune:
            gone = [s for f, srcs in by_file.items() if f not in seen_files
                    and self._under(f, roots) for s in srcs]
            for s in gone:
                if await rt.to_thread(self.store.remove_document, s):
                    report.removed += 1
        report.embedded = tracker.texts_sent
        report.requests = tracker.requests
        report.retries = max(0, tracker.requests - tracker.packs)
        report.rate_limited = tracker.rate_limited
        report.tokens = tracker.tokens
        report.wall_s = time.perf_counter() - t0
        report.stages = {k: round(v, 4) for k, v in stages.items()}
        emit()
        return report

    @staticmethod
    def _under(path: str, roots: list[Path]) -> bool:
        p = Path(path)
        for r in roots:
            try:
                p.relative_to(r)
                return True
            except ValueError:
                if str(p) == str(r):
                    return True
        return False

    def _write(self, items: list[tuple[str, str, list[Chunk], np.ndarray, dict[str, Any]]],
               stale: list[str]) -> None:
        self.store.replace_documents(items)
        for s in stale:
            self.store.remove_document(s)

    # ------------------------------------------------------------------ search
    async def _embed_query(self, query: str) -> np.ndarray:
        try:
            return await self.embedder.aembed(query)
        except BadRequestError as exc:
            if "over the model's limit" not in str(exc):
                raise
            return await self.embedder.aembed(query[:600])

    async def _search(self, query: str, k: int, mode: str,
                      where: dict[str, Any] | None) -> list[Hit]:
        if mode not in ("vector", "keyword", "hybrid"):
            raise ConfigError(f"mode must be vector, keyword or hybrid, not {mode!r}")
        if not isinstance(query, str) or not query.strip():
            raise BadRequestError("the query is empty")
        rt = get_runtime()
        if mode == "keyword":
            return await rt.to_thread(self.store.search_keyword, query, k, where=where)
        qv = await self._embed_query(query)
        if mode == "vector":
            return await rt.to_thread(self.store.search_vector, qv, k, where=where)
        return await rt.to_thread(self.store.search_hybrid, query, qv, k, where=where)

    def search(self, query: str, k: int = 5, mode: str = "hybrid",
               where: dict[str, Any] | None = None) -> list[Hit]:
        """Top-k chunks for ``query``: ``vector``, ``keyword`` (BM25) or ``hybrid`` (RRF)."""
        return run_sync(self._search(query, k, mode, where),
                        alternative="await index.asearch(...)")

    async def asearch(self, query: str, k: int = 5, mode: str = "hybrid",
                      where: dict[str, Any] | None = None) -> list[Hit]:
        return await run_async(self._search(query, k, mode, where))

    # ------------------------------------------------------------------ answers
    @staticmethod
    def _prompt(question: str, hits: list[Hit]) -> list[dict[str, str]]:
        """Messages for the LLM: instructions and numbered sources as system, the question as user."""
        blocks = []
        for i, h in enumerate(hits, 1):
            blocks.append(f"[{i}] (source: {h.source})\n{h.text.strip()}")
        sources = "\n\n".join(blocks) if blocks else "(no sources matched)"
        system = (
            "Answer the user's question using only the numbered sources below. Cite every claim "
            "with the source number in brackets, like [1]. If the sources do not contain the "
            f"answer, say that they do not.\n\nSources:\n{sources}"
        )
        return [{"role": "system", "content": system}, {"role": "user", "content": question}]

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

    async def _answer(self, question: str, llm: Any, k: int, mode: str) -> Answer:
        hits = await self._search(question, k, mode, None)
        if llm is None:
            return self._extractive(question, hits)
        resp = await llm.acomplete_full(self._prompt(question, hits))
        usage = resp.usage
        return Answer(
            question=question, text=resp.text,
            citations=self._citations(resp.text, hits, False), hits=hits,
            usage={"prompt_tokens": usage.prompt_tokens,
                   "completion_tokens": usage.completion_tokens,
                   "total_tokens": usage.total_tokens},
        )

    def answer(self, question: str, llm: Any = None, k: int = 5, mode: str = "hybrid") -> Answer:
        """Retrieve k chunks and answer with numbered citations (extractive without an LLM)."""
        return run_sync(self._answer(question, llm, k, mode),
                        alternative="await index.aanswer(...)")

    async def aanswer(self, question: str, llm: Any = None, k: int = 5,
                      mode: str = "hybrid") -> Answer:
        return await run_async(self._answer(question, llm, k, mode))

    def answer_many(self, questions: Sequence[str], llm: Any = None, k: int = 5,
                    mode: str = "hybrid") -> list[Answer]:
        """Answer many questions concurrently; results in input order."""

        async def many() -> list[Answer]:
            return list(await asyncio.gather(
                *(self._answer(q, llm, k, mode) for q in questions)
            ))

        return run_sync(many(), alternative="await index.aanswer(...) with asyncio.gather")

    def stream_answer(self, question: str, llm: Any, k: int = 5,
                      mode: str = "hybrid") -> AnswerStream:
        """Stream the answer's text deltas; ``.answer`` holds the full Answer afterwards."""
        hits = self.search(question, k=k, mode=mode)
        return AnswerStream(self, question, hits, llm)

    # ------------------------------------------------------------------ admin
    def remove(self, source: str) -> bool:
        """Remove a document (and its chunks) by source path."""
        return self.store.remove_document(str(source))

    def stats(self) -> dict[str, Any]:
        s = dict(self.store.stats())
        s["embedder"] = {"provider": self.embedder.provider, "model": self.embedder.model,
                         "dimension": self.embedder.dimension}
        s["splitter"] = _splitter_signature(self.splitter)
        return s


class AnswerStream:
    """Iterate text deltas of a streamed answer; then ``.answer`` is the complete Answer."""

    def __init__(self, index: Index, question: str, hits: list[Hit], llm: Any) -> None:
        self._index = index
        self.question = question
        self.hits = hits
        self._llm = llm
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        if self._llm is None:
            ans = Index._extractive(self.question, self.hits)
            self.answer = ans
            yield ans.text
            return
        parts: list[str] = []
        stream = self._llm.stream(Index._prompt(self.question, self.hits))
        for delta in stream:
            parts.append(delta)
            yield delta
        text = "".join(parts)
        usage = getattr(stream, "usage", None)
        self.answer = Answer(
            question=self.question, text=text,
            citations=Index._citations(text, self.hits, False), hits=self.hits,
            usage={"prompt_tokens": usage.prompt_tokens,
                   "completion_tokens": usage.completion_tokens,
                   "total_tokens": usage.total_tokens} if usage is not None else {},
        )
