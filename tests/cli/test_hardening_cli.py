"""Hostile-user probes of the CLI: a reader that closes the pipe early, odd `--where` values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from cli_helpers import make_corpus

pytestmark = pytest.mark.timeout(180)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PARALLELRAG_INDEX")}
    env["PARALLELRAG_INDEX"] = "idx"
    return env


def test_reader_closing_the_pipe_is_not_an_error(tmp_path: Path) -> None:
    """`parallelrag search ... | head -1`: when the reader stops reading, the command stops
    quietly (no 'error: BrokenPipeError' line, no 'Exception ignored' noise) with 141, the
    shell's code for a writer ended by SIGPIPE."""
    docs = make_corpus(tmp_path)
    for i in range(60):
        (docs / f"extra{i}.txt").write_text(f"extra document {i} about rate limits " * 40)
    p = subprocess.run([sys.executable, "-m", "parallelrag", "ingest", "docs", "--embed",
                        "wordllama"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                       timeout=150)
    assert p.returncode == 0, p.stderr
    for args in (["search", "rate limits", "-k", "60"], ["stats"], ["search", "limits", "--json"]):
        proc = subprocess.Popen([sys.executable, "-m", "parallelrag", *args], cwd=tmp_path,
                                env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the first line (`| head -0`)
        err = proc.stderr.read().decode()
        rc = proc.wait(timeout=120)
        assert "error" not in err.lower() and "Exception ignored" not in err, err
        assert rc == 141, (args, rc, err)
    # with a reader, the same commands still exit 0
    p = subprocess.run([sys.executable, "-m", "parallelrag", "stats"], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=150)
    assert p.returncode == 0 and p.stdout


def test_an_exception_group_is_reported_by_the_error_inside() -> None:
    """A failure inside one of the library's task groups reaches the CLI as an ExceptionGroup:
    the one-line error and the exit code are those of the error inside (it once printed
    'unexpected ExceptionGroup: unhandled errors in a TaskGroup' with exit 1 for a ConfigError)."""
    from parallelrag.cli_support import error_line, exit_code_for
    from parallelrag.errors import ConfigError, ServerError

    inner = ConfigError("metadata is not JSON-serialisable")
    group = ExceptionGroup("unhandled errors in a TaskGroup", [inner])
    assert error_line(group) == "metadata is not JSON-serialisable [ConfigError]"
    assert exit_code_for(group) == exit_code_for(inner) == 2
    nested = ExceptionGroup("outer", [ExceptionGroup("inner", [ServerError("boom")]), inner])
    assert error_line(nested) == "boom [ServerError] (and 1 more error)"
    assert exit_code_for(nested) == 1


def test_where_source_is_always_a_glob_string(corpus: Path, cli: Any) -> None:
    """`--where source=2024` names a file called 2024 (a glob, as the help says), not the JSON
    number 2024 (which the store refuses: "filter 'source' must be a glob string", exit 2)."""
    (corpus / "2024").write_text("The annual report of 2024 about walnuts.", encoding="utf-8")
    (corpus / "true").write_text("A file named true about walnuts.", encoding="utf-8")
    run = cli("ingest", "2024", "true", "docs", "--index", "idx", "--embed", "wordllama")
    assert run.code == 0, run.stderr
    for name in ("2024", "true"):
        run = cli("search", "walnuts", "--index", "idx", "--where", f"source={name}", "--json")
        assert run.code == 0, run.stderr
        hits = orjson.loads(run.stdout)["hits"]
        assert [h["source"] for h in hits] == [name]
    # other keys still read JSON values
    run = cli("search", "walnuts", "--index", "idx", "--where", "n=5", "--json")
    assert run.code == 0 and orjson.loads(run.stdout)["where"] == {"n": 5}
