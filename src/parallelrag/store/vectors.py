"""The vector index behind :class:`~parallelrag.store.EmbeddedStore`.

The vectors are float32 rows (ascending
chunk id) in a file: appended with plain file writes and read through a shared read-only
mapping, so they live in the page cache, not the process heap (no growth copy; ingesting adds
no resident memory for them). Only the ids and a live mask are arrays in memory. Below
``ann_threshold`` live vectors search is exact (one BLAS mat-vec product + ``argpartition``); at
or above it an HNSW index (usearch, f16 vectors) is used, filled lazily: nothing goes into the
graph until the first search (or :meth:`VectorIndex.wait_for_index`), after which a background
thread keeps it up to date. Scores returned are always exact inner products from the float32 rows.

With a store (:class:`~parallelrag.store.EmbeddedStore`) the file is the store's own vector
file, the only copy of the vectors (:meth:`VectorIndex.open_shared`): the store writes rows
before the transaction recording them commits, and every process maps the same file, taking in
committed rows without copying them. Without one, the rows go into a private unnamed file (or,
with ``persist=True``, a directory file checkpointed at close, at ``save_index`` and every
``CHECKPOINT_BYTES``). The ANN graph is persisted next to the database with the position in the
database's history it reflects (highest chunk id, highest deletion-log sequence).

Exact search costs time linear in the number of vectors; HNSW costs roughly logarithmic time
but a graph build of seconds to minutes. The default ``ann_threshold`` (20,000) sits where HNSW
starts to win: below it exact search stays under a millisecond, returns the true neighbours,
and a graph would cost far more to build than it saves.

Graph maintenance runs in a background thread using half the cores, in slices of
``FOLD_SLICE`` vectors (read with ``pread``, so the fold does not map the matrix in), and waits
while writes are streaming in (unless the tail reaches ``ann_threshold``), so ingestion keeps
its speed; searches stay complete meanwhile through an exact search of the unfolded tail. A bulk
ingest with no searches does none of this.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import mmap
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from parallelrag.errors import StoreError

__all__ = ["DEFAULT_ANN_THRESHOLD", "RWLock", "VectorIndex", "ann_available"]

DEFAULT_ANN_THRESHOLD = 20_000

try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - not POSIX: the vector file is private to each store
    _fcntl = None  # type: ignore[assignment]

# usearch is imported when an ANN graph is first built or loaded, not with this module: its
# native library exports C++ runtime symbols that break Ray's (``std::regex_error`` in
# ``ray.init``) when it is loaded first in a process that later starts Ray.
_HAVE_USEARCH = importlib.util.find_spec("usearch") is not None


class _LazyUsearch:
    def __getattr__(self, name: str) -> Any:
        import usearch.index

        return getattr(usearch.index.Index, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import usearch.index

        return usearch.index.Index(*args, **kwargs)


_UsearchIndex: Any = _LazyUsearch() if _HAVE_USEARCH else None

_META_NAME = "vectors.meta.json"
_VEC_NAME = "matrix-f32.bin"  # float32 rows, row i at i * dim * 4 (sparse past the last row)
_IDS_NAME = "matrix-ids.bin"  # int64 chunk id of each row
_CKPT_NAME = "matrix.json"  # how many leading rows of the two files are durable and whose
_LOCK_NAME = "matrix.lock"  # flock: the process holding it owns the files above
_CKPT_VERSION = 1
_MIN_CAP_ROWS = 1024
#: Rows appended since the last checkpoint past which one is taken (fsync + matrix.json): at
#: most this much is re-read from SQLite after a crash.
CHECKPOINT_BYTES = 64 << 20
_KIND_ANN = "usearch-hnsw"
_KIND_EXACT = "exact"

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def ann_available() -> bool:
    """Whether an ANN library (usearch) can be imported."""
    return _HAVE_USEARCH


class RWLock:
    """Many readers or one writer; writers are preferred so a stream of searches cannot starve them."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0
        self.waiting_readers = 0

    def has_waiters(self) -> bool:
        return bool(self.waiting_readers or self._waiting_writers)

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            if self._writer or self._waiting_writers:
                self.waiting_readers += 1
                while self._writer or self._waiting_writers:
                    self._cond.wait()
                self.waiting_readers -= 1
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class _RowFile:
    """float32 rows (and their int64 ids) in a file, appended with ``pwrite``, read through a mmap.

    The vector file is a sparse file sized to a capacity that doubles (virtual address space and
    file size only: no page is copied or allocated on growth) and mapped read-only and shared, so
    searches read the page cache directly. Appends are plain file writes: they do not fault pages
    into this process, so ingesting costs no resident memory for the matrix (the page cache holds
    it, reclaimable and shared with other processes). Bulk reads that should not stay mapped (the
    HNSW fold, compaction) use ``pread``.
    """

    def __init__(self, dimension: int, vec_fd: int, ids_fd: int) -> None:
        self.dimension = dimension
        self.row_bytes = dimension * 4
        self._vec_fd = vec_fd
        self._ids_fd = ids_fd
        self.cap = os.fstat(vec_fd).st_size // self.row_bytes
        self.mat: F32 = np.zeros((0, dimension), dtype=np.float32)
        self._map(self.cap)

    @classmethod
    def private(cls, dimension: int, directory: Path | None) -> _RowFile:
        """Unnamed temporary files (gone when closed), in ``directory`` if it is writable."""
        return cls(dimension, _unnamed_fd(directory), _unnamed_fd(directory))

    @classmethod
    def at(cls, dimension: int, vec_path: Path, ids_path: Path, *, read_only: bool = False) -> _RowFile:
        flags = os.O_RDONLY if read_only else os.O_RDWR | os.O_CREAT
        vec_fd = os.open(vec_path, flags, 0o644)
        try:
            ids_fd = os.open(ids_path, flags, 0o644)
        except BaseException:
            os.close(vec_fd)
            raise
        return cls(dimension, vec_fd, ids_fd)

    def remap(self) -> None:
        """Map the file as far as it now extends (another process may have grown it)."""
        cap = os.fstat(self._vec_fd).st_size // self.row_bytes
        if cap > self.cap:
            self._map(cap)
            self.cap = cap

    def _map(self, cap: int) -> None:
        if cap <= 0:
            self.mat = np.zeros((0, self.dimension), dtype=np.float32)
            return
        mm = mmap.mmap(self._vec_fd, cap * self.row_bytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        self.mat = np.frombuffer(mm, dtype=np.float32).reshape(cap, self.dimension)

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` rows (grows the sparse file and maps it again; copies nothing)."""
        if rows <= self.cap:
            return
        # never shrink: a shared file may have been grown by another process meanwhile
        current = os.fstat(self._vec_fd).st_size // self.row_bytes
        cap = max(rows, 2 * self.cap, _MIN_CAP_ROWS, current)
        os.ftruncate(self._vec_fd, cap * self.row_bytes)
        self._map(cap)
        self.cap = cap

    def write(self, row: int, ids: I64, vectors: F32) -> None:
        self.reserve(row + len(ids))
        _pwrite_all(self._vec_fd, np.ascontiguousarray(vectors, dtype=np.float32), row * self.row_bytes)
        _pwrite_all(self._ids_fd, np.ascontiguousarray(ids, dtype=np.int64), row * 8)

    def read(self, start: int, stop: int) -> F32:
        """Rows ``[start, stop)`` copied with ``pread`` (nothing stays mapped into this process)."""
        n = max(0, stop - start)
        out: F32 = np.empty((n, self.dimension), dtype=np.float32)
        _pread_into(self._vec_fd, out, start * self.row_bytes)
        return out

    def read_ids(self, n: int, start: int = 0) -> I64:
        """Ids of rows ``[start, n)``."""
        out: I64 = np.empty(max(0, n - start), dtype=np.int64)
        _pread_into(self._ids_fd, out, start * 8)
        return out

    def datasync(self) -> None:
        sync = getattr(os, "fdatasync", os.fsync)  # no fdatasync on macOS / Windows
        sync(self._vec_fd)
        sync(self._ids_fd)

    def file_rows(self) -> tuple[int, int]:
        """(rows the vector file can hold, ids the id file holds)."""
        return os.fstat(self._vec_fd).st_size // self.row_bytes, os.fstat(self._ids_fd).st_size // 8

    def sync(self) -> None:
        os.fsync(self._vec_fd)
        os.fsync(self._ids_fd)

    def close(self) -> None:
        # the mapping itself is released when the last array viewing it goes away
        self.mat = np.zeros((0, self.dimension), dtype=np.float32)
        for fd in (self._vec_fd, self._ids_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._vec_fd = self._ids_fd = -1


def _unnamed_fd(directory: Path | None) -> int:
    """A read-write descriptor of a new file that has no name (removed at once)."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".parallelrag-vectors-")
    except OSError:
        fd, name = tempfile.mkstemp(prefix="parallelrag-vectors-")
    with contextlib.suppress(OSError):
        os.unlink(name)
    return fd


def _pwrite_all(fd: int, arr: npt.NDArray[Any], offset: int) -> None:
    if not arr.nbytes:
        return
    view = arr.data.cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _pread_into(fd: int, arr: npt.NDArray[Any], offset: int) -> None:
    if not arr.nbytes:
        return
    view = arr.data.cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise StoreError(f"vector file is shorter than expected (read {done} of {len(view)} bytes)")
        done += got


class VectorIndex:
    """Exact + optional HNSW search over (chunk id → vector), ids appended in ascending order.

    The vectors live in a file (see :class:`_RowFile`): the store's own vector file, shared by
    every process (after :meth:`open_shared`; the store writes it), a directory file this index
    owns (``persist=True`` and the directory's lock taken), or an unnamed temporary file.
    The ids and the live mask are small arrays in memory.

    Rows ``[0, ann_rows)`` are in the HNSW graph; newer rows (the *tail*) are searched exactly and
    merged, while a background thread folds them into the graph in small slices. The graph is
    lazy: crossing ``ann_threshold`` creates an empty one, but nothing is folded into it until the
    first search (or :meth:`wait_for_index`), so a bulk ingest neither pays for HNSW insertion
    nor holds the graph's memory. Searches always see every live vector.

    Thread-safe: searches share a read lock; mutations are serialised by ``mutate_lock`` and take
    the write lock only for short in-memory updates (one fold slice at a time).
    """

    #: Vectors folded into the HNSW graph per write-lock hold.
    FOLD_SLICE = 32
    #: The folder waits until writes have paused this long (unless the tail is large).
    WRITE_QUIET_S = 0.25

    def __init__(
        self,
        dimension: int,
        *,
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        ann: bool = True,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 64,
        ann_dtype: str = "f16",
        threads: int = 0,
        directory: str | os.PathLike[str] | None = None,
        persist: bool = False,
        store_id: str = "",
    ) -> None:
        self.dimension = dimension
        self.ann_threshold = ann_threshold
        self.ann_enabled = ann and _HAVE_USEARCH
        self._params: dict[str, Any] = {
            "connectivity": connectivity,
            "expansion_add": expansion_add,
            "expansion_search": expansion_search,
            "dtype": ann_dtype,
        }
        # background maintenance leaves half the cores to ingestion and searches
        self._threads = threads or max(1, (os.cpu_count() or 1) // 2)
        self.mutate_lock = threading.RLock()
        self._rw = RWLock()
        self._dir = Path(directory) if directory is not None else None
        self.store_id = store_id
        self._lock_fd = -1
        #: True when the vector file is the directory's (kept across opens), False when private.
        self.persistent = False
        #: True when the rows are the store's shared vector file (the only copy of the vectors,
        #: written by the store before each commit; see :meth:`open_shared`).
        self.shared = False
        #: Generation of the shared vector file (a compaction writes the next one).
        self.gen = 0
        rows = self._open_persistent(self._dir) if persist and self._dir is not None else None
        self._rows = rows if rows is not None else _RowFile.private(dimension, self._dir)
        self._mat: F32 = self._rows.mat
        self._ids: I64 = np.zeros(0, dtype=np.int64)
        self._alive: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)
        self._n = 0
        self._live = 0
        self._ckpt_rows = 0  # leading rows covered by the last checkpoint (persistent files only)
        self._ann: Any = None
        self._ann_rows = 0  # rows [0, _ann_rows) have been folded into the graph
        self._ann_max_id = 0  # highest id ever folded (the graph's position in the id sequence)
        self._ann_wanted = False  # set by the first search: only then is the graph filled
        #: Position in the database history this index reflects.
        self.max_id = 0
        self.del_seq = 0
        #: True when the ANN index changed since it was last saved or loaded.
        self.ann_dirty = False
        self._wake = threading.Condition(threading.Lock())
        self._folder: threading.Thread | None = None
        self._folding = False
        self._last_write = 0.0
        self._closing = False
        self.fold_error: BaseException | None = None
        _live_indexes.add(self)

    def _open_persistent(self, directory: Path) -> _RowFile | None:
        """The directory's vector files, if this process can own them (else None: private ones)."""
        if _fcntl is None:  # pragma: no cover
            return None
        try:
            fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return None
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
            rows = _RowFile.at(self.dimension, directory / _VEC_NAME, directory / _IDS_NAME)
        except OSError:  # another process (or store object) owns them
            os.close(fd)
            return None
        self._lock_fd = fd
        self.persistent = True
        return rows

    # ------------------------------------------------------------------ state
    @property
    def kind(self) -> str:
        return _KIND_ANN if self._ann is not None else _KIND_EXACT

    def __len__(self) -> int:
        return self._live

    @property
    def pending(self) -> int:
        """Rows not yet folded into the HNSW graph (searched exactly meanwhile); 0 when exact."""
        return self._n - self._ann_rows if self._ann is not None else 0

    @property
    def nbytes(self) -> int:
        """Bytes of process memory held by the ids and the live mask (allocated capacity).

        The vectors themselves are in a file read through a shared read-only mapping (page
        cache: see :attr:`file_bytes`); the HNSW graph, once filled, is usearch's memory.
        """
        return int(self._ids.nbytes + self._alive.nbytes)

    @property
    def file_bytes(self) -> int:
        """Bytes of vector rows in the vector file (live and not yet compacted away)."""
        return self._n * self._rows.row_bytes

    def live_ids(self) -> I64:
        n = self._n
        out: I64 = self._ids[:n][self._alive[:n]].copy()
        return out

    # -------------------------------------------------------------- mutation
    def _clear(self) -> None:
        """Forget every row and the graph (caller holds ``mutate_lock`` and the write lock)."""
        self._ids = np.zeros(0, dtype=np.int64)
        self._alive = np.zeros(0, dtype=bool)
        self._n = self._live = 0
        self._ann = None
        self._ann_rows = self._ann_max_id = 0
        self.max_id = self.del_seq = 0
        self._ckpt_rows = 0

    def reset(self, ids: I64, vectors: F32, *, max_id: int, del_seq: int, build: bool = True) -> None:
        """Replace everything (full load from arrays)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dimension)
        if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            raise StoreError("vector ids must be strictly ascending")
        with self.mutate_lock:
            self.begin_load(adopt=False)
            self.load_rows(ids, vectors)
            self.finish_load(None, max_id=max_id, del_seq=del_seq, build=build)

    def begin_load(self, *, adopt: bool = True, db_max_id: int = 0) -> int:
        """Start a full load (caller holds ``mutate_lock``); then :meth:`load_rows`, :meth:`finish_load`.

        With ``adopt``, the rows of the directory's vector file covered by its checkpoint are
        taken over when they can be trusted (same store, dimension, ids ascending and not past
        ``db_max_id``, the database's highest chunk id). Returns the highest adopted chunk id:
        the caller loads the rows after it (0 → everything).
        """
        with self.mutate_lock, self._rw.write():
            self._clear()
            got = self._read_checkpoint(db_max_id) if adopt and self.persistent else None
            if got is None:
                self._drop_checkpoint()
                return 0
            ids = got
            n = len(ids)
            self._ids = ids
            self._alive = np.ones(n, dtype=bool)
            self._n = self._live = self._ckpt_rows = n
            self._mat = self._rows.mat
            return int(ids[-1]) if n else 0

    def load_rows(self, ids: I64, vectors: F32) -> None:
        """Append rows during a load (ids ascending, above every id held)."""
        with self.mutate_lock:
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            if not len(ids):
                return
            self._check_order(ids)
            self._append(ids, np.ascontiguousarray(vectors, dtype=np.float32))

    def finish_load(self, live: I64 | None, *, max_id: int, del_seq: int, build: bool = True) -> None:
        """End a load. ``live``: the database's chunk ids up to the adopted id (sorted); adopted
        rows not among them were deleted meanwhile."""
        with self.mutate_lock:
            with self._rw.write():
                if live is not None and self._ckpt_rows:
                    k = self._ckpt_rows
                    alive = np.isin(self._ids[:k], np.asarray(live, dtype=np.int64))
                    self._alive[:k] = alive
                    self._live = int(self._alive[: self._n].sum())
                self.max_id = max_id
                self.del_seq = del_seq
            self._maybe_compact()
            if build:
                self._maybe_build_ann()

    def _check_order(self, ids: I64) -> None:
        last = int(self._ids[self._n - 1]) if self._n else -1
        if int(ids[0]) <= last or (len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1]))):
            raise StoreError("vector delta out of order")

    def apply(
        self, ids: I64, vectors: F32, deleted: I64, *, max_id: int, del_seq: int
    ) -> None:
        """Apply a delta read from the database: new rows (ids > every id held) and deleted ids."""
        with self.mutate_lock:
            self._last_write = time.monotonic()
            if len(ids):
                ids = np.ascontiguousarray(ids, dtype=np.int64)
                self._check_order(ids)
                self._append(ids, np.ascontiguousarray(vectors, dtype=np.float32))
            if len(deleted):
                self._remove(np.asarray(deleted, dtype=np.int64))
            self.max_id = max(self.max_id, max_id)
            self.del_seq = max(self.del_seq, del_seq)
            if self._ann is None:
                self._maybe_build_ann()
            self._maybe_compact()
            if self.persistent and (self._n - self._ckpt_rows) * self._rows.row_bytes >= CHECKPOINT_BYTES:
                self.checkpoint()
            self._kick()

    def _append(self, ids: I64, vectors: F32) -> None:
        m = len(ids)
        if vectors.shape != (m, self.dimension):
            raise StoreError(f"vector delta has shape {vectors.shape}, expected ({m}, {self.dimension})")
        n = self._n
        # rows past _n are read by nobody, so the file write needs no lock but mutate_lock (held);
        # a growth maps the file again, and the new mapping is published under the write lock
        try:
            self._rows.write(n, ids, vectors)
        except OSError as e:
            raise StoreError(f"cannot write the vector file: {e}") from e
        self._publish_rows(n, ids)

    def _publish_rows(self, n: int, ids: I64) -> None:
        """Make rows ``n .. n+len(ids)`` of the vector file (already written) searchable: grow
        the id and liveness arrays when needed, under the write lock with the new mapping."""
        m = len(ids)
        with self._rw.write():
            if n + m > len(self._ids):
                cap = max(n + m, int(len(self._ids) * 1.5) + 1024)
                idarr = np.empty(cap, dtype=np.int64)
                idarr[:n] = self._ids[:n]
                alive = np.zeros(cap, dtype=bool)
                alive[:n] = self._alive[:n]
                self._ids, self._alive = idarr, alive
            self._mat = self._rows.mat
            self._ids[n : n + m] = ids
            self._alive[n : n + m] = True
            self._n = n + m
            self._live += m

    def _rows_of(self, ids: I64) -> I64:
        """Rows of ``ids`` that are present and alive (unknown ids are dropped)."""
        n = self._n
        if not n or not len(ids):
            return np.zeros(0, dtype=np.int64)
        rows: I64 = np.searchsorted(self._ids[:n], ids).astype(np.int64)
        ok = rows < n
        rows = rows[ok]
        ok = (self._ids[rows] == ids[ok]) & self._alive[rows]
        out: I64 = rows[ok]
        return out

    def _remove(self, ids: I64) -> None:
        with self._rw.write():
            rows = self._rows_of(ids)
            if not len(rows):
                return
            rows = np.unique(rows)
            self._alive[rows] = False
            self._live -= len(rows)
            if self._ann is not None:
                in_graph = rows[rows < self._ann_rows]
                if len(in_graph):
                    self._ann.remove(self._ids[in_graph])
                    self.ann_dirty = True

    # ------------------------------------------- shared vector file (system of record)
    def open_shared(self, vec_path: Path, ids_path: Path, *, read_only: bool, gen: int) -> None:
        """Search the store's own vector files (the only copy of the vectors) from now on.

        Forgets every row held; the caller then loads with :meth:`load_shared`. The files are
        written by the store (:meth:`write_shared`) before the transaction recording the rows
        commits, and only ever grow, so every process maps them read-only and shared.
        """
        try:
            new = _RowFile.at(self.dimension, vec_path, ids_path, read_only=read_only)
        except OSError as e:
            raise StoreError(f"cannot open the vector file {vec_path}: {e}") from e
        with self.mutate_lock, self._rw.write():
            old = self._rows
            self._rows = new
            self._clear()
            self._mat = new.mat
            self.shared = True
            self.gen = gen
        old.close()

    def write_shared(self, row: int, ids: I64, vectors: F32) -> None:
        """Write rows ``[row, row + len(ids))`` of the shared files and make them durable.

        Called inside the write transaction, before it commits: a crash before the commit
        leaves rows past the recorded count (overwritten by the next write), never a committed
        row without its vector. Nothing in memory changes until :meth:`apply_shared`.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dimension):
            raise StoreError(f"vectors have shape {vectors.shape}, expected ({len(ids)}, {self.dimension})")
        with self.mutate_lock:
            try:
                self._rows.write(row, np.ascontiguousarray(ids, dtype=np.int64), vectors)
                self._rows.datasync()
            except OSError as e:
                raise StoreError(f"cannot write the vector file: {e}") from e

    def _shared_ids(self, start: int, stop: int) -> I64:
        try:
            ids = self._rows.read_ids(stop, start)
        except (OSError, StoreError) as e:
            raise StoreError(f"the vector file does not match the database: {e}") from e
        last = int(self._ids[start - 1]) if start else 0
        if len(ids) and (int(ids[0]) <= last or not bool(np.all(ids[1:] > ids[:-1]))):
            raise StoreError("the vector file does not match the database (row ids out of order)")
        self._rows.remap()
        if self._rows.cap < stop:
            raise StoreError(
                f"the vector file holds {self._rows.cap} rows, the database records {stop}"
            )
        return ids

    def load_shared(self, rows: int, live: I64, *, max_id: int, del_seq: int, build: bool = True) -> None:
        """Full load from the shared files: rows ``[0, rows)``; ``live`` are the database's chunk
        ids (sorted): rows whose id is not among them are dead (deleted, or written by a
        transaction that never committed)."""
        with self.mutate_lock:
            with self._rw.write():
                gen = self.gen
                self._clear()
                self.gen = gen
                ids = self._shared_ids(0, rows)
                alive = np.isin(ids, np.asarray(live, dtype=np.int64))
                self._ids = ids
                self._alive = alive
                self._n = rows
                self._live = int(alive.sum())
                self._mat = self._rows.mat
                self.max_id = max_id
                self.del_seq = del_seq
            if build:
                self._maybe_build_ann()

    def apply_shared(self, rows: int, deleted: I64, *, max_id: int, del_seq: int) -> None:
        """Take in rows ``[len, rows)`` committed to the shared files (by any process; nothing is
        copied) and the deleted ids."""
        with self.mutate_lock:
            self._last_write = time.monotonic()
            n = self._n
            if rows > n:
                self._publish_rows(n, self._shared_ids(n, rows))
            if len(deleted):
                self._remove(np.asarray(deleted, dtype=np.int64))
            self.max_id = max(self.max_id, max_id)
            self.del_seq = max(self.del_seq, del_seq)
            if self._ann is None:
                self._maybe_build_ann()
            self._kick()

    def dead_rows(self) -> tuple[int, int]:
        """(rows, dead rows) of the vector file."""
        return self._n, self._n - self._live

    def vectors_of(self, ids: I64) -> tuple[I64, F32]:
        """(live ids among ``ids``, their vectors copied out of the file)."""
        with self._rw.read():
            rows = self._rows_of(np.asarray(ids, dtype=np.int64))
            return self._ids[rows].copy(), np.array(self._mat[rows], dtype=np.float32)

    def compact_shared(self, vec_path: Path, ids_path: Path) -> tuple[_RowFile, npt.NDArray[np.bool_]]:
        """Copy the live rows into new files (made durable) and return them, unpublished.

        The caller (holding ``mutate_lock`` and the store's exclusive lock) records the new
        generation in the database, then calls :meth:`adopt_compacted`.
        """
        n = self._n
        keep = self._alive[:n].copy()
        ids = np.ascontiguousarray(self._ids[:n][keep])
        for f in (vec_path, ids_path):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        try:
            new = _RowFile.at(self.dimension, vec_path, ids_path)
            try:
                out = 0
                step = max(1, (8 << 20) // self._rows.row_bytes)
                for start in range(0, n, step):
                    stop = min(n, start + step)
                    sel = keep[start:stop]
                    m = int(sel.sum())
                    if m:
                        new.write(out, ids[out : out + m], self._rows.read(start, stop)[sel])
                        out += m
                new.sync()
            except BaseException:
                new.close()
                raise
        except OSError as e:
            raise StoreError(f"cannot compact the vector file: {e}") from e
        return new, keep

    def adopt_compacted(self, new: _RowFile, keep: npt.NDArray[np.bool_], gen: int) -> None:
        """Switch to the compacted files (caller holds ``mutate_lock``)."""
        with self._rw.write():
            old = self._rows
            self._ann_rows = int(keep[: self._ann_rows].sum())
            ids = np.ascontiguousarray(self._ids[: len(keep)][keep])
            self._rows = new
            self._mat = new.mat
            self._ids = ids
            self._alive = np.ones(len(ids), dtype=bool)
            self._n = self._live = len(ids)
            self.gen = gen
        old.close()

    def _maybe_compact(self) -> None:
        """Rewrite the vector file without dead rows once they are a quarter of it.

        The copy goes block by block through ``pread`` into a new file, outside the write lock
        (rows and mask only change under ``mutate_lock``, which the caller holds); only the swap
        takes the write lock.
        """
        n = self._n
        dead = n - self._live
        if self.shared or n < 1024 or dead * 4 < n:
            return  # the shared file is compacted by the store (it records the new generation)
        keep = self._alive[:n].copy()
        ids = np.ascontiguousarray(self._ids[:n][keep])
        persistent = self.persistent and self._dir is not None
        try:
            if persistent:
                assert self._dir is not None
                new_vec, new_ids = self._dir / (_VEC_NAME + ".new"), self._dir / (_IDS_NAME + ".new")
                for f in (new_vec, new_ids):
                    with contextlib.suppress(FileNotFoundError):
                        f.unlink()
                new = _RowFile.at(self.dimension, new_vec, new_ids)
            else:
                new = _RowFile.private(self.dimension, self._dir)
            try:
                out = 0
                step = max(1, (8 << 20) // self._rows.row_bytes)
                for start in range(0, n, step):
                    stop = min(n, start + step)
                    sel = keep[start:stop]
                    m = int(sel.sum())
                    if m:
                        new.write(out, ids[out : out + m], self._rows.read(start, stop)[sel])
                        out += m
                if persistent:
                    assert self._dir is not None
                    self._drop_checkpoint()  # a crash from here on reloads from the database
                    new.sync()
                    os.replace(new_vec, self._dir / _VEC_NAME)
                    os.replace(new_ids, self._dir / _IDS_NAME)
            except BaseException:
                new.close()
                raise
        except OSError as e:
            raise StoreError(f"cannot compact the vector file: {e}") from e
        with self._rw.write():
            old = self._rows
            self._ann_rows = int(keep[: self._ann_rows].sum())
            self._rows = new
            self._mat = new.mat
            self._ids = ids
            self._alive = np.ones(len(ids), dtype=bool)
            self._n = self._live = len(ids)
            self._ckpt_rows = 0
        old.close()
        if persistent:
            self.checkpoint()

    # ------------------------------------------------------- vector file state
    def _read_checkpoint(self, db_max_id: int) -> I64 | None:
        assert self._dir is not None
        try:
            meta = json.loads((self._dir / _CKPT_NAME).read_text())
        except (OSError, ValueError):
            return None
        try:
            if (
                not isinstance(meta, dict)
                or meta.get("version") != _CKPT_VERSION
                or meta.get("dimension") != self.dimension
                or meta.get("store_id") != self.store_id
            ):
                return None
            n, max_id = int(meta["rows"]), int(meta["max_id"])
            vec_rows, id_rows = self._rows.file_rows()
            if n < 0 or max_id > db_max_id or vec_rows < n or id_rows < n:
                return None
            ids = self._rows.read_ids(n)
        except (KeyError, TypeError, ValueError, OSError, StoreError):
            return None
        if n and (int(ids[-1]) != max_id or int(ids[0]) <= 0 or not bool(np.all(ids[1:] > ids[:-1]))):
            return None
        self._rows.reserve(n)
        return ids

    def _drop_checkpoint(self) -> None:
        if self.persistent and self._dir is not None:
            with contextlib.suppress(FileNotFoundError):
                (self._dir / _CKPT_NAME).unlink()
            self._ckpt_rows = 0

    def checkpoint(self) -> bool:
        """Make the rows appended so far durable (fsync) and record them in ``matrix.json``.

        A later open adopts those rows and reads only newer ones from the database. Only for the
        directory's own vector file; returns True if a checkpoint was written.
        """
        with self.mutate_lock:
            if not self.persistent or self._dir is None or self._rows.cap < 0:
                return False
            n = self._n
            if n == self._ckpt_rows and (self._dir / _CKPT_NAME).exists():
                return False
            try:
                self._rows.sync()
                meta = {
                    "version": _CKPT_VERSION,
                    "dimension": self.dimension,
                    "store_id": self.store_id,
                    "rows": n,
                    "max_id": int(self._ids[n - 1]) if n else 0,
                }
                tmp = self._dir / (_CKPT_NAME + f".{os.getpid()}.tmp")
                with open(tmp, "w") as f:
                    f.write(json.dumps(meta))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self._dir / _CKPT_NAME)
            except OSError as e:
                raise StoreError(f"cannot checkpoint the vector file: {e}") from e
            self._ckpt_rows = n
            return True

    def release(self) -> None:
        """Stop background work and close the vector file (and its lock). The index is unusable after."""
        self.close()
        with self.mutate_lock, self._rw.write():
            self._rows.close()
            self._rows.cap = -1
            self._mat = self._rows.mat
            self._clear()
            if self._lock_fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1
            self.persistent = False

    def _new_ann(self) -> Any:
        assert _UsearchIndex is not None
        return _UsearchIndex(ndim=self.dimension, metric="ip", **self._params)

    def _maybe_build_ann(self) -> None:
        if self.ann_enabled and self._ann is None and self._live >= self.ann_threshold:
            self.build_ann()

    def build_ann(self) -> None:
        """Start a fresh HNSW graph; the background folder fills it once searches want it
        (searches stay exact meanwhile)."""
        if not _HAVE_USEARCH:
            raise StoreError("usearch is not installed; the ANN index is unavailable")
        with self.mutate_lock, self._rw.write():
            self._ann = self._new_ann()
            self._ann_rows = self._ann_max_id = 0
            self.ann_dirty = True
        self._kick()

    # ------------------------------------------------------- background fold
    def _kick(self) -> None:
        if not self._ann_wanted or self._ann is None or self._ann_rows >= self._n or self._closing:
            return
        with self._wake:
            if not self._folding:
                self._folding = True
                self._folder = threading.Thread(
                    target=self._fold_loop, name="parallelrag-hnsw-fold", daemon=True
                )
                self._folder.start()
            self._wake.notify_all()

    def fold_step(self) -> bool:
        """Fold one slice of the tail into the graph. Returns False when nothing was left.

        Runs entirely under the write lock (every other mutation takes it too), so it needs no
        ``mutate_lock``: a writer applying a delta only waits for the current slice.
        """
        with self._rw.write():
            ann = self._ann
            start, n = self._ann_rows, self._n
            if ann is None or start >= n or self._closing:
                return False
            stop = min(n, start + self.FOLD_SLICE)
            alive = self._alive[start:stop]
            if bool(alive.any()):
                # pread, not the mapping: building the graph does not leave the matrix resident
                vectors = self._rows.read(start, stop)[alive]
                ann.add(self._ids[start:stop][alive], vectors, threads=self._threads)
            self._ann_rows = stop
            self._ann_max_id = int(self._ids[stop - 1])
            self.ann_dirty = True
            return True

    def _fold_loop(self) -> None:
        try:
            while True:
                # ingestion first: while writes keep coming and the exact-searched tail is still
                # small, wait; the tail is folded in the pauses (or at once once it grows large)
                if (
                    not self._closing
                    and 0 < self.pending < self.ann_threshold
                    and time.monotonic() - self._last_write < self.WRITE_QUIET_S
                ):
                    time.sleep(self.WRITE_QUIET_S / 2)
                    continue
                t0 = time.perf_counter()
                if self.fold_step():
                    # fairness: Python locks are not FIFO, so yield to waiting searches and
                    # writers (at most half of the time) instead of re-grabbing the locks at once
                    if self._rw.has_waiters():
                        time.sleep(min(0.05, time.perf_counter() - t0))
                    continue
                with self._wake:
                    if not self._closing and self.pending:
                        continue
                    if self._closing or (not self._wake.wait(timeout=5.0) and not self.pending):
                        self._folding = False  # under the lock: a later _kick starts a new one
                        return
        except BaseException as e:  # pragma: no cover - surfaced through wait_for_index()
            self.fold_error = e
            with self._wake:
                self._folding = False

    def wait_for_index(self, timeout: float | None = None) -> bool:
        """Block until every row is in the HNSW graph (True) or ``timeout`` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._ann_wanted = True
        while self.pending:
            if self.fold_error is not None:
                raise StoreError(f"HNSW maintenance failed: {self.fold_error!r}")
            if deadline is not None and time.monotonic() > deadline:
                return False
            if self._closing:
                return False  # closed: the folder is gone
            self._kick()
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Stop the background folder (the part already folded stays valid)."""
        self._closing = True
        with self._wake:
            self._wake.notify_all()
        folder = self._folder
        if folder is not None and folder is not threading.current_thread():
            folder.join(timeout=30)

    # ---------------------------------------------------------------- search
    def search(self, query: F32, k: int, allowed: I64 | None = None) -> tuple[I64, F32]:
        """Top-``k`` (ids, cosine scores), best first. ``allowed``: restrict to these chunk ids."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(self.dimension)
        if self._ann is not None and self.pending and not self._folding:
            self._ann_wanted = True  # the first search starts filling the graph
            self._kick()
        with self._rw.read():
            if k <= 0 or not self._live:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            rows = None if allowed is None else self._rows_of(np.asarray(allowed, dtype=np.int64))
            if rows is not None and len(rows) <= self.ann_threshold:
                return self._exact_rows(q, k, rows)
            # the graph pays off only when a small part of the collection is wanted and most
            # rows are already folded in; otherwise one exact pass is as fast and exact
            if self._ann is not None and self._ann_rows * 2 >= self._n and k * 8 <= self._live:
                got = self._ann_search(q, k, rows)
                if got is not None:
                    return got
            if rows is not None:
                return self._exact_rows(q, k, rows)
            return self._exact_all(q, k)

    def _top(self, scores: F32, k: int) -> I64:
        k = min(k, len(scores))
        if k <= 0:
            return np.zeros(0, np.int64)
        part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        order = np.argsort(-scores[part], kind="stable")
        return part[order].astype(np.int64)

    def _exact_all(self, q: F32, k: int) -> tuple[I64, F32]:
        n = self._n
        scores: F32 = self._mat[:n] @ q  # BLAS mat-vec on a view: no copy of the matrix
        if self._live < n:
            scores[~self._alive[:n]] = -np.inf
        top = self._top(scores, min(k, self._live))
        return self._ids[top].copy(), scores[top]

    def _exact_rows(self, q: F32, k: int, rows: I64) -> tuple[I64, F32]:
        if not len(rows):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if len(rows) * 4 > self._n:
            scores_all: F32 = self._mat[: self._n] @ q
            scores = scores_all[rows]
        else:
            scores = self._mat[rows] @ q  # copies only the (small) allowed subset
        top = self._top(scores, k)
        return self._ids[rows[top]].copy(), scores[top]

    def _ann_search(self, q: F32, k: int, rows: I64 | None) -> tuple[I64, F32] | None:
        """Graph search over rows [0, ann_rows) + exact search over the tail, merged."""
        split = self._ann_rows
        if rows is None:
            fetch = k
        else:
            fetch = min(self._live, max(k * 4, int(k * self._live / max(1, len(rows)) * 2)))
        res = self._ann.search(q, fetch)
        found = self._rows_of(np.asarray(res.keys, dtype=np.int64))  # drops anything not live
        if rows is not None:
            found = found[np.isin(found, rows)]
            if len(found) < k and len(found) < int((rows < split).sum()):
                return None  # selective filter: the caller falls back to exact over the subset
        tail = np.arange(split, self._n, dtype=np.int64)
        tail = tail[self._alive[split : self._n]]
        if rows is not None:
            tail = tail[np.isin(tail, rows)]
        cand = np.concatenate([found, tail]) if len(tail) else found
        scores: F32 = self._mat[cand] @ q
        top = self._top(scores, k)
        return self._ids[cand[top]].copy(), scores[top]

    def scores_for(self, ids: I64, query: F32) -> dict[int, float]:
        """Exact cosine of ``query`` with each live id in ``ids``."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(self.dimension)
        with self._rw.read():
            rows = self._rows_of(np.asarray(ids, dtype=np.int64))
            s = self._mat[rows] @ q
            return {int(i): float(v) for i, v in zip(self._ids[rows], s, strict=True)}

    # ----------------------------------------------------------- persistence
    def save_ann(self, directory: Path) -> bool:
        """Persist the graph (if any) atomically next to the database. Returns True if written.

        The saved position is (highest folded id, deletion sequence): rows after it are added
        again at the next open.
        """
        with self.mutate_lock, self._rw.read():  # the fold cannot move while we save
            if self._ann is None or not self.ann_dirty or not self._ann_rows:
                return False
            directory = Path(directory)
            name = f"vectors-{self._ann_max_id}-{self.del_seq}-{os.getpid()}.usearch"
            tmp = directory / (name + ".tmp")
            self._ann.save(str(tmp))
            os.replace(tmp, directory / name)
            meta = {
                "kind": _KIND_ANN,
                "file": name,
                "dimension": self.dimension,
                "params": self._params,
                "max_id": self._ann_max_id,
                "del_seq": self.del_seq,
                "count": len(self._ann),
            }
            meta_tmp = directory / (_META_NAME + f".{os.getpid()}.tmp")
            meta_tmp.write_text(json.dumps(meta))
            os.replace(meta_tmp, directory / _META_NAME)
            for old in directory.glob("vectors-*.usearch"):
                if old.name != name:
                    with contextlib.suppress(OSError):
                        old.unlink()
            self.ann_dirty = False
            return True

    @staticmethod
    def read_meta(directory: Path) -> dict[str, Any] | None:
        try:
            meta = json.loads((Path(directory) / _META_NAME).read_text())
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def load_ann(self, directory: Path, meta: dict[str, Any], deleted_since: I64) -> bool:
        """Adopt a saved graph and bring it up to date with the (already loaded) matrix.

        ``deleted_since``: chunk ids deleted after ``meta['del_seq']`` (removed from the graph now);
        rows newer than ``meta['max_id']`` are folded in by the background thread. Returns False
        (index left exact) when the file is unusable; the caller then rebuilds.
        """
        if not self.ann_enabled:
            return False
        if (
            meta.get("kind") != _KIND_ANN
            or meta.get("dimension") != self.dimension
            or meta.get("params") != self._params
        ):
            return False
        try:
            ann = _UsearchIndex.restore(str(Path(directory) / str(meta["file"])))
        except Exception:
            return False
        if ann is None or len(ann) != meta.get("count") or ann.ndim != self.dimension:
            return False
        saved_max = int(meta["max_id"])
        with self.mutate_lock:
            n = self._n
            split = int(np.searchsorted(self._ids[:n], saved_max, side="right"))
            if len(deleted_since):
                ann.remove(np.asarray(deleted_since, dtype=np.int64))
            if len(ann) != int(self._alive[:split].sum()):
                return False
            with self._rw.write():
                self._ann = ann
                self._ann_rows = split
                self._ann_max_id = saved_max
                self.ann_dirty = bool(len(deleted_since))
        self._kick()
        return True


#: Indexes whose background folder may be running: stopped at interpreter exit, so that no native
#: HNSW call is still running in a daemon thread while the interpreter tears down (that aborts
#: the process with "terminate called without an active exception").
_live_indexes: weakref.WeakSet[VectorIndex] = weakref.WeakSet()


def _close_live_indexes() -> None:
    for index in list(_live_indexes):
        try:
            index.close()
        except Exception:  # pragma: no cover - best effort at exit
            pass


atexit.register(_close_live_indexes)
