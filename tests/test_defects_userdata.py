"""Defects found by probing parallelrag with the data and index folders a real user has on disk.

Each test builds its own data in a tmp dir, drives the real command in-process (click's runner,
as tests/cli does) or the Python API, with the offline wordllama model, and asserts what a user
sees: the exit code, the one ``error:`` line, the hits, the files left on disk.

* An index on read-only media (a read-only volume, a mounted backup, an index shipped in a
  container image) must be searchable and ``copy``-able; changing it is a one-line usage error
  (exit 2) that says why, not SQLite's "unable to open database file".
* A ``store.sqlite`` that was truncated to 0 bytes (a copy that ran out of disk, a sync tool's
  placeholder) in a folder that held an index must not be taken for a new, empty index: that
  hid the loss (``stats`` said 0 documents, ``search`` "no chunk matches") and deleted the
  vector files on the next writable open. A damaged database says how to recover.
* A file emptied after it was indexed must not stay searchable with its old text.
* An index folder inside the folder being ingested (``ingest . --index rag-index``), or the
  same folder (``--index docs``), must not index its own files.
* No hits say why (an empty index, a ``--where`` that compares a number to string metadata);
  an empty index's answer does not speak of "the closest passages".
* The embedder-mismatch error tells a CLI user to leave out ``--embed``.
* ``~`` in ``--index`` / ``PARALLELRAG_INDEX`` is the home folder; an empty ``--index`` is a
  usage error, not the working directory.
* UTF-16 text without a byte-order mark is text, not "binary".
* ``ingest DELETED_FOLDER --prune`` prunes the deleted folder's documents.
* A library warning met in many files prints once, then once with its count.
* A glob given as a path to ``Index.ingest`` says patterns are not expanded.
* A disk that fills up during ``ingest`` ends it with exit 1 and one error line: it sometimes
  hung for good, or printed asyncio's "Future exception was never retrieved" too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from parallelrag.cli_progress import count_files
from parallelrag.errors import StoreError
from parallelrag.pipeline import Index

sys.path.insert(0, str(Path(__file__).parent / "cli"))  # the CLI tests' helpers
from cli_helpers import Run, invoke
from cli_helpers import assert_one_line_error as one_error_line


def cli(*args: str | Path, env: dict[str, str] | None = None) -> Run:
    """The real command, in-process (the CLI tests' runner)."""
    return invoke([str(a) for a in args], env)


def make_docs(root: Path) -> Path:
    docs = root / "docs"
    docs.mkdir()
    (docs / "mars.txt").write_text("Mars has two small moons named Phobos and Deimos.\n")
    (docs / "fox.txt").write_text("Foxes hunt mice under the snow in winter.\n")
    return docs


# ---------------------------------------------------------------- read-only index location
@pytest.fixture
def ro_mount(tmp_path: Path) -> Iterator[tuple[Path, Sequence[str]]]:
    """A folder that can be made read-only, and the command that does it: chmod for a normal
    user; for root (which ignores permissions) a small tmpfs, remounted read-only, else skip."""
    d = tmp_path / "mnt"
    d.mkdir()
    if os.geteuid() != 0:
        yield d, ["chmod", "-R", "a-w", str(d)]
        subprocess.run(["chmod", "-R", "u+w", str(d)], check=False)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(d)],
                      capture_output=True).returncode != 0:
        pytest.skip("root without mount: no way to make a read-only folder")
    try:
        yield d, ["mount", "-o", "remount,ro", str(d)]
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_index_on_read_only_media_is_searchable_and_refuses_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        ro_mount: tuple[Path, Sequence[str]]) -> None:
    monkeypatch.chdir(tmp_path)
    make_docs(tmp_path)
    mnt, make_read_only = ro_mount
    idx = mnt / "idx"
    built = cli("ingest", "docs", "--index", idx, "--embed", "wordllama")
    assert built.code == 0, built.stderr
    subprocess.run(list(make_read_only), check=True)
    with pytest.raises(OSError):  # the folder really is read-only now
        (idx / "probe").write_text("x")

    found = cli("search", "moons of Mars", "--index", idx, "-k", "1")
    assert found.code == 0, found.stderr
    assert "mars.txt" in found.stdout and "Phobos" in found.stdout
    stats = cli("stats", "--index", idx)
    assert stats.code == 0, stats.stderr
    assert "documents: 2" in stats.stdout
    answered = cli("query", "moons of Mars", "--index", idx, "-k", "1")
    assert answered.code == 0, answered.stderr
    assert "Phobos" in answered.stdout

    (tmp_path / "docs" / "owl.txt").write_text("Owls hunt at night.\n")
    one_error_line(cli("ingest", "docs", "--index", idx), 2, "read-only")
    one_error_line(cli("remove", "docs/mars.txt", "--index", idx), 2, "read-only")

    # restoring from a read-only backup: `copy` reads the source without writing to it
    copied = cli("copy", idx, tmp_path / "restored")
    assert copied.code == 0, copied.stderr
    assert "copied 2 documents" in copied.stdout, copied.stdout
    restored = cli("search", "moons of Mars", "--index", tmp_path / "restored", "-k", "1")
    assert restored.code == 0 and "Phobos" in restored.stdout, restored.stderr
    # copying onto read-only media, or from a folder that holds no index: exit 2, one line
    one_error_line(cli("copy", tmp_path / "restored", idx), 2, str(idx))
    one_error_line(cli("copy", tmp_path / "restored", mnt / "new"), 2, "new")
    one_error_line(cli("copy", tmp_path / "docs", tmp_path / "x"), 2, "no index")

    with Index.open(idx, create=False) as index:  # the Python API too
        hits = index.search("moons of Mars", k=1)
        assert len(hits) == 1 and hits[0].source.endswith("docs/mars.txt")
        with pytest.raises(StoreError, match="read-only"):
            index.remove("docs/mars.txt")


# ---------------------------------------------------------- database truncated to 0 bytes
def test_truncated_empty_database_is_reported_not_taken_for_a_new_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_docs(tmp_path)
    built = cli("ingest", "docs", "--index", "idx", "--embed", "wordllama")
    assert built.code == 0, built.stderr
    db = tmp_path / "idx" / "store.sqlite"
    assert not (tmp_path / "idx" / "store.sqlite-wal").exists()  # closed: all in the database
    vector_files = sorted(p.name for p in (tmp_path / "idx").glob("matrix-*.bin"))
    assert vector_files
    db.write_bytes(b"")  # what a copy that ran out of disk leaves

    for args in (["search", "moons"], ["stats"], ["ingest", "docs"]):
        one_error_line(cli(*args, "--index", "idx"), 2, "store.sqlite", "empty")
    # nothing that was left was deleted, and the folder was not turned into a new index
    assert sorted(p.name for p in (tmp_path / "idx").glob("matrix-*.bin")) == vector_files
    assert db.stat().st_size == 0

    # a new index folder still works (its database is empty only while it is being created)
    fresh = cli("ingest", "docs", "--index", "fresh", "--embed", "wordllama")
    assert fresh.code == 0, fresh.stderr
    assert "2 added" in fresh.stdout


# ------------------------------------------------------------ a file emptied after ingest
def test_a_file_emptied_after_ingest_leaves_the_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user who blanks a file (to take its text out) must not find the old text in search
    after the next ingest: the file is readable and holds nothing, so its documents go (counted
    as removed). A JSONL file emptied takes all its records with it; other files stay."""
    monkeypatch.chdir(tmp_path)
    docs = make_docs(tmp_path)
    (docs / "geese.jsonl").write_text('{"text": "Geese fly south."}\n{"text": "Swans glide."}\n')
    built = cli("ingest", "docs", "--index", "idx", "--embed", "wordllama", "--text-field",
                "text")
    assert built.code == 0, built.stderr
    (docs / "mars.txt").write_text("  \n\n")
    (docs / "geese.jsonl").write_bytes(b"")

    again = cli("ingest", "docs", "--index", "idx", "--text-field", "text", "--json")
    assert again.code == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["removed"] == 3, report
    assert {s["source"] for s in report["skipped"]} == {"docs/mars.txt", "docs/geese.jsonl"}
    assert report["unchanged"] == 1

    found = json.loads(cli("search", "moons Phobos geese swans", "--index", "idx", "-k", "10",
                           "--json").stdout)
    assert [h["source"] for h in found["hits"]] == ["docs/fox.txt"]
    stats = cli("stats", "--index", "idx")
    assert "documents: 1" in stats.stdout, stats.stdout
    # the next run has nothing left to remove
    third = json.loads(cli("ingest", "docs", "--index", "idx", "--text-field", "text",
                           "--json").stdout)
    assert third["removed"] == 0 and third["unchanged"] == 1


# ----------------------------------------------------- the index folder inside the data folder
@pytest.mark.parametrize("name", ["rag-index", "my [idx] *"])
def test_ingesting_a_folder_that_holds_the_index_leaves_the_index_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """``parallelrag ingest . --index rag-index`` (or ``Index.open("./rag-index")`` then
    ``index.ingest(["."])``): the index's own files (its index.json, database, vector files) are
    not the user's documents. They were indexed (index.json showed up in search) or listed as
    skipped, on every run; glob characters in the folder's name must not matter."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mars.txt").write_text("Mars has two small moons named Phobos and Deimos.\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "fox.txt").write_text("Foxes hunt mice under the snow in winter.\n")
    for _ in range(2):  # the second run finds the index's files already there
        run = cli("ingest", ".", "--index", name, "--embed", "wordllama", "--json")
        assert run.code == 0, run.stderr
        report = json.loads(run.stdout)
        assert report["skipped"] == [], report["skipped"]
        assert report["documents"] == 2, report
    stats = cli("stats", "--index", name)
    assert "documents: 2" in stats.stdout, stats.stdout
    assert count_files(["."], None, None, None, name) == 2  # the progress line's total
    found = json.loads(cli("search", "embedder splitter chunk_size dimension", "--index", name,
                           "-k", "10", "--json").stdout)
    assert sorted(h["source"] for h in found["hits"]) == ["mars.txt", "notes/fox.txt"]

    api = tmp_path / "api"  # the Python API, an index folder given by its absolute path
    api.mkdir()
    (api / "owl.txt").write_text("Owls hunt at night.\n")
    monkeypatch.chdir(api)
    with Index.open(api / name, embedder="wordllama") as index:
        first = index.ingest(["."])
        second = index.ingest([str(api)])
    assert first.skipped == [] and first.added == 1, first
    assert second.skipped == [] and second.unchanged == 1 and second.documents == 1, second


def test_an_index_made_in_the_data_folder_itself_leaves_its_own_files_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``parallelrag ingest docs --index docs``: the user's files are indexed, the index's own
    files beside them (index.json, store.sqlite, ...) are neither indexed nor listed."""
    monkeypatch.chdir(tmp_path)
    docs = make_docs(tmp_path)
    (docs / "index.md").write_text("# Index\n\nThe user's own index page about comets.\n")
    for _ in range(2):
        run = cli("ingest", "docs", "--index", "docs", "--embed", "wordllama", "--json")
        assert run.code == 0, run.stderr
        report = json.loads(run.stdout)
        assert report["skipped"] == [], report["skipped"]
        assert report["documents"] == 3, report
    assert (docs / "store.sqlite").exists() and (docs / "index.json").exists()
    assert count_files(["docs"], None, None, None, "docs") == 3


# ------------------------------------------------- no hits: an empty index, a filter that misses
def test_no_hits_says_why_empty_index_or_filter(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty index answered "the closest passages are not about this question" (there were
    none) and a ``--where`` on a key no chunk has gave a bare "no chunk matches" that reads as
    if the index lacked the content; the message says what the user can act on."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nothing").mkdir()
    assert cli("ingest", "nothing", "--index", "empty", "--embed", "wordllama").code == 0
    run = cli("search", "moons", "--index", "empty")
    assert run.code == 0, run.stderr
    assert "the index is empty" in run.stdout, run.stdout
    answered = json.loads(cli("query", "moons", "--index", "empty", "--json").stdout)
    assert answered["supported"] is False and answered["hits"] == []
    assert "closest passages" not in answered["answer"]
    assert "No passages" in answered["answer"], answered["answer"]

    make_docs(tmp_path)
    assert cli("ingest", "docs", "--index", "idx", "--embed", "wordllama").code == 0
    run = cli("search", "moons", "--index", "idx", "--where", "lang=fr")
    assert run.code == 0, run.stderr
    assert "--where lang=fr" in run.stdout, run.stdout
    with Index.open(tmp_path / "idx") as index:
        ans = index.answer("moons", where={"lang": "fr"})
    assert not ans.supported and "No passages" in ans.text, ans.text

    # a string id that reads as a number: `--where code=123` compares the number 123
    (tmp_path / "recs").mkdir()
    (tmp_path / "recs" / "r.jsonl").write_text(
        '{"text": "Apples grow on trees.", "code": "123"}\n')
    assert cli("ingest", "recs", "--index", "idx", "--text-field", "text").code == 0
    run = cli("search", "apples", "--index", "idx", "--where", "code=123")
    assert run.code == 0 and "no chunk matches" in run.stdout, run.stdout
    assert "--where 'code=\"123\"'" in run.stdout, run.stdout
    quoted = cli("search", "apples", "--index", "idx", "--where", 'code="123"', "-k", "1")
    assert quoted.code == 0 and "Apples grow on trees." in quoted.stdout, quoted.stdout


# ------------------------------------------------------- another embedder than the saved one
def test_ingest_with_another_embedder_tells_the_cli_user_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error named only the Python argument (``embedder=``); a CLI user is told to leave
    out ``--embed``. The index is left as it was."""
    monkeypatch.chdir(tmp_path)
    make_docs(tmp_path)
    assert cli("ingest", "docs", "--index", "idx", "--embed", "wordllama").code == 0
    one_error_line(cli("ingest", "docs", "--index", "idx", "--embed", "minilm"), 2,
                   "'wordllama'", "leave out --embed")
    stats = cli("stats", "--index", "idx")
    assert stats.code == 0 and "documents: 2" in stats.stdout and "wordllama" in stats.stdout


# ------------------------------------------------------------------ "~" in the index setting
def test_a_tilde_in_the_index_setting_means_the_home_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``PARALLELRAG_INDEX=~/rag`` from an env file or a service unit, or ``--index=~/rag``
    (no shell expands either): the index went to a folder literally named ``~`` in the working
    directory, and a search from elsewhere found no index."""
    monkeypatch.chdir(tmp_path)
    make_docs(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    env = {"HOME": str(home), "PARALLELRAG_INDEX": "~/rag"}
    assert cli("ingest", "docs", "--embed", "wordllama", env=env).code == 0
    assert (home / "rag" / "store.sqlite").exists()
    assert not (tmp_path / "~").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    found = cli("search", "moons", "-k", "1", "--index=~/rag", env={"HOME": str(home)})
    assert found.code == 0 and "mars.txt" in found.stdout, (found.stdout, found.stderr)
    assert not (elsewhere / "~").exists()


# ----------------------------------------------------------- UTF-16 text without a byte-order mark
@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_text_without_bom_is_loaded_not_skipped_as_binary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoding: str) -> None:
    """Exports from Windows tools (``bcp -w``, .NET's UnicodeEncoding without a preamble) are
    UTF-16 with no byte-order mark: every other byte is NUL, so the file was skipped as
    "binary" and its text lost. Binary data and 8-bit text with a stray NUL stay binary."""
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    text = "Meeting notes: the budget for the new bridge was approved on Monday, café.\r\n"
    (docs / "notes.txt").write_bytes((text * 3).encode(encoding))
    (docs / "ints.txt").write_bytes(bytes(b for i in range(300) for b in (i % 31 + 1, 0)))
    (docs / "stray.txt").write_bytes(b"plain text with a stray \x00 byte in it")
    run = cli("ingest", "docs", "--index", "idx", "--embed", "wordllama", "--json")
    assert run.code == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["added"] == 1, report
    assert sorted((s["source"], s["reason"]) for s in report["skipped"]) == [
        ("docs/ints.txt", "binary"), ("docs/stray.txt", "binary")]
    found = json.loads(cli("search", "bridge budget", "--index", "idx", "-k", "1",
                           "--json").stdout)
    assert found["hits"][0]["source"] == "docs/notes.txt"
    assert found["hits"][0]["text"].startswith("Meeting notes: the budget")
    assert "café" in found["hits"][0]["text"] and "\x00" not in found["hits"][0]["text"]


def test_an_empty_index_option_is_a_usage_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--index "$IDX"`` with IDX unset in a script: the index files were written straight
    into the working directory, beside the user's documents."""
    monkeypatch.chdir(tmp_path)
    make_docs(tmp_path)
    for args in (["ingest", "docs", "--embed", "wordllama"], ["search", "moons"], ["stats"]):
        run = cli(*args, "--index", "")
        assert run.code == 2, (args, run.code, run.stdout, run.stderr)
        assert "--index" in run.stderr and "Traceback" not in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]


# ------------------------------------------------------------- pruning a folder deleted whole
def test_prune_a_folder_that_was_deleted_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``rm -r old/`` then ``parallelrag ingest old --prune`` (as docs/cli.md shows for
    ``docs/``): refused with "Path 'old' does not exist", so the deleted folder's documents
    stayed searchable unless the user guessed to prune from its parent. With --prune a missing
    path is where files are gone; without it, it is still a usage error (a typo)."""
    monkeypatch.chdir(tmp_path)
    for name, text in (("old/a.txt", "Ferrets sleep a lot."), ("old/b.txt", "Otters swim."),
                       ("keep/c.txt", "Badgers dig setts.")):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cli("ingest", "old", "keep", "--index", "idx", "--embed", "wordllama").code == 0
    for name in ("a.txt", "b.txt"):
        (tmp_path / "old" / name).unlink()
    (tmp_path / "old").rmdir()

    typo = cli("ingest", "olde", "--index", "idx")
    assert typo.code == 2 and "does not exist" in typo.stderr, typo.stderr
    run = cli("ingest", "old", "--index", "idx", "--prune", "--json")
    assert run.code == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["removed"] == 2, report
    stats = cli("stats", "--index", "idx")
    assert "documents: 1" in stats.stdout, stats.stdout


# ------------------------------------------------------ one library warning per damaged file
def test_a_warning_repeated_for_many_files_is_printed_once_with_its_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder of PDFs with the same small damage (a cut trailer) printed the same
    ``warning: pypdf: EOF marker not found`` once per file, without naming any: hundreds of
    identical stderr lines. It is printed once, and once more with its count at the end."""
    import io

    from pypdf import PdfWriter

    monkeypatch.chdir(tmp_path)
    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    buf = io.BytesIO()
    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    writer.write(buf)
    for i in range(25):
        (pdfs / f"p{i:02}.pdf").write_bytes(buf.getvalue()[:-20])
    (pdfs / "ok.txt").write_text("Plain text beside the damaged PDFs.")
    run = cli("ingest", "pdfs", "--index", "idx", "--embed", "wordllama")
    # the cut trailers leave pypdf unable to read the files: each is listed as a failure
    assert run.code == 1 and "1 added" in run.stdout and "25 failed" in run.stdout, run.stdout
    warned = [ln for ln in run.stderr.splitlines() if ln.startswith("warning:")]
    eof = [ln for ln in warned if "EOF marker not found" in ln]
    assert len(eof) == 2, run.stderr
    assert "25 times" in eof[1] and "25 times" not in eof[0], eof
    doc = json.loads(cli("ingest", "pdfs", "--index", "idx2", "--embed", "wordllama",
                         "--json").stdout)
    eof_json = [w for w in doc["warnings"] if "EOF marker not found" in w]
    assert len(eof_json) == 1 and "25 times" in eof_json[0], doc["warnings"]


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_damaged_database_says_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    """"database disk image is malformed" / "file is not a database" alone left the user
    guessing; the one error line (exit 2) says the index is damaged and how to recover."""
    monkeypatch.chdir(tmp_path)
    make_docs(tmp_path)
    assert cli("ingest", "docs", "--index", "idx", "--embed", "wordllama").code == 0
    db = tmp_path / "idx" / "store.sqlite"
    data = db.read_bytes()
    db.write_bytes(data[:5000] if damage == "truncated" else b"x" * 4096 + data[4096:])
    for args in (["search", "moons"], ["stats"], ["ingest", "docs"]):
        one_error_line(cli(*args, "--index", "idx"), 2, "store.sqlite", "damaged",
                       "ingest again")


# ------------------------------------------------------------- the disk fills up mid-ingest
def _file_size_limit() -> None:
    """In the child: no file may grow past 1.5 MB (a full disk, without root), and going past
    it is an error (EFBIG), not the SIGXFSZ that would kill the process."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_500_000, 1_500_000))


def test_a_full_disk_during_ingest_fails_in_one_line_and_never_hangs(tmp_path: Path) -> None:
    """The disk filled up while `ingest` wrote: now and then the command hung for good (the
    split stage lost its cancellation in asyncio.wait_for and waited on a queue nobody read),
    and other runs printed asyncio's "Future exception was never retrieved" and a
    CancelledError under the error line. Each run must exit 1 with one ``error:`` line.
    Several runs, because both depended on timing."""
    import sys

    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3000):
        (docs / f"n{i:04}.txt").write_text(f"Note {i} on the orchard, apples and pears {i}.")
    env = {**os.environ, "PARALLELRAG_PROGRESS_EVERY": "0"}
    for attempt in range(5):
        idx = tmp_path / f"idx{attempt}"
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "parallelrag", "ingest", str(docs), "--index", str(idx),
                 "--embed", "wordllama"], capture_output=True, text=True, timeout=40, env=env,
                cwd=tmp_path, preexec_fn=_file_size_limit)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run {attempt}: ingest hung after the disk filled up")
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 1, (attempt, proc.returncode, proc.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error:"), (attempt, proc.stderr[-2000:])


# ------------------------------------------------------------ a glob given as a path (API)
def test_a_glob_given_as_a_path_says_patterns_are_not_expanded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``index.ingest(["docs/*.txt"])`` indexed nothing and listed the pattern as "not found",
    as if the files were missing; the reason says to pass the folder with ``include=``, which
    then indexes the files."""
    monkeypatch.chdir(tmp_path)
    make_docs(tmp_path)
    with Index.open(tmp_path / "idx", embedder="wordllama") as index:
        report = index.ingest(["docs/*.txt"])
        assert report.added == 0
        ((source, reason),) = report.skipped
        assert source == "docs/*.txt" and "include=" in reason, reason
        assert index.ingest(["docs"], include=["*.txt"]).added == 2


def test_files_that_cannot_be_loaded_are_failures_not_skips(tmp_path: Path) -> None:
    # a damaged PDF, a JSON Lines file with a broken line, text that decodes as nothing: files of
    # a kind the user asked for that are not in the index. They were listed as "skipped" with
    # exit 0 and ok: true, so a script or a nightly job could not tell; binary and empty files
    # stay skips (not content), and every good file is still ingested
    docs = make_docs(tmp_path)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    (docs / "records.jsonl").write_text('{"text": "alpha"}\n{"text": broken\n')
    (docs / "photo.bin").write_bytes(bytes(range(256)) * 4)
    (docs / "blank.md").write_text("   \n")
    index = tmp_path / "idx"
    run = cli("ingest", docs, "--index", index, "--embed", "wordllama", "--json")
    assert run.code == 1, run.stderr
    doc = json.loads(run.stdout)
    assert doc["ok"] is False and doc["added"] == 2
    failed = {Path(f["source"]).name: f["reason"] for f in doc["failed"]}
    skipped = {Path(s["source"]).name: s["reason"] for s in doc["skipped"]}
    assert set(failed) == {"broken.pdf", "records.jsonl"}, doc
    assert failed["broken.pdf"].startswith("invalid PDF") and "line 2" in failed["records.jsonl"]
    assert skipped == {"photo.bin": "binary", "blank.md": "empty"}, doc
    text = cli("ingest", docs, "--index", index, "--embed", "wordllama")
    assert text.code == 1 and f"failed {docs / 'broken.pdf'}: invalid PDF" in text.stdout, text.stdout
    # the Python API says the same: the report is not ok
    report = Index.open(index).ingest([docs])
    assert not report.ok and {Path(s).name for s, _ in report.failed} == set(failed)
    assert report.unchanged == 2
