"""Deleted files, `--prune`, `remove` and `--where`, through the real command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from cli_helpers import Run

pytestmark = pytest.mark.timeout(120)


def _sources(cli: Callable[..., Run], query: str, *extra: str) -> list[str]:
    run = cli("search", query, "--index", "idx", "-k", "10", "--json", *extra)
    assert run.code == 0, run.stderr
    return [h["source"] for h in orjson.loads(run.stdout)["hits"]]


def test_summary_names_deleted_files_and_suggests_prune(built: Path,
                                                        cli: Callable[..., Run]) -> None:
    (built / "docs" / "beta.txt").unlink()
    run = cli("ingest", "docs", "--index", "idx")
    assert run.code == 0
    assert "missing docs/beta.txt" in run.stdout
    assert "--prune" in run.stdout
    assert "docs/beta.txt" in _sources(cli, "rate limits token buckets")  # still searchable
    doc = orjson.loads(cli("ingest", "docs", "--index", "idx", "--json").stdout)
    assert doc["missing"] == ["docs/beta.txt"]
    doc = orjson.loads(cli("ingest", "docs", "--index", "idx", "--prune", "--json").stdout)
    assert (doc["removed"], doc["missing"]) == (1, [])
    assert "docs/beta.txt" not in _sources(cli, "rate limits token buckets")
    run = cli("ingest", "docs", "--index", "idx")
    assert "missing" not in run.stdout


def test_remove_command(built: Path, cli: Callable[..., Run]) -> None:
    assert "docs/alpha.txt" in _sources(cli, "interpreter lock")
    run = cli("remove", "docs/alpha.txt", "--index", "idx")
    assert run.code == 0, run.stderr
    assert "removed docs/alpha.txt" in run.stdout
    assert "docs/alpha.txt" not in _sources(cli, "interpreter lock")
    assert (built / "docs" / "alpha.txt").exists()  # the file itself is untouched
    run = cli("remove", "docs/alpha.txt", "docs/gamma.md", "--index", "idx", "--json")
    assert run.code == 1  # one argument matched nothing
    doc = orjson.loads(run.stdout)
    assert (doc["command"], doc["removed"], doc["not_found"], doc["ok"]) == (
        "remove", ["docs/gamma.md"], ["docs/alpha.txt"], False)
    stats = orjson.loads(cli("stats", "--index", "idx", "--json").stdout)
    assert stats["documents"] == 2


def test_remove_a_json_file_removes_its_records(corpus: Path, cli: Callable[..., Run]) -> None:
    (corpus / "docs" / "recs.jsonl").write_text(
        '{"text": "first record about queues"}\n{"text": "second record about queues"}\n')
    assert cli("ingest", "docs", "--index", "idx", "--embed", "wordllama").code == 0
    recs = [s for s in _sources(cli, "record about queues") if s.startswith("docs/recs.jsonl")]
    assert len(recs) == 2
    doc = orjson.loads(cli("remove", "docs/recs.jsonl", "--index", "idx", "--json").stdout)
    assert sorted(doc["removed"]) == sorted(recs)
    assert not [s for s in _sources(cli, "record about queues") if s.startswith("docs/recs")]


def test_where_filters_search_and_query(built: Path, cli: Callable[..., Run]) -> None:
    assert _sources(cli, "search", "--where", "source=docs/g*") == ["docs/gamma.md"]
    assert _sources(cli, "search", "--where", "source=nothing/*") == []
    run = cli("search", "x", "--index", "idx", "--where", "novalue")
    assert run.code == 2 and "KEY=VALUE" in run.stderr
    run = cli("query", "rank fusion", "--index", "idx", "--where", "source=docs/g*", "--json")
    assert run.code == 0, run.stderr
    doc = orjson.loads(run.stdout)
    assert doc["where"] == {"source": "docs/g*"}
    assert {h["source"] for h in doc["hits"]} == {"docs/gamma.md"}
    run = cli("query", "rank fusion", "--index", "idx", "--where", "source=docs/b*")
    assert run.code == 0
    assert "docs/beta.txt" in run.stdout and "docs/gamma.md" not in run.stdout


def test_rechunk_rebuilds_with_new_splitter_settings(built: Path,
                                                     cli: Callable[..., Run]) -> None:
    before = orjson.loads(cli("stats", "--index", "idx", "--json").stdout)
    assert before["chunks"] == 4
    # other settings than the saved ones, without --rechunk: a configuration error naming it
    run = cli("ingest", "docs", "--index", "idx", "--chunk-size", "40", "--chunk-overlap", "5")
    assert run.code == 2 and "--rechunk" in run.stderr and "Traceback" not in run.stderr
    run = cli("ingest", "docs", "--index", "idx", "--chunk-size", "40", "--chunk-overlap", "5",
              "--rechunk", "--json")
    assert run.code == 0, run.stderr
    doc = orjson.loads(run.stdout)
    assert doc["updated"] == 4 and doc["chunks"] > 4
    after = orjson.loads(cli("stats", "--index", "idx", "--json").stdout)
    assert after["splitter"]["chunk_size"] == 40 and after["splitter"]["chunk_overlap"] == 5
    assert after["chunks"] == doc["chunks"]
    # the saved settings are used from now on: a plain ingest finds nothing to do
    again = orjson.loads(cli("ingest", "docs", "--index", "idx", "--json").stdout)
    assert (again["unchanged"], again["updated"]) == (4, 0)
    # the same settings again need no --rechunk
    same = cli("ingest", "docs", "--index", "idx", "--chunk-size", "40", "--chunk-overlap", "5")
    assert same.code == 0, same.stderr
