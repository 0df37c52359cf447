"""The embedded store: one directory, SQLite (WAL) as the system of record, vectors in a mapped file.

Layout of ``path/``::

    store.sqlite              documents, chunks (+ float32 vector BLOBs), manifest, FTS5 index,
                              deletion log
    matrix-f32.bin            the vectors again, one float32 row per chunk in id order (derived:
    matrix-ids.bin            written by the process holding matrix.lock, read through a shared
    matrix.json               mapping; matrix.json says how many leading rows are durable, the
    matrix.lock               rest is re-read from the database at open)
    vectors.meta.json         which ANN file is current and which DB position it reflects
    vectors-<pos>.usearch     the HNSW graph (derived; rebuilt or caught up at open)

Memory: the vectors are not held in the process heap. Appends are plain file writes, searches
read the page cache through the mapping, and the HNSW graph is only filled once searches want it
(see :mod:`parallelrag.store.vectors`), so ingesting a large corpus runs in bounded memory.

Crash safety: every write is one SQLite transaction (``BEGIN IMMEDIATE`` … ``COMMIT``). Triggers
keep the FTS5 index and the deletion log in the same transaction as the chunk rows, so a kill -9
at any point leaves either the old or the new version of each document. The vector index is
derived from the database: chunk ids come from ``AUTOINCREMENT`` (never reused, ascending in
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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from math import log
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from parallelrag.documents import Chunk
from parallelrag.errors import ConfigError, StoreError

from .base import DocumentItem, DocumentRecord, Filter, Hit
from .vectors import DEFAULT_ANN_THRESHOLD, VectorIndex

__all__ = ["SCHEMA_VERSION", "EmbeddedStore", "fts5_available"]

SCHEMA_VERSION = 1
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
    vector BLOB NOT NULL
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

_FTS_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS chunks_fts_insert AFTER INSERT ON chunks BEGIN
    INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_fts_delete AFTER DELETE ON chunks BEGIN
    INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
"""


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


def _loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = orjson.loads(text)
    return value if isinstance(value, dict) else {}


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
        for key, value in (where or {}).items():
            if not isinstance(key, str):
                raise ConfigError(f"filter keys must be strings, got {key!r}")
            if key == "source":
                if not isinstance(value, str):
                    raise ConfigError("filter 'source' must be a glob string")
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
        # read-only openers keep a private vector file outside the directory (it may be read-only)
        self._index = VectorIndex(
            dimension,
            ann_threshold=ann_threshold,
            ann=ann,
            directory=None if read_only else path,
            persist=self._persist_ann,
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
    ) -> EmbeddedStore:
        """Open (or create) the store in directory ``path``.

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
        store = cls(
            p,
            dimension=dimension,
            model_id=model_id,
            read_only=read_only,
            ann_threshold=ann_threshold,
            ann=ann,
            busy_timeout_s=busy_timeout_s,
            persist_ann=persist_ann,
        )
        try:
            store._init()
        except BaseException:
            store._close_connections()
            store._index.release()
            raise
        return store

    def _connect(self) -> sqlite3.Connection:
        try:
            if self._read_only:
                conn = sqlite3.connect(
                    f"{self._db.resolve().as_uri()}?mode=ro",
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
            raise StoreError(f"cannot open {self._db}: {e}") from e
        with self._conns_lock:
            self._conns.append(conn)
        return conn

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
            raise StoreError("store was opened read-only")
        if self._writer is None:
            self._writer = self._connect()
        return self._writer

    def _init(self) -> None:
        if not self._read_only:
            conn = self._writer_conn()
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.DatabaseError as e:
                raise StoreError(f"{self._db} is not a usable SQLite database: {e}") from e
            if str(mode).lower() != "wal":
                raise StoreError(f"could not switch {self._db} to WAL (journal_mode={mode})")
            with self._write_lock:
                self._begin_write(conn)
                try:
                    _run_script(conn, _SCHEMA)
                    has_fts = self._has_table(conn, "chunks_fts")
                    n_chunks = conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
                    if _HAVE_FTS5 and (has_fts or n_chunks == 0):
                        _run_script(conn, _FTS_SCHEMA)
                    self._check_manifest(conn, create=True)
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            if not self._has_table(conn, "manifest"):
                raise StoreError(f"{self._db} is not a parallelrag store")
            self._check_manifest(conn, create=False)
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
        version = int(rows.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store schema version {version} is newer than this parallelrag supports ({SCHEMA_VERSION})"
            )
        rec_model, rec_dim = rows.get("model_id"), int(rows.get("dimension", "0"))
        if rec_model != self._model_id or rec_dim != self._dimension:
            raise ConfigError(
                f"store at {self._path} was built with model {rec_model!r} (dimension {rec_dim}), "
                f"but model {self._model_id!r} (dimension {self._dimension}) was requested; "
                "use the same embedder or a new index directory"
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
        if max_id <= index.max_id and del_seq <= index.del_seq:
            return  # up to date, or the index is already ahead of this snapshot
        with index.mutate_lock:
            if max_id <= index.max_id and del_seq <= index.del_seq:
                return
            if max_id < index.max_id or del_seq < index.del_seq:
                return  # another thread moved the index past this (older) snapshot
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
        return DocumentRecord(
            source=row[0],
            content_hash=row[1],
            n_chunks=int(row[2]),
            metadata=_loads(row[3]),
            updated_at=float(row[4]),
        )

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

    def _prepare(self, item: DocumentItem) -> tuple[str, str, str, int, list[tuple[Any, ...]]]:
        try:
            source, content_hash, chunks, vectors, metadata = item
        except (TypeError, ValueError) as e:
            raise ConfigError(
                "replace_documents items are (source, content_hash, chunks, vectors, metadata)"
            ) from e
        if not isinstance(source, str) or not source:
            raise ConfigError(f"source must be a non-empty string, got {source!r}")
        if not isinstance(content_hash, str):
            raise ConfigError(f"{source}: content_hash must be a string")
        vecs = np.asarray(vectors, dtype=np.float32)
        if len(chunks) == 0 and vecs.size == 0:
            vecs = vecs.reshape(0, self._dimension)
        if vecs.ndim != 2 or vecs.shape != (len(chunks), self._dimension):
            raise ConfigError(
                f"{source}: vectors have shape {vecs.shape}, expected ({len(chunks)}, {self._dimension})"
            )
        if not bool(np.isfinite(vecs).all()):
            raise ConfigError(f"{source}: vectors contain NaN or infinity")
        vecs = np.ascontiguousarray(vecs)
        doc_meta = dict(metadata or {})
        doc_meta_json = _dumps(doc_meta)
        rows: list[tuple[Any, ...]] = []
        for i, ch in enumerate(chunks):
            meta = {**doc_meta, **ch.metadata} if ch.metadata else doc_meta
            meta_json = _dumps(meta) if ch.metadata else doc_meta_json
            rows.append(
                (source, int(ch.index), int(ch.start), int(ch.end), ch.text, meta_json, vecs[i].tobytes())
            )
        return source, content_hash, doc_meta_json, len(chunks), rows

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
                for source, chash, meta_json, n, rows in prepared:
                    conn.execute("DELETE FROM chunks WHERE source = ?", (source,))
                    conn.execute(
                        "INSERT INTO documents(source, content_hash, n_chunks, metadata, updated_at) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT(source) DO UPDATE SET "
                        "content_hash = excluded.content_hash, n_chunks = excluded.n_chunks, "
                        "metadata = excluded.metadata, updated_at = excluded.updated_at",
                        (source, chash, n, meta_json, now),
                    )
                    conn.executemany(
                        "INSERT INTO chunks(source, idx, start_off, end_off, text, metadata, vector) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                self._finish_write(conn)
            except BaseException:
                self._rollback(conn)
                raise
        self._sync_after_write()

    def remove_document(self, source: str) -> bool:
        """Delete ``source`` and its chunks. Returns whether it existed."""
        with self._write_lock:
            conn = self._writer_conn()
            self._begin_write(conn)
            try:
                conn.execute("DELETE FROM chunks WHERE source = ?", (source,))
                existed = conn.execute("DELETE FROM documents WHERE source = ?", (source,)).rowcount > 0
                self._finish_write(conn)
            except BaseException:
                self._rollback(conn)
                raise
        self._sync_after_write()
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
        for cid, ctext in conn.execute(f"SELECT c.id, c.text FROM chunks c WHERE {where.sql}", where.params):
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
            "SELECT id, text, source, start_off, end_off, idx, metadata FROM chunks "
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
        fused: dict[int, float] = {}
        vscore: dict[int, float] = {}
        kscore: dict[int, float] = {}
        for rank, (cid, s) in enumerate(vec, 1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (rrf_k + rank)
            vscore[cid] = s
        for rank, (cid, s) in enumerate(kw, 1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (rrf_k + rank)
            kscore[cid] = s
        order = sorted(fused, key=lambda c: (-fused[c], -vscore.get(c, -np.inf), c))[:k]
        hits = []
        for cid in order:
            hit = present[cid]
            hit.score = fused[cid]
            hit.vector_score = vscore.get(cid)
            hit.keyword_score = kscore.get(cid)
            hits.append(hit)
        return hits

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
