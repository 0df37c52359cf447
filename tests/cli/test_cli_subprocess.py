"""A few runs of the installed command in a real subprocess: exit codes, one-line errors and
piped (non-TTY) output as a shell script sees them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from cli_helpers import LONG_LINE, free_port, make_corpus

pytestmark = pytest.mark.timeout(180)


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "PARALLELRAG_INDEX")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "parallelrag", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=150)


def test_real_process_exit_codes_and_piped_output(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    env = {"PARALLELRAG_INDEX": "idx"}
    p = _run("ingest", "docs", "--embed", "wordllama", cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("ingest into idx: 4 added") and "…" not in p.stdout
    p = _run("search", "", cwd=tmp_path, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    p = _run("search", "brackets intact", "-k", "4", cwd=tmp_path, env=env)
    assert p.returncode == 0
    assert "    " + LONG_LINE in p.stdout.splitlines()  # one line, unwrapped, brackets kept
    p = _run("search", "rate limits", "--json", cwd=tmp_path, env=env)
    assert p.returncode == 0 and p.stderr == ""
    assert orjson.loads(p.stdout)["hits"][0]["source"] == "docs/beta.txt"
    url = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.perf_counter()
    p = _run("query", "threads", "--llm", "openai:gpt-4o-mini", "--base-url", url, cwd=tmp_path,
             env=env)
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot connect to"), p.stderr
    assert time.perf_counter() - t0 < 30
    p = _run("ingest", "docs", "--chunk-size", "-5", cwd=tmp_path, env=env)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "--chunk-size" in p.stderr
