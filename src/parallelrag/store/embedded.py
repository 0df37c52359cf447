"""The embedded store: one directory, SQLite (WAL) plus a mapped vector file, each vector stored once.

Layout of ``path/``::

    store.sqlite              documents, chunks (text, context, metadata and the vector's key:
                              sha256 of the embedded text, for reuse; no vector), manifest (index
                              config, the vector file's generation and committed row count),
                              FTS5 index over context + text, deletion log; 16 KB pages
    matrix-<gen>-f32.bin      the vectors (their only copy): one float32 row per chunk, in id
    matrix-<gen>-ids.bin      order, and each row's chunk id; rows are appended, never moved,
                              except by a compaction, which writes generation <gen> + 1
    store.lock                flock: shared by every open store, exclusive for a compaction
    vectors.meta.json         which ANN file is current and which DB position it reflects
    vectors-<pos>.usearch     the HNSW graph (derived; rebuilt or caught up at open)

A store made with ``vector_file=False`` keeps the vectors in the chunk rows instead (as stores
of earlier releases did); the first writable open with the vector file on moves them into it.

Memory: the vectors are not held in the process heap. Appends are plain file writes, searches
read the page cache through the mapping, and the HNSW graph is only filled once searches want it
(see :mod:`parallelrag.store.vectors`), so ingesting a large corpus runs in bounded memory.

Crash safety: every write is one SQLite transaction (``BEGIN IMMEDIATE`` … ``COMMIT``). Triggers
keep the FTS5 index and the deletion log in the same transaction as the chunk rows, so a kill -9
at any point leaves either the old or the new version of each document. Inside that transaction,
after inserting the chunk rows, the writer appends their vectors to the vector file, makes them
durable (``fdatasync``) and records the new row count in the manifest; only then does it commit.
A crash before the commit leaves rows past the recorded count, which nothing refers to and the
next write overwrites; a committed chunk always has its vector. The rows of deleted chunks stay
in the file, dead, until they are a quarter of it: then a writer that is the only open store
(it gets ``store.lock`` exclusively) copies the live rows into the next generation of the files,
records it in one transaction and deletes the old ones (files of a compaction killed halfway are
deleted at a later open). Every process maps the same file read-only, so opening reads only the
row ids (8 bytes a chunk), and readers in other processes see each commit's rows in place. The
in-memory part of the vector index follows the database: chunk ids come from ``AUTOINCREMENT`` (never reused, ascending in
commit order), so the position ``(highest chunk id, highest deletion sequence)`` identifies what
an in-memory index or a saved ANN file reflects, and catching up is "rows with a higher id" plus
"deletions with a higher sequence".

Concurrency: each thread reads through its own connection (WAL readers never block the writer
or each other); writes go through one writer connection under a lock (other processes wait on
``busy_timeout``). Every search runs inside one read transaction: it first brings the in-memory
index up to that snapshot (changes by other processes are picked up there), then fetches rows
from the same snapshot, so a result never mixes two versions of a document.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from math import log
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from parallelrag.documents import Chunk
from parallelrag.errors import ConfigError, StoreError

from ._common import (
    apply_fused,
    check_manifest,
    document_record,
    fetch_document_row,
    filter_items,
    unpack_item,
)
from ._common import loads_metadata as _loads
from .base import (
    CentroidCache,
    DocumentItem,
    DocumentRecord,
    Filter,
    Hit,
    centroids,
    embed_text,
    text_key,
)
from .vectors import DEFAULT_ANN_THRESHOLD, VectorIndex, _RowFile

try:
    import fcntl as _fcntl
except ImportError:  # pragma: no cover - not POSIX
    _fcntl = None  # type: ignore[assignment]

__all__ = ["SCHEMA_VERSION", "EmbeddedStore", "fts5_available"]

#: 2: the vectors are in the vector file, not the chunk rows (earlier releases cannot read it).
SCHEMA_VERSION = 2
DB_NAME = "store.sqlite"
_MAX_QUERY_TERMS = 64
_POSTFILTER_MAX = 4096  # nearest neighbours checked against a filter before scanning for it
_DELETION_LOG_KEEP = 100_000  # prune the deletion log beyond twice this many rows
_LOAD_BATCH = 4096  # vector rows read from the database at a time (bounded memory at open)
_WORD = re.compile(r"\w+", re.UNICODE)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
_NO_IDS: I64 = np.zeros(0, dtype=np.int64)
_NO_VECS: F32 = np.zeros(0, dtype=np.float32)


def fts5_available() -> bool:
    """Whether this Python's sqlite3 was built with FTS5."""
    try:
        con = sqlite3.connect(":memory:")
        try:
            con.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
        finally:
            con.close()
    except sqlite3.OperationalError:
        return False
    return True


_HAVE_FTS5 = fts5_available()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    source TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    n_chunks INTEGER NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    idx INTEGER NOT NULL,
    start_off INTEGER NOT NULL,
    end_off INTEGER NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    vector BLOB NOT NULL,
    context TEXT NOT NULL DEFAULT '',
    vkey BLOB
);
CREATE INDEX IF NOT EXISTS chunks_source ON chunks(source);
CREATE TABLE IF NOT EXISTS deletions (seq INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS chunks_log_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO deletions(chunk_id) VALUES (old.id);
END;
CREATE TRIGGER IF NOT EXISTS chunks_no_update BEFORE UPDATE ON chunks BEGIN
    SELECT RAISE(ABORT, 'chunks are immutable: delete and insert');
END;
"""

# the keyword index covers each chunk's context and text (a store made before chunks had a
# context keeps its text-only index: CREATE ... IF NOT EXISTS leaves it as it is)
_FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, context, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text, context) VALUES (new.id, new.text, new.context);
END;
CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text, context)
        VALUES ('delete', old.id, old.text, old.context);
END;
"""
# columns added after the first release, for stores made before them
_MIGRATIONS = (
    ("context", "ALTER TABLE chunks ADD COLUMN context TEXT NOT NULL DEFAULT ''"),
    ("vkey", "ALTER TABLE chunks ADD COLUMN vkey BLOB"),
)
_KEY_BATCH = 500  # keys per vectors_by_key statement
_PAGE_SIZE = 16384  # page size of new databases (see _init)
_LOCK_NAME = "store.lock"  # flock: shared by every open store, exclusive to compact the vector file
_LEGACY_FILES = ("matrix-f32.bin", "matrix-ids.bin", "matrix.json")  # the derived copy of old stores
_NO_UPDATE_TRIGGER = """
CREATE TRIGGER IF NOT EXISTS chunks_no_update BEFORE UPDATE ON chunks BEGIN
    SELECT RAISE(ABORT, 'chunks are immutable: delete and insert');
END;
"""

#: Test hook, called with the name of a point where a crash must be harmless (the crash tests
#: kill the process there): "vectors-written" (inside a write transaction, its vectors durable
#: in the vector file, before the commit), "compaction-written" (the next generation's files
#: durable, not yet recorded), "compaction-committed" (recorded, the old files not yet deleted).
_test_hook: Callable[[str], None] | None = None


def _fsync_dir(path: Path) -> None:
    """Make new directory entries durable (the vector files a commit is about to refer to)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - not POSIX
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _vector_paths(path: Path, gen: int) -> tuple[Path, Path]:
    return path / f"matrix-{gen}-f32.bin", path / f"matrix-{gen}-ids.bin"


def on_read_only_media(path: str | os.PathLike[str]) -> bool:
    """Whether the store folder ``path`` is on a read-only file system, or this process cannot
    write it or its database: the store there can only be opened ``read_only``."""
    p = Path(path)
    try:
        if os.statvfs(p).f_flag & os.ST_RDONLY:
            return True
        return not (os.access(p, os.W_OK) and os.access(p / DB_NAME, os.W_OK))
    except OSError:
        return False


def _damage_hint(exc: sqlite3.DatabaseError) -> str:
    """What to do about a damaged database file (SQLite's "database disk image is malformed",
    "file is not a database"); nothing for errors that are not damage (a file that cannot be
    opened, a lock: OperationalError)."""
    if isinstance(exc, sqlite3.OperationalError):
        return ""
    return (" (the index is damaged: restore its folder from a backup, or delete the folder "
            "and ingest again)")


def _wal_pending(db: Path) -> bool:
    """Whether the database has a WAL file with commits not yet checkpointed into it (an
    ``immutable`` open would ignore them)."""
    try:
        return db.with_name(db.name + "-wal").stat().st_size > 0
    except OSError:
        return False


def _check_not_emptied(path: Path, db: Path) -> None:
    """Refuse a database that was emptied under a built index (truncated to 0 bytes by a copy
    that ran out of disk, a sync tool's placeholder): SQLite would take it for a new database,
    hiding the loss and deleting the vector files. A new store's database is empty only until
    its first commit, which sits in the WAL file beside it until a checkpoint."""
    try:
        if db.stat().st_size > 0:
            return
        wal = db.with_name(db.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            return
        built = (path / "index.json").exists() or any(
            f.stat().st_size > 0 for f in path.glob("matrix-*-ids.bin"))
    except OSError:
        return  # unreadable: opening reports it
    if built:
        raise StoreError(f"{db} is empty (0 bytes) but the folder holds an index built before: "
                         "the database was truncated or replaced; restore it from a backup, or "
                         "delete the folder and ingest again")


def _vector_file_default() -> bool:
    env = os.environ.get("PARALLELRAG_VECTOR_FILE", "1").strip().lower()
    if env not in ("0", "1", "true", "false", "yes", "no", "on", "off", ""):
        raise ConfigError(f"PARALLELRAG_VECTOR_FILE must be 0 or 1, got {env!r}")
    return env not in ("0", "false", "no", "off")


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run a multi-statement script inside the current transaction (executescript would commit)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            conn.execute(buf)
            buf = ""
    if buf.strip():
        raise StoreError("incomplete schema statement")


def _dumps(obj: Mapping[str, Any]) -> str:
    try:
        return orjson.dumps(dict(obj), option=orjson.OPT_NON_STR_KEYS, default=str).decode()
    except TypeError as e:
        raise ConfigError(f"metadata is not JSON-serialisable: {e}") from e


def _glob(pattern: str, value: str) -> int:
    return 1 if fnmatch.fnmatchcase(value, pattern) else 0


def _fts_query(text: str) -> str | None:
    """Any user string → a safe FTS5 query: each word quoted, OR-ed (BM25 ranks the matches)."""
    terms: list[str] = []
    seen: set[str] = set()
    for word in _WORD.findall(text):
        w = word.lower()
        if w not in seen:
            seen.add(w)
            terms.append('"' + word.replace('"', '""') + '"')
        if len(terms) >= _MAX_QUERY_TERMS:
            break
    return " OR ".join(terms) if terms else None


class _Where:
    """A compiled filter: SQL over ``chunks c`` plus its parameters."""

    def __init__(self, where: Filter | None) -> None:
        clauses: list[str] = []
        params: list[Any] = []
        for key, value in filter_items(where):
            if key == "source":
                # via the documents table: a glob over documents, then the chunks_source index
                clauses.append("c.source IN (SELECT source FROM documents WHERE pr_glob(?, source))")
                params.append(value)
                continue
            path = '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
            if value is None:
                clauses.append("json_type(c.metadata, ?) = 'null'")
                params.append(path)
            elif isinstance(value, bool):
                clauses.append("json_type(c.metadata, ?) = ?")
                params += [path, "true" if value else "false"]
            elif isinstance(value, int | float | str):
                clauses.append(
                    "json_extract(c.metadata, ?) = ? AND json_type(c.metadata, ?) NOT IN ('true', 'false')"
                )
                params += [path, value, path]
            else:
                raise ConfigError(
                    f"filter value for {key!r} must be str, int, float, bool or None, got {type(value).__name__}"
                )
        self.sql = " AND ".join(clauses) if clauses else "1"
        self.params: list[Any] = params
        self.empty = not clauses


class EmbeddedStore:
    """SQLite + in-memory vectors; see the module docstring. Create with :meth:`open`."""

    def __init__(
        self,
        path: Path,
        *,
        dimension: int,
        model_id: str,
        read_only: bool,
        ann_threshold: int,
        ann: bool,
        busy_timeout_s: float,
        persist_ann: bool,
        vector_file: bool = True,
    ) -> None:
        self._path = path
        self._db = path / DB_NAME
        self._dimension = dimension
        self._model_id = model_id
        self._read_only = read_only
        self._busy_ms = int(busy_timeout_s * 1000)
        self._persist_ann = persist_ann and not read_only
        self._closed = False
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._fts = False
        self._vector_file = vector_file
        #: "file": the vectors are only in the directory's vector file (written before each
        #: commit); "sqlite": only in the chunk rows (read into a private file at every open).
        self._layout = "sqlite"
        self._centroids = CentroidCache()
        self._lock_fd = -1
        # read-only openers keep a private vector file outside the directory (it may be read-only)
        self._index = VectorIndex(
            dimension,
            ann_threshold=ann_threshold,
            ann=ann,
            directory=None if read_only else path,
            persist=False,
        )

    # ------------------------------------------------------------------ open
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        dimension: int,
        model_id: str,
        create: bool = True,
        read_only: bool = False,
        ann_threshold: int | None = None,
        ann: bool = True,
        busy_timeout_s: float = 30.0,
        persist_ann: bool = True,
        vector_file: bool | None = None,
    ) -> EmbeddedStore:
        """Open (or create) the store in directory ``path``.

        ``vector_file`` (default ``PARALLELRAG_VECTOR_FILE``, on): keep the vectors in the
        directory's vector file (``matrix-<gen>-*.bin``), their only copy, mapped by every
        process that opens the store; a store that has them in the database is migrated in
        place by the first writable open. Off, a new store keeps them in the chunk rows instead
        and every open reads all of them into a private, unnamed file, so opening takes time in
        proportion to the number of vectors (see ``benchmarks/index_size.py``); a store that
        already has a vector file keeps it.
        ``ann_threshold``: live vectors from which an HNSW index is used (default 20,000, or
        ``PARALLELRAG_ANN_THRESHOLD``); ``ann=False`` keeps search exact. ``read_only`` opens the
        database read-only (another process may be writing; its commits become visible).
        Raises :class:`ConfigError` when the store was built with another model or dimension and
        :class:`StoreError` when it is missing and ``create`` is false, or unreadable.
        """
        if not isinstance(dimension, int) or dimension <= 0:
            raise ConfigError(f"dimension must be a positive int, got {dimension!r}")
        if not model_id:
            raise ConfigError("model_id must be a non-empty string")
        if ann_threshold is None:
            env = os.environ.get("PARALLELRAG_ANN_THRESHOLD")
            try:
                ann_threshold = int(env) if env else DEFAULT_ANN_THRESHOLD
            except ValueError as e:
                raise ConfigError(f"PARALLELRAG_ANN_THRESHOLD must be an int, got {env!r}") from e
        p = Path(path)
        db = p / DB_NAME
        if not db.exists():
            if not create or read_only:
                raise StoreError(f"no store at {p} (missing {DB_NAME})")
            if p.exists() and not p.is_dir():
                raise StoreError(f"{p} exists and is not a directory")
            p.mkdir(parents=True, exist_ok=True)
        else:
            _check_not_emptied(p, db)
        store = cls(
            p,
            dimension=dimension,
            model_id=model_id,
            read_only=read_only,
            ann_threshold=ann_threshold,
            ann=ann,
            busy_timeout_s=busy_timeout_s,
            persist_ann=persist_ann,
            vector_file=_vector_file_default() if vector_file is None else vector_file,
        )
        try:
            store._init()
        except BaseException:
            store._close_connections()
            store._index.release()
            store._unlock()
            raise
        return store

    def _connect(self) -> sqlite3.Connection:
        try:
            if self._read_only:
                conn = sqlite3.connect(
                    f"{self._db.resolve().as_uri()}?mode=ro{self._immutable_flag()}",
                    uri=True,
                    timeout=self._busy_ms / 1000,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                conn = sqlite3.connect(
                    self._db,
                    timeout=self._busy_ms / 1000,
                    isolation_level=None,
                    check_same_thread=False,
                )
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            if not self._read_only:
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.create_function("pr_glob", 2, _glob, deterministic=True)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"cannot open {self._db}: {e}{_damage_hint(e)}") from e
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _immutable_flag(self) -> str:
        """``&immutable=1`` for a store on read-only media (a read-only mount, a directory this
        process cannot write): SQLite cannot create the WAL index file there, so a plain
        read-only open fails. Only when no WAL file with pending commits exists, since an
        immutable open ignores it; nobody can write to such a directory anyway."""
        if os.access(self._path, os.W_OK):
            return ""
        wal = self._db.with_name(self._db.name + "-wal")
        try:
            if wal.stat().st_size > 0:
                return ""
        except OSError:
            pass
        return "&immutable=1"

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("store is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _writer_conn(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("store is closed")
        if self._read_only:
            raise StoreError(f"the index at {self._path} is read-only (opened read-only, or on "
                             "read-only media): it can be searched but not changed")
        if self._writer is None:
            self._writer = self._connect()
        return self._writer

    # ------------------------------------------------------------ file lock
    def _lock_shared(self) -> None:
        """Hold the directory's lock shared while open: the vector file is only compacted (a new
        generation written, the old one deleted) by a store holding it exclusively."""
        if _fcntl is None:  # pragma: no cover
            return
        if self._lock_fd < 0:
            try:
                flags = os.O_RDONLY if self._read_only else os.O_RDWR | os.O_CREAT
                self._lock_fd = os.open(self._path / _LOCK_NAME, flags, 0o644)
            except OSError:
                return  # a read-only directory nobody ever wrote a lock into: nobody compacts
        _fcntl.flock(self._lock_fd, _fcntl.LOCK_SH)

    def _try_exclusive(self) -> bool:
        """Whether no other open store (in any process) shares the lock; on False the shared
        lock is held again."""
        if _fcntl is None or self._lock_fd < 0:  # pragma: no cover
            return False
        try:
            _fcntl.flock(self._lock_fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except OSError:
            # a failed conversion drops the shared lock (flock(2)): take it again
            _fcntl.flock(self._lock_fd, _fcntl.LOCK_SH)
            return False
        return True

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = -1

    # ------------------------------------------------------------ vector file
    @staticmethod
    def _vec_state(conn: sqlite3.Connection) -> tuple[int, int]:
        """(generation of the vector file, rows committed to it) in ``conn``'s snapshot; (0, 0)
        for a store whose vectors are in the database."""
        got = dict(
            conn.execute(
                "SELECT key, value FROM manifest WHERE key IN ('vector_gen', 'vector_rows')"
            ).fetchall()
        )
        return int(got.get("vector_gen", 0)), int(got.get("vector_rows", 0))

    def _setup_layout(self, conn: sqlite3.Connection) -> bool:
        """Inside the opening write transaction: pick the vector layout, moving the vectors of a
        store that keeps them in the database into the vector file when ``vector_file`` is on.
        Returns True if it moved them (the caller then vacuums)."""
        gen, _ = self._vec_state(conn)
        if gen:
            self._layout = "file"
            return False
        if not self._vector_file:
            self._layout = "sqlite"
            return False
        vec_path, ids_path = _vector_paths(self._path, 1)
        for f in (vec_path, ids_path):  # left by a migration that never committed
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        try:
            rf = _RowFile.at(self._dimension, vec_path, ids_path)
            try:
                rows = 0
                for ids, mat in self._read_vectors(conn, 0):
                    rf.write(rows, ids, mat)
                    rows += len(ids)
                rf.sync()
            finally:
                rf.close()
            _fsync_dir(self._path)
        except OSError as e:
            raise StoreError(f"cannot write the vector file {vec_path}: {e}") from e
        moved = rows > 0
        if moved:  # the rows keep an empty vector: the file is now the only copy
            conn.execute("DROP TRIGGER IF EXISTS chunks_no_update")
            conn.execute("UPDATE chunks SET vector = x''")
            _run_script(conn, _NO_UPDATE_TRIGGER)
        conn.executemany(
            "INSERT INTO manifest(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [("vector_gen", "1"), ("vector_rows", str(rows)), ("schema_version", "2")],
        )
        self._layout = "file"
        return moved

    def _remove_stale_generations(self, conn: sqlite3.Connection) -> None:
        """Delete vector files of other generations (left by a compaction killed before or
        just after its commit), when no other store has the directory open."""
        if not self._try_exclusive():
            return
        try:
            gen = self._vec_state(conn)[0]
            current = set(_vector_paths(self._path, gen))
            for f in self._path.glob("matrix-*-*.bin"):
                if f not in current:
                    with contextlib.suppress(OSError):
                        f.unlink()
        finally:
            if _fcntl is not None and self._lock_fd >= 0:
                _fcntl.flock(self._lock_fd, _fcntl.LOCK_SH)

    def _init(self) -> None:
        self._lock_shared()
        migrated = False
        if not self._read_only:
            conn = self._writer_conn()
            try:
                if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
                    # a new database: pages large enough that chunk rows (text + a float32
                    # vector, 2-3 KB) pack densely; with 4 KB pages a row over 2 KB took a
                    # page of its own (about 4.2 KB per chunk instead of 2.5)
                    conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.DatabaseError as e:
                raise StoreError(f"{self._db} is not a usable SQLite database: "
                                 f"{e}{_damage_hint(e)}") from e
            if str(mode).lower() != "wal":
                raise StoreError(f"could not switch {self._db} to WAL (journal_mode={mode})")
            with self._write_lock:
                self._begin_write(conn)
                try:
                    _run_script(conn, _SCHEMA)
                    cols = {r[1] for r in conn.execute("PRAGMA table_info(chunks)")}
                    for col, ddl in _MIGRATIONS:
                        if col not in cols:
                            conn.execute(ddl)
                    conn.execute("CREATE INDEX IF NOT EXISTS chunks_vkey ON chunks(vkey)")
                    has_fts = self._has_table(conn, "chunks_fts")
                    n_chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
                    if _HAVE_FTS5 and (has_fts or n_chunks == 0):
                        _run_script(conn, _FTS_SCHEMA)
                    self._check_manifest(conn, create=True)
                    migrated = self._setup_layout(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
            if self._layout == "file":
                for name in _LEGACY_FILES:
                    with contextlib.suppress(OSError):
                        (self._path / name).unlink()
                self._remove_stale_generations(conn)
            if migrated:
                with contextlib.suppress(sqlite3.Error):  # best effort: only space is at stake
                    conn.execute("VACUUM")  # give the space of the moved vectors back
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn = self._reader()
        try:
            conn.execute("BEGIN")
            has_manifest = self._has_table(conn, "manifest")
        except sqlite3.Error as e:  # e.g. a WAL store whose index file cannot be created
            self._rollback(conn)
            raise StoreError(f"cannot read {self._db}: {e}") from e
        try:
            if not has_manifest:
                raise StoreError(f"{self._db} is not a parallelrag store")
            self._check_manifest(conn, create=False)
            if self._read_only:
                self._layout = "file" if self._vec_state(conn)[0] else "sqlite"
            self._fts = self._has_table(conn, "chunks_fts")
            if self._fts and not _HAVE_FTS5:
                raise StoreError(
                    "this store has an FTS5 keyword index but this Python's sqlite3 lacks FTS5"
                )
            self._load_vectors(conn)
        finally:
            conn.execute("COMMIT")

    @staticmethod
    def _has_table(conn: sqlite3.Connection, name: str) -> bool:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        return row is not None

    def _check_manifest(self, conn: sqlite3.Connection, *, create: bool) -> None:
        rows = dict(conn.execute("SELECT key, value FROM manifest").fetchall())
        if not rows:
            if not create:
                raise StoreError(f"{self._db} has no manifest")
            conn.executemany(
                "INSERT INTO manifest(key, value) VALUES (?, ?)",
                [
                    ("schema_version", str(SCHEMA_VERSION)),
                    ("model_id", self._model_id),
                    ("dimension", str(self._dimension)),
                    ("generation", "0"),
                    ("deletions_pruned_through", "0"),
                    ("created_at", repr(time.time())),
                ],
            )
            return
        check_manifest(
            rows,
            schema_version=SCHEMA_VERSION,
            model_id=self._model_id,
            dimension=self._dimension,
            kind="store",
            subject=f"store at {self._path}",
            remedy="a new index directory",
        )

    # ------------------------------------------------------- vector syncing
    @staticmethod
    def _position(conn: sqlite3.Connection) -> tuple[int, int]:
        seqs = dict(
            conn.execute(
                "SELECT name, seq FROM sqlite_sequence WHERE name IN ('chunks', 'deletions')"
            ).fetchall()
        )
        return int(seqs.get("chunks", 0)), int(seqs.get("deletions", 0))

    @staticmethod
    def _pruned_through(conn: sqlite3.Connection) -> int:
        row = conn.execute(
            "SELECT value FROM manifest WHERE key = 'deletions_pruned_through'"
        ).fetchone()
        return int(row[0]) if row else 0

    def _read_vectors(self, conn: sqlite3.Connection, after_id: int) -> Iterator[tuple[I64, F32]]:
        """The vectors of chunks with id > ``after_id``, in id order, ``_LOAD_BATCH`` rows at a time."""
        row_bytes = self._dimension * 4
        cur = conn.execute("SELECT id, vector FROM chunks WHERE id > ? ORDER BY id", (after_id,))
        while True:
            rows = cur.fetchmany(_LOAD_BATCH)
            if not rows:
                return
            for cid, blob in rows:
                if len(blob) != row_bytes:
                    raise StoreError(f"chunk {cid}: vector blob has {len(blob)} bytes, expected {row_bytes}")
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32)
            yield ids, mat.reshape(len(rows), self._dimension)

    def _reload_vectors(self, conn: sqlite3.Connection, *, adopt: bool, build: bool) -> None:
        """Full (re)load of the vector index from ``conn``'s snapshot (caller holds mutate_lock).

        With ``adopt``, the durable rows of the directory's vector file are kept (deletions since
        are read as the set of live ids) and only newer rows are read from the database.
        """
        max_id, del_seq = self._position(conn)
        index = self._index
        if self._layout == "file":
            gen, rows = self._vec_state(conn)
            if not index.shared or index.gen != gen:
                vec_path, ids_path = _vector_paths(self._path, gen)
                index.open_shared(vec_path, ids_path, read_only=self._read_only, gen=gen)
            cur = conn.execute("SELECT id FROM chunks ORDER BY id")
            live_ids = np.fromiter((r[0] for r in cur), dtype=np.int64)
            index.load_shared(rows, live_ids, max_id=max_id, del_seq=del_seq, build=build)
            return
        row = conn.execute("SELECT value FROM manifest WHERE key = 'created_at'").fetchone()
        index.store_id = f"{self._model_id}|{row[0] if row else ''}"
        adopted = index.begin_load(adopt=adopt, db_max_id=max_id)
        for ids, mat in self._read_vectors(conn, adopted):
            index.load_rows(ids, mat)
        live = None
        if adopted:
            cur = conn.execute("SELECT id FROM chunks WHERE id <= ? ORDER BY id", (adopted,))
            live = np.fromiter((r[0] for r in cur), dtype=np.int64)
        index.finish_load(live, max_id=max_id, del_seq=del_seq, build=build)

    def _load_vectors(self, conn: sqlite3.Connection) -> None:
        """Full load at open (inside a read transaction), then adopt or build the ANN index."""
        index = self._index
        with index.mutate_lock:
            self._reload_vectors(conn, adopt=True, build=False)
            if not index.ann_enabled or len(index) < index.ann_threshold:
                return
            meta = VectorIndex.read_meta(self._path)
            loaded = False
            if meta is not None and int(meta.get("del_seq", -1)) >= self._pruned_through(conn):
                deleted = np.array(
                    [
                        r[0]
                        for r in conn.execute(
                            "SELECT chunk_id FROM deletions WHERE seq > ?", (int(meta["del_seq"]),)
                        )
                    ],
                    dtype=np.int64,
                )
                loaded = index.load_ann(self._path, meta, deleted)
            self.ann_loaded_from_disk = loaded
            if not loaded:
                index.build_ann()  # filled in the background; searches are exact until then

    #: Whether the last open adopted a saved ANN index (True) or built one (False).
    ann_loaded_from_disk: bool = False

    def _refresh(self, conn: sqlite3.Connection) -> None:
        """Bring the in-memory index up to ``conn``'s snapshot (call inside a read transaction)."""
        index = self._index
        max_id, del_seq = self._position(conn)
        if self._layout == "file":
            gen, rows = self._vec_state(conn)
            if gen < index.gen:
                return  # the index is on a compacted file, ahead of this (older) snapshot
            if gen > index.gen:
                with index.mutate_lock:
                    if gen > index.gen:
                        self._reload_vectors(conn, adopt=False, build=True)
                return
        if max_id <= index.max_id and del_seq <= index.del_seq:
            return  # up to date, or the index is already ahead of this snapshot
        with index.mutate_lock:
            if max_id <= index.max_id and del_seq <= index.del_seq:
                return
            if max_id < index.max_id or del_seq < index.del_seq:
                return  # another thread moved the index past this (older) snapshot
            if self._layout == "file" and gen != index.gen:
                return  # compacted meanwhile: the index is past this snapshot
            if self._pruned_through(conn) > index.del_seq:
                self._reload_vectors(conn, adopt=False, build=True)
                return
            deleted = np.array(
                [
                    r[0]
                    for r in conn.execute(
                        "SELECT chunk_id FROM deletions WHERE seq > ? AND seq <= ?",
                        (index.del_seq, del_seq),
                    )
                ],
                dtype=np.int64,
            )
            if self._layout == "file":  # the new rows are already in the shared file
                index.apply_shared(rows, deleted, max_id=max_id, del_seq=del_seq)
                return
            # new rows in batches (a reader far behind a writer does not load them all at once)
            for ids, mat in self._read_vectors(conn, index.max_id):
                index.apply(ids, mat, _NO_IDS, max_id=int(ids[-1]), del_seq=index.del_seq)
            index.apply(_NO_IDS, _NO_VECS.reshape(0, self._dimension), deleted, max_id=max_id, del_seq=del_seq)

    def _sync_after_write(self) -> None:
        """Bring the vector index up to what was just committed, on the writer's own connection:
        the new rows are still in its page cache, and a thread-local reader here would leave one
        more connection (and its page cache) behind in every worker thread that ever wrote."""
        with self._write_lock:
            conn = self._writer_conn()
            conn.execute("BEGIN")
            try:
                self._refresh(conn)
            finally:
                conn.execute("COMMIT")

    # ------------------------------------------------------------ properties
    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def path(self) -> Path:
        return self._path

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def index_kind(self) -> str:
        """``"exact"`` or ``"usearch-hnsw"``."""
        return self._index.kind

    # ----------------------------------------------------------- documents
    @staticmethod
    def _record(row: tuple[Any, ...]) -> DocumentRecord:
        return document_record(row)

    def get_document(self, source: str) -> DocumentRecord | None:
        row = self._reader().execute(
            "SELECT source, content_hash, n_chunks, metadata, updated_at FROM documents WHERE source = ?",
            (source,),
        ).fetchone()
        return self._record(row) if row else None

    def documents(self) -> list[DocumentRecord]:
        rows = self._reader().execute(
            "SELECT source, content_hash, n_chunks, metadata, updated_at FROM documents ORDER BY source"
        ).fetchall()
        return [self._record(r) for r in rows]

    # --------------------------------------------------------------- writes
    def replace_document(
        self,
        source: str,
        content_hash: str,
        chunks: Sequence[Chunk],
        vectors: npt.NDArray[np.float32],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Atomically replace ``source``'s chunks (and record) with these."""
        self.replace_documents([(source, content_hash, chunks, vectors, metadata)])

    def _prepare(self, item: DocumentItem) -> tuple[str, str, str, int, list[tuple[Any, ...]], F32]:
        source, content_hash, chunks, vecs, metadata = unpack_item(item, self._dimension)
        vecs = np.ascontiguousarray(vecs)
        doc_meta = dict(metadata or {})
        doc_meta_json = _dumps(doc_meta)
        rows: list[tuple[Any, ...]] = []
        in_rows = self._layout != "file"  # else the vector goes to the vector file only
        for i, ch in enumerate(chunks):
            meta = {**doc_meta, **ch.metadata} if ch.metadata else doc_meta
            meta_json = _dumps(meta) if ch.metadata else doc_meta_json
            context = getattr(ch, "context", "") or ""
            rows.append(
                (source, int(ch.index), int(ch.start), int(ch.end), ch.text, meta_json,
                 vecs[i].tobytes() if in_rows else b"", context,
                 text_key(embed_text(ch)) if isinstance(ch.text, str) else None)
            )
        return source, content_hash, doc_meta_json, len(chunks), rows, vecs

    def replace_documents(self, items: Sequence[DocumentItem]) -> None:
        """Replace many documents in ONE transaction (all or nothing)."""
        prepared = [self._prepare(it) for it in items]
        if not prepared:
            return
        now = time.time()
        with self._write_lock:
            conn = self._writer_conn()
            self._begin_write(conn)
            try:
                first_id = self._position(conn)[0] + 1
                if self._layout == "file" and self._vec_state(conn)[0] != self._index.gen:
                    # another store compacted the file since this one loaded it: reload (at
                    # BEGIN, so the snapshot holds none of this transaction's rows yet)
                    with self._index.mutate_lock:
                        self._reload_vectors(conn, adopt=False, build=True)
                for source, chash, meta_json, n, rows, _ in prepared:
                    conn.execute("DELETE FROM chunks WHERE source = ?", (source,))
                    conn.execute(
                        "INSERT INTO documents(source, content_hash, n_chunks, metadata, updated_at) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(source) DO UPDATE SET "
                        "content_hash = excluded.content_hash, n_chunks = excluded.n_chunks, "
                        "metadata = excluded.metadata, updated_at = excluded.updated_at",
                        (source, chash, n, meta_json, now),
                    )
                    conn.executemany(
                        "INSERT INTO chunks(source, idx, start_off, end_off, text, metadata, vector, "
                        "context, vkey) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                if self._layout == "file":
                    self._write_vectors(conn, first_id, [p[5] for p in prepared])
                self._finish_write(conn)
            except sqlite3.OperationalError as e:  # a full disk, an I/O error: rolled back
                self._rollback(conn)
                raise StoreError(f"write to {self._db} failed: {e}") from e
            except BaseException:
                self._rollback(conn)
                raise
        self._sync_after_write()
        self._maybe_compact()

    def _write_vectors(self, conn: sqlite3.Connection, first_id: int, vectors: list[F32]) -> None:
        """Inside the write transaction, after the chunk rows are inserted: append their vectors
        to the vector file (durable) and record the new row count, so the commit that makes the
        rows visible also makes their vectors part of the store. A crash before the commit
        leaves rows past the recorded count, which the next write overwrites."""
        gen, start = self._vec_state(conn)
        index = self._index
        if gen != index.gen:  # cannot happen: checked at BEGIN, and compactions write too
            raise StoreError("the vector file was compacted during a write")
        last_id = self._position(conn)[0]
        m = sum(len(v) for v in vectors)
        if m == 0:
            return
        ids = np.arange(first_id, last_id + 1, dtype=np.int64)
        if len(ids) != m:  # AUTOINCREMENT hands out consecutive ids within one transaction
            raise StoreError(f"expected {m} new chunk ids, got {len(ids)}")
        index.write_shared(start, ids, np.concatenate(vectors) if len(vectors) > 1 else vectors[0])
        conn.execute("UPDATE manifest SET value = ? WHERE key = 'vector_rows'", (str(start + m),))
        if _test_hook is not None:
            _test_hook("vectors-written")

    def _maybe_compact(self) -> None:
        """Rewrite the vector file without its dead rows once they are a quarter of it, if no
        other store has it open (they hold the lock shared): a new generation of the files is
        written, recorded in one transaction, and the old one deleted."""
        if self._layout != "file" or self._read_only or self._closed:
            return
        n, dead = self._index.dead_rows()
        if n < 1024 or dead * 4 < n:
            return
        with self._write_lock:
            if not self._try_exclusive():
                return
            try:
                self._compact()
            finally:
                if _fcntl is not None and self._lock_fd >= 0:
                    _fcntl.flock(self._lock_fd, _fcntl.LOCK_SH)

    def _compact(self) -> None:
        conn = self._writer_conn()
        index = self._index
        self._begin_write(conn)
        try:
            with index.mutate_lock:
                self._refresh(conn)
                gen, rows = self._vec_state(conn)
                if index.gen != gen or index.dead_rows()[0] != rows:
                    raise StoreError("the vector index does not match the database")
                new_vec, new_ids = _vector_paths(self._path, gen + 1)
                new, keep = index.compact_shared(new_vec, new_ids)
                _fsync_dir(self._path)
                if _test_hook is not None:
                    _test_hook("compaction-written")
                try:
                    conn.executemany(
                        "UPDATE manifest SET value = ? WHERE key = ?",
                        [(str(gen + 1), "vector_gen"), (str(int(keep.sum())), "vector_rows")],
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    new.close()
                    for f in (new_vec, new_ids):
                        with contextlib.suppress(OSError):
                            f.unlink()
                    raise
                index.adopt_compacted(new, keep, gen + 1)
        except BaseException:
            self._rollback(conn)
            raise
        if _test_hook is not None:
            _test_hook("compaction-committed")
        for f in _vector_paths(self._path, gen):
            with contextlib.suppress(OSError):
                f.unlink()

    def vectors_by_key(self, keys: Sequence[bytes]) -> dict[bytes, F32]:
        """Stored vectors by the :func:`~parallelrag.store.base.text_key` of their embedded text."""
        out: dict[bytes, F32] = {}
        wanted = list(dict.fromkeys(bytes(k) for k in keys))
        if not wanted:
            return out
        conn = self._snapshot()
        try:
            if self._layout == "file":
                self._refresh(conn)
            for i in range(0, len(wanted), _KEY_BATCH):
                part = wanted[i : i + _KEY_BATCH]
                q = ("SELECT vkey, vector, id FROM chunks WHERE vkey IN ("
                     + ",".join("?" * len(part)) + ")")
                by_id: dict[int, bytes] = {}
                for key, blob, cid in conn.execute(q, part):
                    if len(blob) == self._dimension * 4:
                        out[bytes(key)] = np.frombuffer(blob, dtype=np.float32)
                    else:
                        by_id[int(cid)] = bytes(key)
                if by_id:  # the vector is in the file: read it through the index
                    ids, vecs = self._index.vectors_of(np.array(sorted(by_id), dtype=np.int64))
                    for cid, vec in zip(ids.tolist(), vecs, strict=True):
                        out.setdefault(by_id[cid], vec)
        finally:
            conn.execute("COMMIT")
        return out

    def export_documents(
        self, sources: Sequence[str]
    ) -> list[tuple[DocumentRecord, list[Chunk], F32]]:
        """These documents with their chunks and vectors (chunks in index order), from one
        snapshot; unknown sources are left out. For moving an index without re-embedding."""
        wanted = list(dict.fromkeys(sources))
        out: list[tuple[DocumentRecord, list[Chunk], F32]] = []
        if not wanted:
            return out
        conn = self._snapshot()
        try:
            if self._layout == "file":
                self._refresh(conn)
            for src in wanted:
                d = fetch_document_row(conn, src)
                if d is None:
                    continue
                rows = conn.execute(
                    "SELECT id, text, start_off, end_off, idx, metadata, context, vector FROM chunks "
                    "WHERE source = ? ORDER BY idx, id",
                    (src,),
                ).fetchall()
                chunks = [
                    Chunk(r[1], int(r[2]), int(r[3]), int(r[4]), _loads(r[5]), context=r[6] or "")
                    for r in rows
                ]
                mat: F32 = np.zeros((len(rows), self._dimension), np.float32)
                from_file = []
                for i, r in enumerate(rows):
                    if len(r[7]) == self._dimension * 4:
                        mat[i] = np.frombuffer(r[7], dtype=np.float32)
                    else:
                        from_file.append(i)
                if from_file:
                    want = np.array([rows[i][0] for i in from_file], dtype=np.int64)
                    ids, vecs = self._index.vectors_of(want)
                    if len(ids) != len(want):  # deleted from the index after this snapshot
                        raise StoreError(f"{src}: changed while being exported; try again")
                    got = dict(zip(ids.tolist(), vecs, strict=True))
                    for i, cid in zip(from_file, want.tolist(), strict=True):
                        mat[i] = got[cid]
                out.append((self._record(d), chunks, mat))
        finally:
            conn.execute("COMMIT")
        return out

    def load_config(self) -> dict[str, Any] | None:
        """The index config saved with :meth:`save_config` (in the manifest), or None."""
        row = self._reader().execute(
            "SELECT value FROM manifest WHERE key = 'index_config'"
        ).fetchone()
        return _loads(row[0]) if row else None

    def save_config(self, config: Mapping[str, Any]) -> None:
        """Save the index config (JSON) in the manifest, in one transaction."""
        text = _dumps(config)
        with self._write_lock:
            conn = self._writer_conn()
            self._begin_write(conn)
            try:
                conn.execute(
                    "INSERT INTO manifest(key, value) VALUES ('index_config', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (text,),
                )
                conn.execute("COMMIT")
            except BaseException:
                self._rollback(conn)
                raise

    @classmethod
    def open_read_only(cls, path: str | os.PathLike[str]) -> EmbeddedStore:
        """Open the existing store at ``path`` read-only with the model and dimension it
        records, also on read-only media (a backup mount) where a writable open fails: the
        source of a copy. Raises :class:`StoreError` when there is no readable store."""
        p = Path(path)
        db = p / DB_NAME
        if not db.exists():
            raise StoreError(f"no index at {p} (missing {DB_NAME})")
        flag = "&immutable=1" if on_read_only_media(p) and not _wal_pending(db) else ""
        try:
            conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro{flag}", uri=True,
                                   timeout=30.0)
            try:
                rows = dict(conn.execute(
                    "SELECT key, value FROM manifest WHERE key IN ('model_id', 'dimension')"
                ).fetchall())
            finally:
                conn.close()
            model_id, dimension = str(rows["model_id"]), int(rows["dimension"])
        except (sqlite3.DatabaseError, KeyError, ValueError) as e:
            raise StoreError(f"cannot read the index at {p}: {e}") from e
        return cls.open(p, dimension=dimension, model_id=model_id, create=False, read_only=True)

    @staticmethod
    def read_config(path: str | os.PathLike[str]) -> dict[str, Any] | None:
        """The index config saved in the store at ``path`` without opening the store (None
        when there is no store there, or it has no config)."""
        db = Path(path) / DB_NAME
        if not db.exists():
            return None
        try:
            conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
            try:
                row = conn.execute(
                    "SELECT value FROM manifest WHERE key = 'index_config'"
                ).fetchone()
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            return None
        return _loads(row[0]) if row else None

    def remove_document(self, source: str) -> bool:
        """Delete ``source`` and its chunks. Returns whether it existed."""
        with self._write_lock:
            conn = self._writer_conn()
            self._begin_write(conn)
            try:
                conn.execute("DELETE FROM chunks WHERE source = ?", (source,))
                existed = conn.execute("DELETE FROM documents WHERE source = ?", (source,)).rowcount > 0
                self._finish_write(conn)
            except sqlite3.OperationalError as e:
                self._rollback(conn)
                raise StoreError(f"write to {self._db} failed: {e}") from e
            except BaseException:
                self._rollback(conn)
                raise
        self._sync_after_write()
        self._maybe_compact()
        return existed

    def _begin_write(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            raise StoreError(f"cannot start a write transaction on {self._db}: {e}") from e

    def _finish_write(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE manifest SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'"
        )
        _, del_seq = self._position(conn)
        if del_seq - self._pruned_through(conn) > 2 * _DELETION_LOG_KEEP:
            cut = del_seq - _DELETION_LOG_KEEP
            conn.execute("DELETE FROM deletions WHERE seq <= ?", (cut,))
            conn.execute(
                "UPDATE manifest SET value = ? WHERE key = 'deletions_pruned_through'", (str(cut),)
            )
        conn.execute("COMMIT")

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    # --------------------------------------------------------------- search
    def _query_vec(self, query: npt.NDArray[np.float32]) -> F32:
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape != (self._dimension,):
            raise ConfigError(f"query vector has {q.shape[0]} dims, store has {self._dimension}")
        return np.ascontiguousarray(q)

    def _allowed(self, conn: sqlite3.Connection, where: _Where) -> I64 | None:
        if where.empty:
            return None
        rows = conn.execute(
            f"SELECT c.id FROM chunks c WHERE {where.sql} ORDER BY c.id", where.params
        ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def _vector_candidates(
        self, conn: sqlite3.Connection, q: F32, k: int, where: _Where
    ) -> list[tuple[int, float]]:
        self._refresh(conn)
        if where.empty:
            ids, scores = self._index.search(q, k)
            return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True)]
        # Post-filter first: over-fetch nearest neighbours and keep those matching the filter.
        # Cheap for unselective filters; a selective one falls through to the pre-filter path.
        n_live = len(self._index)
        fetch = max(4 * k, 64)
        while True:
            ids, scores = self._index.search(q, fetch)
            if not len(ids):
                return []
            ok = {
                r[0]
                for r in conn.execute(
                    f"SELECT c.id FROM chunks c WHERE c.id IN (SELECT value FROM json_each(?)) AND {where.sql}",
                    [orjson.dumps(ids.tolist()).decode(), *where.params],
                )
            }
            passed = [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if int(i) in ok]
            if len(passed) >= k or fetch >= n_live:
                return passed[:k]
            if fetch >= _POSTFILTER_MAX:
                break
            fetch *= 8
        allowed = self._allowed(conn, where)
        if allowed is None or not len(allowed):
            return []
        ids, scores = self._index.search(q, k, allowed)
        return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True)]

    def _keyword_candidates(
        self, conn: sqlite3.Connection, text: str, k: int, where: _Where
    ) -> list[tuple[int, float]]:
        if not isinstance(text, str):
            raise ConfigError("keyword query must be a string")
        if k <= 0:
            return []
        if not self._fts:
            return self._python_bm25(conn, text, k, where)
        match = _fts_query(text)
        if match is None:
            return []
        sql = (
            "SELECT f.rowid, bm25(chunks_fts) FROM chunks_fts f "
            + ("" if where.empty else "JOIN chunks c ON c.id = f.rowid ")
            + "WHERE chunks_fts MATCH ? "
            + ("" if where.empty else f"AND {where.sql} ")
            + "ORDER BY bm25(chunks_fts) LIMIT ?"
        )
        try:
            rows = conn.execute(sql, [match, *where.params, k]).fetchall()
        except sqlite3.OperationalError as e:  # defensive: the query is built to be always valid
            raise StoreError(f"keyword search failed: {e}") from e
        return [(int(r[0]), -float(r[1])) for r in rows]

    def _python_bm25(
        self, conn: sqlite3.Connection, text: str, k: int, where: _Where, k1: float = 1.2, b: float = 0.75
    ) -> list[tuple[int, float]]:
        """Fallback when sqlite3 lacks FTS5: BM25 computed by scanning the chunks (slow, correct)."""
        terms = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))[:_MAX_QUERY_TERMS]
        if not terms:
            return []
        docs: list[tuple[int, dict[str, int], int]] = []
        df = dict.fromkeys(terms, 0)
        total_len = 0
        for cid, ctext in conn.execute(
            f"SELECT c.id, c.context || ' ' || c.text FROM chunks c WHERE {where.sql}", where.params
        ):
            words = [w.lower() for w in _WORD.findall(ctext)]
            total_len += len(words)
            tf = {t: 0 for t in terms}
            for w in words:
                if w in tf:
                    tf[w] += 1
            for t, c in tf.items():
                if c:
                    df[t] += 1
            if any(tf.values()):
                docs.append((int(cid), tf, len(words)))
        n_all = conn.execute(f"SELECT count(*) FROM chunks c WHERE {where.sql}", where.params).fetchone()[0]
        avg = total_len / n_all if n_all else 1.0
        scored = []
        for cid, tf, dl in docs:
            s = 0.0
            for t, c in tf.items():
                if c:
                    idf = log(1 + (n_all - df[t] + 0.5) / (df[t] + 0.5))
                    s += idf * c * (k1 + 1) / (c + k1 * (1 - b + b * dl / (avg or 1.0)))
            scored.append((cid, s))
        scored.sort(key=lambda x: (-x[1], x[0]))
        return scored[:k]

    def _fetch(self, conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, Hit]:
        if not ids:
            return {}
        rows = conn.execute(
            "SELECT id, text, source, start_off, end_off, idx, metadata, context FROM chunks "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (orjson.dumps(list(ids)).decode(),),
        ).fetchall()
        return {
            int(r[0]): Hit(
                chunk_id=int(r[0]),
                text=r[1],
                score=0.0,
                source=r[2],
                start=int(r[3]),
                end=int(r[4]),
                index=int(r[5]),
                metadata=_loads(r[6]),
                context=r[7] or "",
            )
            for r in rows
        }

    def _snapshot(self) -> sqlite3.Connection:
        conn = self._reader()
        conn.execute("BEGIN")
        return conn

    def search_vector(
        self, query: npt.NDArray[np.float32], k: int = 5, *, where: Filter | None = None
    ) -> list[Hit]:
        """Top-``k`` chunks by cosine similarity (``score``), optionally filtered."""
        q = self._query_vec(query)
        w = _Where(where)
        if k <= 0:
            return []
        conn = self._snapshot()
        try:
            cands = self._vector_candidates(conn, q, k + max(4, k // 2), w)
            rows = self._fetch(conn, [c for c, _ in cands])
        finally:
            conn.execute("COMMIT")
        hits: list[Hit] = []
        for cid, s in cands:
            hit = rows.get(cid)
            if hit is not None:  # the index may be ahead of this snapshot
                hit.score = hit.vector_score = s
                hits.append(hit)
                if len(hits) == k:
                    break
        return hits

    def search_keyword(self, query: str, k: int = 5, *, where: Filter | None = None) -> list[Hit]:
        """Top-``k`` chunks by BM25 (``score``, higher is better). Any string is safe."""
        w = _Where(where)
        conn = self._snapshot()
        try:
            cands = self._keyword_candidates(conn, query, k, w)
            rows = self._fetch(conn, [c for c, _ in cands])
        finally:
            conn.execute("COMMIT")
        hits = []
        for cid, s in cands:
            hit = rows.get(cid)
            if hit is None:
                continue
            hit.score = hit.keyword_score = s
            hits.append(hit)
        return hits

    def search_hybrid(
        self,
        query: str,
        query_vec: npt.NDArray[np.float32],
        k: int = 5,
        *,
        where: Filter | None = None,
        rrf_k: int = 60,
        candidates: int = 50,
    ) -> list[Hit]:
        """Reciprocal-rank fusion of the vector and keyword top-``candidates`` lists.

        ``score`` = Σ 1 / (rrf_k + rank) over the lists a chunk appears in (rank from 1).
        """
        q = self._query_vec(query_vec)
        w = _Where(where)
        if k <= 0:
            return []
        n_cand = max(candidates, k)
        conn = self._snapshot()
        try:
            vec = self._vector_candidates(conn, q, n_cand, w)
            kw = self._keyword_candidates(conn, query, n_cand, w)
            present = self._fetch(conn, list({c for c, _ in vec} | {c for c, _ in kw}))
        finally:
            conn.execute("COMMIT")
        vec = [c for c in vec if c[0] in present]
        from .fusion import fuse

        return apply_fused(fuse(vec, kw, k, rrf_k=rrf_k), present)

    def document_scores(
        self, query: npt.NDArray[np.float32], sources: Sequence[str]
    ) -> dict[str, float]:
        """The cosine of ``query`` with each document's centroid (the normalised mean of all its
        chunk vectors), for the documents of ``sources`` that exist: how well a document as a
        whole matches, for ranking search results by document. Centroids are cached per
        document version."""
        q = self._query_vec(query)
        wanted = list(dict.fromkeys(sources))
        if not wanted:
            return {}
        conn = self._snapshot()
        try:
            hashes = dict(conn.execute(
                "SELECT source, content_hash FROM documents WHERE source IN (SELECT value FROM json_each(?))",
                [orjson.dumps(wanted).decode()],
            ).fetchall())

            def compute(missing: list[str]) -> dict[str, F32]:
                if self._layout == "file":
                    self._refresh(conn)
                rows = conn.execute(
                    "SELECT id, source, vector FROM chunks WHERE source IN (SELECT value FROM json_each(?))",
                    [orjson.dumps(missing).decode()],
                ).fetchall()
                vecs: dict[int, F32] = {}
                file_ids = []
                for cid, _, blob in rows:
                    if len(blob) == self._dimension * 4:
                        vecs[cid] = np.frombuffer(blob, dtype=np.float32)
                    else:
                        file_ids.append(cid)
                if file_ids:
                    ids, mat = self._index.vectors_of(np.array(sorted(file_ids), dtype=np.int64))
                    vecs.update(zip(ids.tolist(), mat, strict=True))
                return centroids((src, vecs[cid]) for cid, src, _ in rows if cid in vecs)

            return self._centroids.scores(q, hashes, compute)
        finally:
            conn.execute("COMMIT")

    def get_chunks(self, ids: Iterable[int]) -> list[Hit]:
        """The chunks with these ids, in the order given; unknown ids are skipped."""
        wanted = [int(i) for i in ids]
        conn = self._snapshot()
        try:
            rows = self._fetch(conn, wanted)
        finally:
            conn.execute("COMMIT")
        return [rows[i] for i in wanted if i in rows]

    # ---------------------------------------------------------------- admin
    def stats(self) -> dict[str, Any]:
        conn = self._snapshot()
        try:
            n_docs = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
            n_chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
            gen = conn.execute("SELECT value FROM manifest WHERE key = 'generation'").fetchone()
        finally:
            conn.execute("COMMIT")
        size = 0
        for f in self._path.iterdir():
            with contextlib.suppress(OSError):
                if f.is_file():
                    st = f.stat()  # the vector file is sparse past its last row: count blocks
                    size += min(st.st_size, getattr(st, "st_blocks", st.st_size) * 512)
        return {
            "path": str(self._path),
            "documents": int(n_docs),
            "chunks": int(n_chunks),
            "dimension": self._dimension,
            "model_id": self._model_id,
            "index": self._index.kind,
            "index_pending": self._index.pending,
            "ann_threshold": self._index.ann_threshold,
            "keyword_index": "fts5" if self._fts else "python-bm25",
            "generation": int(gen[0]) if gen else 0,
            "bytes_on_disk": size,
            "vector_memory_bytes": self._index.nbytes,
            "vector_file_bytes": self._index.file_bytes,
            "read_only": self._read_only,
        }

    def wait_for_index(self, timeout: float | None = None) -> bool:
        """Block until the HNSW graph holds every vector (it is filled in the background).

        Searches are complete either way (unfolded vectors are searched exactly); this is for
        benchmarks, tests and before :meth:`save_index`. Returns False on timeout.
        """
        return self._index.wait_for_index(timeout)

    def save_index(self) -> bool:
        """Persist the ANN index and checkpoint the vector file now (also done by :meth:`close`).

        Returns True if the ANN index was written.
        """
        if self._closed or not self._persist_ann:
            return False
        self._index.checkpoint()
        return self._index.save_ann(self._path)

    def _close_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except sqlite3.Error:
                pass

    def close(self) -> None:
        """Persist the ANN index (if it changed) and close every connection. Idempotent."""
        if self._closed:
            return
        try:
            self._index.close()
            if self._persist_ann:
                with contextlib.suppress(OSError, StoreError):
                    self._index.checkpoint()
                with contextlib.suppress(OSError):
                    self._index.save_ann(self._path)
        finally:
            self._index.release()
            self._closed = True
            with self._write_lock:
                self._writer = None
                self._close_connections()
            self._unlock()

    def __enter__(self) -> EmbeddedStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self._path)!r}, model_id={self._model_id!r}, dimension={self._dimension})"
