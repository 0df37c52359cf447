"""The ingest pipeline and batch answers on Ray Data.

Ingest runs as one Ray Data stream with back-pressure::

    file paths ─▶ load + split (tasks) ─▶ embed (actor pool) ─▶ write
                                                  │             ├─ PostgreSQL: from each actor
                                                  │             └─ embedded store: one writer on
                                                  └ budget       the driver (the only process
                                                    coordinator  that may write its files)

* **Tasks** load, hash and split files with the index's own splitter; a file whose content hash
  and splitter signature match what the store holds is skipped there (incremental, resumable).
* **Actors** build the embedder once each from its spec (a local model loads once per actor, on
  a GPU when ``num_gpus`` is given); a remote provider's RPM/TPM budget is split across the live
  actors by a small coordinator actor and re-split as actors come and go (an actor that stops
  heartbeating for ``heartbeat_s`` no longer counts). Each actor keeps parallelrag's adaptive
  limiter and retries for its share.
* **Writes** replace each document's chunks in one transaction, so a run killed at any point
  leaves no half document, and a rerun does only the rest.
* **Failures**: Ray restarts a dead actor and retries its batch (``max_restarts`` /
  ``max_task_retries``); a document whose embedding fails for good is reported in
  ``IngestReport.failed`` with its reason, never dropped silently; ``IngestReport.retried``
  counts batches that ran more than once.

Results equal the local engine's: the same documents, chunks, contexts and vectors for the same
corpus and settings (tests compare them row by row).
"""

from __future__ import annotations

import os
import pickle
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from ..store.base import embed_text

if TYPE_CHECKING:
    from ..pipeline.index import Index
    from ..pipeline.types import Answer, IngestProgress, IngestReport

__all__ = ["RayOptions", "ray_answer_many", "ray_ingest", "require_ray"]


def require_ray() -> ModuleType:
    """Import Ray, or raise :class:`ConfigError` naming the extra that brings it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ConfigError(
            "the Ray engine needs the 'ray' extra: pip install 'parallelrag[ray]' "
            f"({exc})"
        ) from None
    return ray


@dataclass
class RayOptions:
    """How the pipeline runs on Ray.

    ``address``: the cluster (``"auto"``, the head's ``"HOST:6379"``, or None: connect to
    ``RAY_ADDRESS`` if set, else start a local Ray on this machine; not ``ray://``: Ray Data
    does not run over Ray Client). ``num_actors``: embedding
    actors (default: one per CPU the cluster offers, at most 8; local models are CPU-bound, remote
    providers are bound by their limits). ``num_gpus`` / ``num_cpus``: resources per actor.
    ``files_per_task``: files a load+split task handles; ``files_per_batch``: files per embedding
    batch (each batch is one actor call). ``init_kwargs``: extra ``ray.init`` arguments when this
    process starts Ray itself.
    """

    address: str | None = None
    num_actors: int | None = None
    num_gpus: float = 0.0
    num_cpus: float = 0.5
    files_per_task: int = 8
    files_per_batch: int = 16
    heartbeat_s: float = 15.0
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    # test hook: (marker file, n): the first actor to reach its n-th batch exits the process
    # once (the marker file records that it happened), as a crashed worker would
    fail_once: tuple[str, int] | None = None


def _check_address(address: str) -> None:
    """ConfigError for a cluster address the engine cannot use, before ``ray.init``.

    ``ray://`` is Ray Client, under which Ray Data does not run: the driver has to be a
    process of the cluster (``address="auto"`` or the head's ``HOST:PORT`` from a machine in
    the cluster), for instance a Ray Job. A ``HOST:PORT`` where nothing accepts a connection (a
    typo, a stopped head) gets one short connection attempt here: ``ray.init`` would retry it
    for minutes, printing its own warnings."""
    if address.lower().startswith("ray://"):
        raise ConfigError(
            f"the Ray engine cannot run through Ray Client ({address}): Ray Data does not work "
            "over it. Run the ingest on a machine of the cluster with address 'auto' (or the "
            "head's HOST:6379), e.g. as a Ray Job: ray job submit --address http://HEAD:8265 "
            "--working-dir . -- parallelrag ingest DOCS --engine ray --ray-address auto"
        )
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return  # "auto", "local" and the like: Ray resolves them
    import socket

    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(
            f"nothing answers at {address} ({reason}): check the Ray cluster address "
            "(--ray-address / RAY_ADDRESS: the head's HOST:PORT, 6379 unless changed) and that "
            "the head is running (ray start --head)"
        ) from None


def _ensure_ray(opts: RayOptions) -> ModuleType:
    ray = require_ray()
    address = opts.address or os.environ.get("RAY_ADDRESS")
    if address and address.lower().startswith("ray://"):
        _check_address(address)  # whether or not this process has started Ray already
    if not ray.is_initialized():
        kw: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "ignore_reinit_error": True,
        }
        if address:
            _check_address(address)
            kw["address"] = address
        kw.update(opts.init_kwargs)
        ray.init(**kw)
    return ray


#: Ray Data's settings that make it print (progress bars, a line when a dataset starts)
_QUIET = ("enable_progress_bars", "enable_operator_progress_bars", "print_on_execution_start")


@contextmanager
def _quiet_data(ray: ModuleType) -> Iterator[None]:
    """Ray Data prints nothing while the engine's datasets run (library code does not print);
    the process's DataContext is as the user had it afterwards (their own datasets keep their
    progress bars)."""
    ctx = ray.data.DataContext.get_current()
    saved = {a: getattr(ctx, a) for a in _QUIET if hasattr(ctx, a)}
    for a in saved:
        setattr(ctx, a, False)
    try:
        yield
    finally:
        for a, v in saved.items():
            setattr(ctx, a, v)


def _num_actors(ray: ModuleType, opts: RayOptions) -> int:
    """The actor pool size: as given, else what the cluster's CPUs allow while one CPU stays
    free for the load + split tasks (actors holding every CPU would starve them: no batch would
    ever reach the actors)."""
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    per_actor = max(opts.num_cpus, 0.0)
    if opts.num_actors is not None:
        if opts.num_actors < 1:
            raise ConfigError(f"num_actors must be >= 1, not {opts.num_actors}")
        if opts.num_actors * per_actor > cpus - 1 and per_actor > 0:
            raise ConfigError(
                f"{opts.num_actors} actors x {per_actor:g} CPUs leave no CPU of the cluster's "
                f"{cpus:g} for the load/split tasks: use fewer actors or a smaller num_cpus"
            )
        return opts.num_actors
    if per_actor == 0:
        return max(1, min(8, int(cpus)))
    return max(1, min(8, int((cpus - 1) // per_actor)))


# ---------------------------------------------------------------------------- budget
class _BudgetCoordinator:
    """Splits a provider's RPM/TPM budget across the live embedding actors (a Ray actor)."""

    def __init__(self, rpm: float | None, tpm: float | None, heartbeat_s: float) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.heartbeat_s = heartbeat_s
        self.seen: dict[str, float] = {}
        self.registrations = 0
        self.started: dict[str, int] = {}

    def _live(self) -> int:
        now = time.monotonic()
        for k in [k for k, t in self.seen.items() if now - t > self.heartbeat_s]:
            del self.seen[k]
        return max(1, len(self.seen))

    def share(self, actor_id: str) -> tuple[float | None, float | None, int]:
        if actor_id not in self.seen:
            self.registrations += 1
        self.seen[actor_id] = time.monotonic()
        n = self._live()
        return (
            self.rpm / n if self.rpm else None,
            self.tpm / n if self.tpm else None,
            n,
        )

    def leave(self, actor_id: str) -> None:
        self.seen.pop(actor_id, None)

    def begin(self, key: str) -> int:
        """Record that a batch started; returns how many times it started before."""
        n = self.started.get(key, 0)
        self.started[key] = n + 1
        return n

    def summary(self) -> dict[str, int]:
        return {
            "registrations": self.registrations,
            "retried_batches": sum(1 for v in self.started.values() if v > 1),
        }


# ---------------------------------------------------------------------------- stages
@dataclass
class _Prepared:
    """One file after load + split: its documents ready to embed, or why it needs nothing."""

    file: str
    content_hash: str = ""
    docs: list[tuple[str, list[Any], dict[str, Any]]] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    skip: str | None = None
    owner: str = ""  # with ``skip``: the file's key (an emptied indexed file loses its documents)
    unchanged: int = 0
    failed: str | None = None
    replacements: int = 0
    vectors: list[np.ndarray] | None = None
    errors: dict[str, str] = field(default_factory=dict)
    written: bool = False
    fresh: int = 0  # vectors computed by the embedder (not reused from the store)


def _prepare_file(path: str, *, splitter: Any, context: bool, sig: str, root: str | None,
                  existing: dict[str, str], by_owner: dict[str, list[str]], rebuild: bool,
                  text_field: str | None, max_bytes: int | None) -> _Prepared:
    """Load, hash and split one file exactly as the local engine does (same keys, chunks,
    contexts and content hashes: :func:`~parallelrag.pipeline.index.file_identity`,
    :func:`~parallelrag.pipeline.index.chunk_documents`)."""
    from ..loaders import load_source
    from ..pipeline.index import chunk_documents, file_documents, file_identity

    res = load_source(path, text_field=text_field, max_bytes=max_bytes)
    key = file_identity(res.path, root)
    if res.skip is not None:  # reported under the path as given, as the local engine does
        if res.skip.failed:  # could not be read or loaded: a failure, not a skip
            return _Prepared(file=res.skip.path, failed=res.skip.reason, owner=key)
        return _Prepared(file=res.skip.path, skip=res.skip.reason, owner=key)
    h = f"{res.content_hash}:{sig}"
    keys = [d.source for d in file_documents(key, res.documents, path)]
    old = by_owner.get(key, [])
    if (not rebuild and old and sorted(old) == sorted(keys)
            and all(existing.get(k) == h for k in old)):
        return _Prepared(file=key, content_hash=h, unchanged=len(old))
    fresh = set(keys)
    prepared = _Prepared(file=key, content_hash=h, stale=[s for s in old if s not in fresh],
                         replacements=res.replacements)
    try:
        prepared.docs = chunk_documents(splitter, key, res.documents, path, context)
    except Exception as exc:
        prepared.failed = f"split failed: {exc}"
    return prepared


def _load_split_batch(
    batch: dict[str, np.ndarray], *, index_state: dict[str, Any]
) -> dict[str, np.ndarray]:
    """Ray task: load, hash and split a batch of files (runs in a Ray worker process)."""
    out = [pickle.dumps(_prepare_file(str(path), **index_state)) for path in batch["path"]]
    return {"payload": np.array(out, dtype=object)}


class _EmbedActor:
    """Ray actor: embeds the chunks of a batch of files; writes them when the store is shared."""

    def __init__(self, spec: str, client_kw: dict[str, Any], coordinator: Any,
                 store_location: str | None, store_args: dict[str, Any],
                 fail_once: tuple[str, int] | None) -> None:
        import ray

        from ..embeddings import EmbeddingClient

        self._ray = ray
        self.client = EmbeddingClient.from_url(spec, **client_kw)
        self.coordinator = coordinator
        self.id = uuid.uuid4().hex
        self.fail_once = fail_once
        self.batches = 0
        self.share: tuple[float | None, float | None] = (None, None)
        self.dimension = int(store_args["dimension"])
        self.store: Any = None
        if store_location is not None:
            from ..store import open_store

            self.store = open_store(store_location, create=False, **store_args)
        self._apply_share()

    def _apply_share(self) -> None:
        if self.coordinator is None:
            return
        rpm, tpm, _ = self._ray.get(self.coordinator.share.remote(self.id))
        if (rpm, tpm) == self.share:
            return
        self.share = (rpm, tpm)
        res = self.client.resilience
        if res is not None:
            res.reconfigure(replace(res.config, rpm=rpm, tpm=tpm))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from ..runtime import run_sync

        self.batches += 1
        if self.fail_once is not None and self.batches >= self.fail_once[1]:
            marker = Path(self.fail_once[0])
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.close(fd)
                os._exit(1)  # a crashed worker: Ray restarts the actor and retries the batch
        self._apply_share()
        items: list[_Prepared] = [pickle.loads(p) for p in batch["payload"]]
        if self.coordinator is not None and items:
            self._ray.get(self.coordinator.begin.remote(items[0].file))
        texts: list[str] = []
        owners: list[tuple[int, int]] = []  # (item, doc) per text
        for i, it in enumerate(items):
            for j, (_, chunks, _) in enumerate(it.docs):
                for c in chunks:
                    texts.append(embed_text(c))
                    owners.append((i, j))
        rows, failures, fresh = run_sync(self._embed(texts))
        per_doc: dict[tuple[int, int], list[int]] = {}
        for t, key in enumerate(owners):
            per_doc.setdefault(key, []).append(t)
        for i, it in enumerate(items):
            if not it.docs:
                continue
            it.vectors = []
            kept = []
            for j, doc in enumerate(it.docs):
                idx = per_doc.get((i, j), [])
                bad = [failures[t] for t in idx if t in failures]
                if bad:
                    it.errors[doc[0]] = f"embedding failed: {bad[0]}"
                    continue
                kept.append(doc)
                it.vectors.append(rows[idx])
                it.fresh += int(fresh[idx].sum())
            it.docs = kept
            if self.store is not None:
                _write_items(self.store, [it])
                it.written = True
                it.vectors = None
        return {"payload": np.array([pickle.dumps(it) for it in items], dtype=object)}

    async def _embed(self, texts: list[str]) -> tuple[np.ndarray, dict[int, BaseException],
                                                       np.ndarray]:
        """Vectors for ``texts`` exactly as the local engine gets them (reused from a shared
        store by text key where it holds them)."""
        from ..embeddings import _Tracker
        from ..pipeline.index import embed_texts

        rows, failures, fresh, _ = await embed_texts(self.client, self.store, texts,
                                                     self.dimension, _Tracker())
        return rows, failures, fresh


def _write_items(store: Any, items: Sequence[_Prepared]) -> None:
    docs = []
    stale: list[str] = []
    for it in items:
        assert it.vectors is not None or not it.docs
        for (source, chunks, meta), vec in zip(it.docs, it.vectors or [], strict=True):
            docs.append((source, it.content_hash, chunks, vec, meta))
        stale.extend(it.stale)
    if docs:
        store.replace_documents(docs)
    for s in stale:
        store.remove_document(s)


# ---------------------------------------------------------------------------- ingest
def ray_ingest(
    index: Index,
    paths: Iterable[str | Path],
    *,
    options: RayOptions | None = None,
    progress: Callable[[IngestProgress], None] | None = None,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    prune: bool = False,
    text_field: str | None = None,
    max_bytes: int | None = 50_000_000,
    rebuild: bool = False,
) -> IngestReport:
    """Ingest ``paths`` (files and directories) into ``index`` on Ray; the same report as the
    local engine."""
    from ..loaders import Skip, walk_sources
    from ..pipeline.index import file_identity, own_folder_excludes
    from ..pipeline.types import IngestProgress, IngestReport

    opts = options or RayOptions()
    ray = _ensure_ray(opts)
    t0 = time.perf_counter()
    report = IngestReport()
    roots = [Path(p) for p in paths]
    root = str(index.root) if index.root is not None else None
    records = index.store.documents()
    existing = {d.source: d.content_hash for d in records}
    by_owner: dict[str, list[str]] = {}
    for d in records:
        by_owner.setdefault(index._owner(d.source, d.metadata), []).append(d.source)
    files: list[str] = []
    seen: dict[str, str] = {}  # file key -> path as given
    emptied: list[str] = []  # indexed files that hold no text now (as the local engine)
    def walk(root: Path) -> Iterator[Path | Skip]:
        # the index's own folder is left out where it lies inside the root, as locally
        own = own_folder_excludes(index.path, root)
        return walk_sources([root], include=include, max_bytes=max_bytes,
                            exclude=[*(exclude or ()), *own] if own else exclude)

    for item in (it for r in roots for it in walk(r)):
        if isinstance(item, Skip):
            (report.failed if item.failed else report.skipped).append((item.path, item.reason))
            key = file_identity(item.path, root)
            if key in by_owner:  # a file we had is now unreadable: keep it unless pruned
                seen.setdefault(key, item.path)
                if item.reason == "empty":
                    emptied.append(key)
            continue
        given = str(item)
        key = file_identity(item, root)
        if key in seen:
            if seen[key] != given:
                report.skipped.append((given, f"duplicate of {seen[key]}"))
            continue
        seen[key] = given
        files.append(given)
    state = {"splitter": index.splitter, "context": index.chunk_context, "sig": index._sig,
             "root": root,
             "existing": existing, "by_owner": by_owner, "rebuild": rebuild,
             "text_field": text_field, "max_bytes": max_bytes}
    n_actors = _num_actors(ray, opts)
    embedder = index.embedder
    res = embedder.resilience
    rpm = res.config.rpm if res is not None else None
    tpm = res.config.tpm if res is not None else None
    coord_cls = ray.remote(num_cpus=0)(_BudgetCoordinator)
    coordinator = coord_cls.remote(rpm, tpm, opts.heartbeat_s)
    store_location = getattr(index.store, "url", None)
    store_args = {"dimension": index.store.dimension, "model_id": index.store.model_id}
    counters = {"done": 0, "chunks": 0, "embedded": 0}

    def emit() -> None:
        if progress is None:
            return
        try:
            progress(IngestProgress(
                files_seen=len(files), documents_done=counters["done"],
                chunks=counters["chunks"], embedded=counters["embedded"],
                elapsed_s=time.perf_counter() - t0, scan_done=True, files_total=len(files),
            ))
        except Exception:  # a progress callback must never break an ingest
            pass

    emit()
    with _quiet_data(ray):
        if files:
            ds = ray.data.from_items([{"path": f} for f in files],
                                     override_num_blocks=max(1, min(len(files), 4 * n_actors)))
            ds = ds.map_batches(
                _load_split_batch, fn_kwargs={"index_state": state},
                batch_size=opts.files_per_task, batch_format="numpy", num_cpus=1,
            )
            ds = ds.map_batches(
                _EmbedActor,
                fn_constructor_kwargs={
                    "spec": embedder.spec, "client_kw": embedder.remote_kwargs(),
                    "coordinator": coordinator, "store_location": store_location,
                    "store_args": store_args, "fail_once": opts.fail_once,
                },
                batch_size=opts.files_per_batch, batch_format="numpy",
                concurrency=n_actors, num_cpus=opts.num_cpus, num_gpus=opts.num_gpus or None,
            )
            lock = threading.Lock()
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                items: list[_Prepared] = [pickle.loads(p) for p in batch["payload"]]
                if store_location is None:
                    with lock:
                        _write_items(index.store, [it for it in items if not it.written])
                for it in items:
                    _account(report, it, existing)
                    if it.skip == "empty" and it.owner in by_owner:
                        emptied.append(it.owner)  # readable, no text now: its old text must go
                    for _, chunks, _ in it.docs:
                        counters["chunks"] += len(chunks)
                    counters["embedded"] += it.fresh
                    counters["done"] += len(it.docs) + it.unchanged
                emit()
    for s in [s for owner in emptied for s in by_owner.get(owner, [])]:
        if index.store.remove_document(s):
            report.removed += 1
    if prune and roots:
        file_owners = {index._owner(d.source, d.metadata) for d in records
                       if index._is_file_doc(d.metadata)}
        real_roots = [Path(os.path.realpath(r)) for r in roots]
        gone = [s for owner, keys in by_owner.items()
                if owner in file_owners and owner not in seen
                and index._under(index._key_path(owner), real_roots) for s in keys]
        for s in gone:
            if index.store.remove_document(s):
                report.removed += 1
    summary = ray.get(coordinator.summary.remote())
    ray.kill(coordinator)
    report.retries += summary["retried_batches"]
    report.wall_s = time.perf_counter() - t0
    emit()
    return report


def _account(report: IngestReport, it: _Prepared, existing: dict[str, str]) -> None:
    if it.skip is not None:
        report.skipped.append((it.file, it.skip))
        return
    if it.failed is not None:
        report.failed.append((it.file, it.failed))
        return
    report.unchanged += it.unchanged
    report.documents += it.unchanged
    for source, reason in it.errors.items():
        report.failed.append((source, reason))
    for source, chunks, _ in it.docs:
        if source in existing:
            report.updated += 1
        else:
            report.added += 1
        report.documents += 1
        report.chunks += len(chunks)
    report.embedded += it.fresh
    if it.replacements:
        report.decode_replaced_files += 1
        report.decode_replacements += it.replacements
    report.removed += len(it.stale)


# ---------------------------------------------------------------------------- answers
class _AnswerActor:
    """Ray actor: opens the index read-only and answers a batch of questions."""

    def __init__(self, location: str, embedder_spec: str, embedder_kw: dict[str, Any],
                 llm_spec: str | None, llm_kw: dict[str, Any], answer_kw: dict[str, Any]) -> None:
        from ..embeddings import EmbeddingClient
        from ..llm import LlmClient
        from ..pipeline.index import Index

        emb = EmbeddingClient.from_url(embedder_spec, **embedder_kw)
        self.index = Index.open(location, embedder=emb, create=False)
        self.llm = LlmClient.from_url(llm_spec, **llm_kw) if llm_spec else None
        self.answer_kw = answer_kw

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        questions = [str(q) for q in batch["question"]]
        answers = self.index.answer_many(questions, llm=self.llm, **self.answer_kw)
        return {"i": batch["i"], "answer": np.array([pickle.dumps(a) for a in answers],
                                                    dtype=object)}


def ray_answer_many(
    index: Index,
    questions: Sequence[str],
    *,
    llm: Any = None,
    options: RayOptions | None = None,
    questions_per_batch: int = 32,
    **answer_kw: Any,
) -> list[Answer]:
    """Answer ``questions`` on Ray actors that each open the index; results in input order.

    The index must be reachable from every actor: a PostgreSQL URL, or an embedded index on a
    path every node sees (this machine, or a shared file system)."""
    opts = options or RayOptions()
    ray = _ensure_ray(opts)
    if not questions:
        return []
    location = getattr(index.store, "url", None)
    if location is None:
        if index.path is None:
            raise ConfigError("engine='ray' needs an index on a path or a PostgreSQL URL "
                              "(a store passed as store= cannot be reopened on the actors)")
        location = str(Path(index.path).resolve())
    llm_spec = getattr(llm, "spec", None) if llm is not None else None
    if llm is not None and llm_spec is None:
        raise ConfigError("engine='ray' needs an LlmClient (with a .spec) as llm=")
    with _quiet_data(ray):
        ds = ray.data.from_items([{"i": i, "question": q} for i, q in enumerate(questions)])
        ds = ds.map_batches(
            _AnswerActor,
            fn_constructor_kwargs={
                "location": location, "embedder_spec": index.embedder.spec,
                "embedder_kw": index.embedder.remote_kwargs(),
                "llm_spec": llm_spec, "llm_kw": llm.remote_kwargs() if llm is not None else {},
                "answer_kw": answer_kw,
            },
            batch_size=questions_per_batch, batch_format="numpy",
            concurrency=_num_actors(ray, opts), num_cpus=opts.num_cpus,
            num_gpus=opts.num_gpus or None,
        )
        out: list[Any] = [None] * len(questions)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i, a in zip(batch["i"], batch["answer"], strict=True):
                out[int(i)] = pickle.loads(a)
    return out
