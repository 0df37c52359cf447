"""Walking trees: globs, symlinks, duplicates, special files, explicit files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from parallelrag.loaders import Skip, iter_sources, load_path
from parallelrag.loaders.sources import glob_to_regex


def _tree(root: Path, names: list[str]) -> None:
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(n)


def _walk(root: Path, **kw: object) -> tuple[list[str], list[tuple[str, str]]]:
    skips: list[Skip] = []
    files = [p.relative_to(root).as_posix()
             for p in iter_sources([root], on_skip=skips.append, **kw)]  # type: ignore[arg-type]
    return files, [(os.path.relpath(s.path, root), s.reason) for s in skips]


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("*.md", ["a.md"], ["a/b.md", "a.mdx"]),
        ("docs/**/*.md", ["docs/a.md", "docs/x/y/a.md"], ["a.md", "docsx/a.md"]),
        ("**/drafts", ["drafts", "a/b/drafts"], ["a/drafts2"]),
        ("drafts/**", ["drafts/a", "drafts/a/b"], ["x/drafts/a"]),
        ("a?c", ["abc"], ["a/c", "abbc"]),
        ("[!a]*.txt", ["b.txt"], ["a.txt"]),
        ("[ab].txt", ["a.txt", "b.txt"], ["c.txt"]),
        ("weird[", ["weird["], ["weird"]),
    ],
)
def test_glob_to_regex(pattern: str, yes: list[str], no: list[str]) -> None:
    import re

    rx = re.compile(glob_to_regex(pattern), re.DOTALL)
    assert all(rx.fullmatch(s) for s in yes)
    assert not any(rx.fullmatch(s) for s in no)


def test_include_exclude(tmp_path: Path) -> None:
    _tree(tmp_path, ["a.md", "b.txt", "docs/c.md", "docs/drafts/d.md", "docs/x/drafts/e.md",
                     "build/f.md", "src/build.md", "notes/build/g.md"])
    files, skips = _walk(tmp_path, include=["*.md"])
    assert files == ["a.md", "build/f.md", "docs/c.md", "docs/drafts/d.md",
                     "docs/x/drafts/e.md", "notes/build/g.md", "src/build.md"]
    assert skips == []
    # a name pattern excludes at any depth; an anchored one only at the root
    assert _walk(tmp_path, include=["*.md"], exclude=["drafts"])[0] == [
        "a.md", "build/f.md", "docs/c.md", "notes/build/g.md", "src/build.md"]
    assert _walk(tmp_path, exclude=["/build", "docs/**", "*.txt"])[0] == [
        "a.md", "notes/build/g.md", "src/build.md"]
    # trailing slash: directories only, so src/build.md stays
    assert _walk(tmp_path, exclude=["build/"])[0] == [
        "a.md", "b.txt", "docs/c.md", "docs/drafts/d.md", "docs/x/drafts/e.md", "src/build.md"]
    assert _walk(tmp_path, include=["docs/**/*.md"])[0] == [
        "docs/c.md", "docs/drafts/d.md", "docs/x/drafts/e.md"]
    with pytest.raises(TypeError):
        list(iter_sources([tmp_path], include="*.md"))


def test_explicit_files_bypass_filters_and_missing_roots_are_reported(tmp_path: Path) -> None:
    _tree(tmp_path, [".hidden.md", "a.txt"])
    skips: list[Skip] = []
    got = list(iter_sources([tmp_path / ".hidden.md", tmp_path / "nope", tmp_path / "a.txt"],
                            include=["*.rst"], on_skip=skips.append))
    assert got == [tmp_path / ".hidden.md", tmp_path / "a.txt"]
    assert skips == [Skip(str(tmp_path / "nope"), "not found")]


def test_symlinks_loops_duplicates_and_no_follow(tmp_path: Path) -> None:
    root = tmp_path / "top"
    _tree(root, ["real/x.txt", "z.txt"])
    os.symlink("real", root / "alias")            # dir reached twice
    os.symlink("z.txt", root / "zz.txt")           # file reached twice
    os.symlink("selfloop", root / "selfloop")      # a symlink chain that never resolves
    os.symlink("../..", root / "real" / "up")      # above the root (tmp_path), back into it
    os.symlink("gone", root / "real" / "dead.md")
    files, skips = _walk(root)
    assert files == ["alias/x.txt", "z.txt"]
    assert skips == [
        ("alias/dead.md", "broken symlink"),
        ("alias/up/top", "symlink loop"),
        ("real", f"duplicate of {root / 'alias'}"),
        ("selfloop", "symlink loop"),
        ("zz.txt", f"duplicate of {root / 'z.txt'}"),
    ]
    files, skips = _walk(root, follow_symlinks=False)
    assert files == ["real/x.txt", "z.txt"] and skips == []


def test_same_root_twice_and_overlapping_roots(tmp_path: Path) -> None:
    _tree(tmp_path, ["d/a.txt", "d/sub/b.txt"])
    skips: list[Skip] = []
    got = list(iter_sources([tmp_path / "d", tmp_path / "d", tmp_path / "d" / "sub",
                             tmp_path / "d" / "a.txt"], on_skip=skips.append))
    assert got == [tmp_path / "d" / "a.txt", tmp_path / "d" / "sub" / "b.txt"]
    assert skips == []


def test_special_files_and_max_bytes(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.txt")
    (tmp_path / "big.txt").write_text("x" * 101)
    (tmp_path / "ok.txt").write_text("x" * 100)
    files, skips = _walk(tmp_path, max_bytes=100)
    assert files == ["ok.txt"]
    assert skips == [("big.txt", "too large (101 bytes > max_bytes 100)"),
                     ("pipe.txt", "not a regular file")]
    assert _walk(tmp_path, max_bytes=None)[0] == ["big.txt", "ok.txt"]
    results = list(load_path(tmp_path, max_bytes=100))
    assert [(Path(r.path).name, r.skip.reason if r.skip else "ok") for r in results] == [
        ("big.txt", "too large (101 bytes > max_bytes 100)"),
        ("ok.txt", "ok"),
        ("pipe.txt", "not a regular file"),
    ]


def test_unreadable_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tree(tmp_path, ["a.txt", "locked/b.txt"])
    real_scandir = os.scandir

    def scandir(path: object) -> object:
        if Path(str(path)).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[call-overload]

    monkeypatch.setattr("parallelrag.loaders.sources.os.scandir", scandir)
    assert _walk(tmp_path) == (["a.txt"], [("locked", "unreadable: Permission denied")])


def test_deep_tree_does_not_recurse(tmp_path: Path) -> None:
    p = tmp_path
    for _ in range(150):
        p = p / "d"
    p.mkdir(parents=True)
    (p / "leaf.txt").write_text("leaf")
    files, _ = _walk(tmp_path)
    assert files == ["/".join(["d"] * 150) + "/leaf.txt"]
