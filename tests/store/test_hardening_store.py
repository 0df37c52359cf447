"""Hostile-environment probes of the embedded store: a full disk (simulated without root by a
file-size limit, RLIMIT_FSIZE, in a child process) and a read-only directory. What is asserted:
the failure is a StoreError from the project's hierarchy, nothing committed is lost, the store
reopens whole, and every vector still belongs to its own text."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from store_helpers import make_chunks

from parallelrag.errors import StoreError
from parallelrag.store import EmbeddedStore

HERE = Path(__file__).parent
DIM = 32

CHILD = r"""
import resource, signal, sys
sys.path.insert(0, sys.argv[2])
import numpy as np
from store_helpers import make_chunks
from parallelrag.errors import StoreError
from parallelrag.store import EmbeddedStore

def vec(i, j):
    v = np.random.default_rng([i, j]).standard_normal(32).astype(np.float32)
    return v / np.linalg.norm(v)

s = EmbeddedStore.open(sys.argv[1], dimension=32, model_id="m")
# from here on, no file may grow past 1.5 MB: the "disk" fills up during the writes
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))
for i in range(5000):
    texts = [f"doc {i} part {j} " + "word " * 80 for j in range(8)]
    try:
        s.replace_document(f"d{i}", str(i), make_chunks(texts),
                           np.stack([vec(i, j) for j in range(8)]))
    except StoreError as e:
        print("STORE_ERROR", i, str(e)[:200])
        break
    except Exception as e:
        print("OTHER_ERROR", i, type(e).__module__, type(e).__name__, str(e)[:200])
        break
else:
    print("NEVER_FULL")
# the store stays usable for reads after the failed write
print("READ", len(s.documents()))
"""


def _vec(i: int, j: int) -> np.ndarray:
    v = np.random.default_rng([i, j]).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def test_full_disk_is_a_store_error_and_the_store_reopens_whole(tmp_path: Path) -> None:
    path = tmp_path / "store"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(HERE)],
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "NEVER_FULL" not in out
    assert "OTHER_ERROR" not in out, out  # a raw sqlite3 / OS error escaped the hierarchy
    assert "STORE_ERROR" in out, out
    failed_at = int(out.split("STORE_ERROR", 1)[1].split()[0])
    assert f"READ {failed_at}" in out
    s = EmbeddedStore.open(path, dimension=DIM, model_id="m")
    try:
        docs = {d.source: d for d in s.documents()}
        assert set(docs) == {f"d{i}" for i in range(failed_at)}
        for i in range(0, failed_at, max(1, failed_at // 10)):
            hits = s.search_vector(_vec(i, 3), k=1)
            assert hits and hits[0].source == f"d{i}" and hits[0].text.startswith(f"doc {i} part 3 ")
        # freed space: the next write succeeds
        s.replace_document("after", "1", make_chunks(["after the disk was freed"]),
                           _vec(9999, 0)[None, :])
        assert s.get_document("after") is not None
    finally:
        s.close()


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory this process cannot write: chmod 555 for a normal user; for root (which
    ignores permissions) a small tmpfs remounted read-only, else the test is skipped."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        yield d
        for p in [d, *d.rglob("*")]:
            if p.is_dir():
                os.chmod(p, 0o755)
        return
    d = tmp_path / "mnt"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d)],
                      capture_output=True).returncode != 0:
        pytest.skip("root without mount: no way to make a read-only directory")
    try:
        yield d
    finally:
        # lazily: a store object the test could not close (or a mapping) keeps it busy, and a
        # mount must never outlive the test run
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def _make_read_only(d: Path) -> None:
    if os.geteuid() != 0:
        for p in [d, *d.rglob("*")]:
            if p.is_dir():
                os.chmod(p, 0o555)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(d)], check=True)


def test_read_only_directory(read_only_dir: Path) -> None:
    """A store on read-only media (a read-only volume, a shipped index) opens read-only and
    searches; a writable open is a StoreError, never a raw sqlite3 error."""
    path = read_only_dir / "store"
    s = EmbeddedStore.open(path, dimension=DIM, model_id="m")
    s.replace_document("a", "1", make_chunks(["hello world"]), _vec(0, 0)[None, :])
    s.close()
    _make_read_only(read_only_dir)
    w = None
    try:
        with pytest.raises(StoreError):
            w = EmbeddedStore.open(path, dimension=DIM, model_id="m")
            w.replace_document("b", "1", make_chunks(["x"]), _vec(1, 0)[None, :])
    finally:
        if w is not None:
            w.close()
    r = EmbeddedStore.open(path, dimension=DIM, model_id="m", read_only=True)
    try:
        assert [h.source for h in r.search_vector(_vec(0, 0), k=1)] == ["a"]
        assert [h.source for h in r.search_keyword("hello", k=1)] == ["a"]
    finally:
        r.close()
