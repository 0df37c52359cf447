"""Fixtures of the CLI tests: a small corpus and an index built by the real `parallelrag ingest`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import Run, invoke, make_corpus


@pytest.fixture
def cli() -> Callable[..., Run]:
    return lambda *args, env=None: invoke([str(a) for a in args], env)


@pytest.fixture
def corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh corpus under tmp_path (the working directory, so sources are relative)."""
    monkeypatch.chdir(tmp_path)
    make_corpus(tmp_path)
    return tmp_path


@pytest.fixture
def built(corpus: Path) -> Path:
    """``docs/`` ingested into ``idx`` with the local wordllama model (offline, fast)."""
    run = invoke(["ingest", "docs", "--index", "idx", "--embed", "wordllama"])
    assert run.code == 0, run.stderr
    return corpus
