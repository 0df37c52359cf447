"""What the commands print: plain unwrapped text when piped, one JSON schema per command with
the same names for the same things, library warnings kept off stderr with --json, full help."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
import orjson
import pytest
from cli_helpers import LONG_LINE, Run

from parallelrag.cli import main

pytestmark = pytest.mark.timeout(120)

HIT_KEYS = {"rank", "chunk_id", "source", "start", "end", "score", "score_kind", "vector_score",
            "keyword_score", "text", "metadata"}
HEAD_KEYS = {"command", "index", "ok", "warnings"}


def test_piped_ingest_summary_is_complete(corpus: Path, cli: Callable[..., Run]) -> None:
    run = cli("ingest", "docs", "--index", "idx", "--embed", "wordllama")
    assert run.code == 0
    assert "…" not in run.stdout
    first = run.stdout.splitlines()[0]
    assert first == ("ingest into idx: 4 added, 0 updated, 0 unchanged, 0 removed, 0 skipped, "
                     "0 failed")
    assert "4 chunks written" in run.stdout and "rate-limited (429)" in run.stdout
    assert run.stderr == ""  # no progress bar when stderr is not a terminal (and quick runs)


def test_piped_search_is_not_wrapped(built: Path, cli: Callable[..., Run]) -> None:
    run = cli("search", "brackets intact eighty columns", "--index", "idx", "-k", "4")
    assert run.code == 0
    assert any(line.strip() == LONG_LINE for line in run.stdout.splitlines()), run.stdout
    assert "fused score" in run.stdout.splitlines()[0]


def test_search_json_schema(built: Path, cli: Callable[..., Run]) -> None:
    run = cli("search", "rate limits", "--index", "idx", "-k", "3", "--json")
    assert run.code == 0 and run.stderr == ""
    doc = orjson.loads(run.stdout)
    assert set(doc) == HEAD_KEYS | {"query", "mode", "k", "where", "hits"}
    assert doc["command"] == "search" and doc["index"] == "idx" and doc["ok"] is True
    assert (doc["query"], doc["mode"], doc["k"], doc["where"]) == ("rate limits", "hybrid", 3,
                                                                     None)
    assert len(doc["hits"]) == 3
    assert [h["rank"] for h in doc["hits"]] == [1, 2, 3]
    for h in doc["hits"]:
        assert set(h) == HIT_KEYS
        assert h["score_kind"] == "fused"
        assert h["vector_score"] is not None or h["keyword_score"] is not None
    assert doc["hits"][0]["source"] == "docs/beta.txt"
    scores = [h["score"] for h in doc["hits"]]
    assert scores == sorted(scores, reverse=True)
    vec = orjson.loads(cli("search", "rate limits", "--index", "idx", "--mode", "vector",
                           "--json").stdout)
    assert {h["score_kind"] for h in vec["hits"]} == {"cosine"}


def test_query_json_schema_matches_search(built: Path, cli: Callable[..., Run]) -> None:
    run = cli("query", "rate limits", "--index", "idx", "-k", "2", "--json")
    assert run.code == 0 and run.stderr == ""
    doc = orjson.loads(run.stdout)
    assert set(doc) == HEAD_KEYS | {"query", "mode", "k", "where", "answer", "extractive",
                                    "supported", "citations", "hits", "usage"}
    assert doc["command"] == "query" and doc["extractive"] is True and doc["usage"] == {}
    assert len(doc["hits"]) == 2 and all(set(h) == HIT_KEYS for h in doc["hits"])
    for c in doc["citations"]:
        assert set(c) == {"number", "chunk_id", "source", "start", "end"}
        hit = doc["hits"][c["number"] - 1]
        assert (hit["chunk_id"], hit["source"], hit["start"], hit["end"]) == (
            c["chunk_id"], c["source"], c["start"], c["end"])
    search = orjson.loads(cli("search", "rate limits", "--index", "idx", "-k", "2",
                              "--json").stdout)
    assert [h["chunk_id"] for h in search["hits"]] == [h["chunk_id"] for h in doc["hits"]]


def test_query_with_the_simulated_llm(built: Path, cli: Callable[..., Run], make_sim) -> None:
    srv = make_sim()
    run = cli("query", "rate limits", "--index", "idx", "--llm", "openai:gpt-4o-mini",
              "--base-url", srv.url, "--json")
    assert run.code == 0, run.stderr
    doc = orjson.loads(run.stdout)
    assert doc["extractive"] is False and doc["answer"]
    assert doc["usage"]["total_tokens"] > 0
    run = cli("query", "rate limits", "--index", "idx", "--llm", "openai:gpt-4o-mini",
              "--base-url", srv.url)
    assert run.code == 0
    assert run.stdout.strip()
    assert srv.stats()["by_endpoint"]


def test_stats_json_schema(built: Path, cli: Callable[..., Run]) -> None:
    run = cli("stats", "--index", "idx", "--json")
    assert run.code == 0
    doc = orjson.loads(run.stdout)
    assert set(doc) == HEAD_KEYS | {"documents", "chunks", "embedder", "splitter",
                                    "bytes_on_disk", "store"}
    assert doc["documents"] == 4 and doc["chunks"] == 4
    assert doc["embedder"]["provider"] == "local" and doc["embedder"]["dimension"] > 0
    text = cli("stats", "--index", "idx").stdout
    assert "documents: 4" in text and "chunks: 4" in text


def test_ingest_json_schema(corpus: Path, cli: Callable[..., Run]) -> None:
    run = cli("ingest", "docs", "--index", "idx", "--embed", "wordllama", "--json")
    assert run.code == 0 and run.stderr == ""
    doc = orjson.loads(run.stdout)
    for key in HEAD_KEYS | {"added", "updated", "unchanged", "removed", "documents", "chunks",
                            "embedded", "cache_hits", "tokens", "requests", "retries",
                            "rate_limited", "wall_s", "stages", "failed", "skipped",
                            "missing"}:
        assert key in doc, key
    assert doc["command"] == "ingest" and doc["ok"] is True
    assert (doc["added"], doc["failed"], doc["skipped"], doc["missing"]) == (4, [], [], [])
    again = orjson.loads(cli("ingest", "docs", "--index", "idx", "--json").stdout)
    assert (again["added"], again["unchanged"]) == (0, 4)


def _bad_pdf() -> bytes:
    """A one-page PDF whose startxref points a few bytes off: pypdf warns and recovers."""
    content = b"BT /F1 12 Tf 72 720 Td (Hello warning world about the GIL) Tj ET"
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1,
                                                                              xref + 7)
    return out


def test_json_keeps_library_warnings_off_stderr(tmp_path: Path, cli: Callable[..., Run],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pdfs").mkdir()
    (tmp_path / "pdfs" / "bad.pdf").write_bytes(_bad_pdf())
    run = cli("ingest", "pdfs", "--index", "idx", "--embed", "wordllama", "--json")
    assert run.code == 0
    assert run.stderr == ""
    doc = orjson.loads(run.stdout)
    assert doc["added"] == 1
    assert any("pypdf" in w and "startxref" in w for w in doc["warnings"]), doc["warnings"]
    run = cli("ingest", "pdfs", "--index", "idx2", "--embed", "wordllama")
    assert run.code == 0
    assert any(ln.startswith("warning: pypdf") for ln in run.err_lines), run.stderr


def _all_commands() -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []

    def walk(prefix: str, cmd: click.Command) -> None:
        out.append((prefix, cmd))
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                if prefix.startswith("parallelrag sim"):
                    continue
                walk(f"{prefix} {name}", sub)

    walk("parallelrag", main)
    return [(n, c) for n, c in out if not n.startswith("parallelrag sim")]


def test_every_option_has_help_and_shows_defaults_and_env(cli: Callable[..., Run]) -> None:
    missing = [f"{name} {p.opts[0]}" for name, cmd in _all_commands() for p in cmd.params
               if isinstance(p, click.Option) and not p.help]
    assert missing == []
    top = cli("--help").stdout
    for var in ("PARALLELRAG_INDEX", "PARALLELRAG_LLM", "PARALLELRAG_EMBED", "OPENAI_API_KEY",
                "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "Exit codes", "fused score"):
        assert var in top, var
    ingest = " ".join(cli("ingest", "--help").stdout.split())
    assert "env var: PARALLELRAG_INDEX" in ingest
    assert "default: .parallelrag" in ingest
    assert "default: 50000000" in ingest
    assert "--chunk-overlap" in ingest and "a tenth of the chunk size" in ingest
    query = " ".join(cli("query", "--help").stdout.split())
    assert "env var: PARALLELRAG_LLM" in query and "default: 5" in query
