"""Exit codes and one-line errors, each case driven through the real `parallelrag` command.

0 ok; 1 a provider or part of the work failed (failures listed); 2 usage or configuration.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from cli_helpers import Run, assert_one_line_error, free_port

pytestmark = pytest.mark.timeout(120)


def test_empty_query_is_a_usage_error(built: Path, cli: Callable[..., Run]) -> None:
    for cmd in ("search", "query"):
        for q in ("", "   "):
            run = cli(cmd, q, "--index", "idx")
            assert_one_line_error(run, 2, "QUESTION is empty")


@pytest.mark.parametrize("k", ["-3", "0"])
def test_k_out_of_range_is_a_usage_error(built: Path, cli: Callable[..., Run], k: str) -> None:
    run = cli("search", "threads", "--index", "idx", "-k", k)
    assert_one_line_error(run, 2, "-k")
    assert run.stdout == ""


@pytest.mark.parametrize("size", ["-5", "0"])
def test_bad_chunk_size(corpus: Path, cli: Callable[..., Run], size: str) -> None:
    run = cli("ingest", "docs", "--index", "idx", "--embed", "wordllama", "--chunk-size", size)
    assert_one_line_error(run, 2, "--chunk-size")
    assert not (corpus / "idx").exists()  # nothing was created for a rejected command


def test_overlap_not_smaller_than_size(corpus: Path, cli: Callable[..., Run]) -> None:
    for overlap in ("200", "100"):
        run = cli("ingest", "docs", "--index", "idx", "--embed", "wordllama",
                  "--chunk-size", "100", "--chunk-overlap", overlap)
        assert_one_line_error(run, 2, "--chunk-overlap", "smaller than the chunk size")
    run = cli("ingest", "docs", "--index", "idx", "--embed", "wordllama",
              "--chunk-overlap", "-1")
    assert_one_line_error(run, 2, "--chunk-overlap")


def test_unusable_index_folder_is_a_configuration_error(corpus: Path,
                                                        cli: Callable[..., Run]) -> None:
    # SQLite cannot open a database file that is a directory: the raw OperationalError case
    # (as root, permission bits do not stop writes, so this is how the test makes it fail)
    bad = corpus / "bad-idx"
    for name in ("embeddings.sqlite", "store.sqlite"):
        (bad / name).mkdir(parents=True)
    run = cli("ingest", "docs", "--index", "bad-idx", "--embed", "wordllama")
    assert_one_line_error(run, 2, "cannot use the index folder bad-idx")
    # a path below a file
    (corpus / "afile").write_text("x")
    run = cli("ingest", "docs", "--index", "afile/idx", "--embed", "wordllama")
    assert_one_line_error(run, 2, "cannot use the index folder afile/idx")


def test_missing_index(corpus: Path, cli: Callable[..., Run]) -> None:
    for args in (["search", "threads"], ["query", "threads"], ["stats"], ["remove", "x"]):
        run = cli(*args, "--index", "nowhere")
        assert_one_line_error(run, 2, "no index at", "nowhere", "parallelrag ingest")
    assert not (corpus / "nowhere").exists()


def test_wrong_api_key_for_the_llm(built: Path, cli: Callable[..., Run], make_sim) -> None:
    srv = make_sim(api_key="sk-right-key-123456")
    run = cli("query", "threads", "--index", "idx", "--llm", "openai:gpt-4o-mini",
              "--base-url", srv.url, env={"OPENAI_API_KEY": "sk-wrong-key-654321"})
    line = assert_one_line_error(run, 1, "AuthenticationError", "401")
    assert "sk-wrong-key-654321" not in run.stderr + run.stdout
    assert "sk-right" not in line


def test_unreachable_base_url_fails_fast(corpus: Path, cli: Callable[..., Run]) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.perf_counter()
    run = cli("ingest", "docs", "--index", "idx", "--embed", "openai:text-embedding-3-small",
              "--base-url", url)
    assert_one_line_error(run, 1, "cannot connect to", url)
    run = cli("ingest", "docs", "--index", "idx2", "--embed", "wordllama")
    assert run.code == 0
    run = cli("query", "threads", "--index", "idx2", "--llm", "openai:gpt-4o-mini",
              "--base-url", url)
    assert_one_line_error(run, 1, "cannot connect to", url)
    assert time.perf_counter() - t0 < 20  # was a traceback after ~18 s per command


def test_server_error_while_opening_is_a_provider_failure(corpus: Path, cli: Callable[..., Run],
                                                          make_sim) -> None:
    srv = make_sim(fault_500=1.0)
    spec = f"openai://text-embedding-3-small?base_url={srv.url}&max_retries=0"
    run = cli("ingest", "docs", "--index", "idx", "--embed", spec)
    assert_one_line_error(run, 1, "500", "ServerError")  # was exit 2, like a usage error


def test_markup_in_messages_is_printed_as_is(built: Path, cli: Callable[..., Run]) -> None:
    run = cli("ingest", "docs", "--index", "other", "--embed", "foo://x[local]")
    assert_one_line_error(run, 2, "foo://x[local]")
    run = cli("search", "brackets intact", "--index", "idx", "-k", "4")
    assert run.code == 0
    assert "pip install 'parallelrag[local]'" in run.stdout


def test_debug_prints_the_traceback(built: Path, cli: Callable[..., Run]) -> None:
    run = cli("--debug", "ingest", "docs", "--index", "other", "--embed", "foo://x")
    assert run.code == 2
    assert "Traceback" in run.stderr and "ConfigError" in run.stderr
    assert run.err_lines[-1].startswith("error:")
    run = cli("ingest", "docs", "--index", "other", "--embed", "foo://x", "--debug")
    assert run.code == 2 and "Traceback" in run.stderr
    run = cli("ingest", "docs", "--index", "other", "--embed", "foo://x",
              env={"PARALLELRAG_DEBUG": "1"})
    assert run.code == 2 and "Traceback" in run.stderr


def test_partial_failure_exits_1_and_lists_the_failures(corpus: Path, cli: Callable[..., Run],
                                                        make_sim) -> None:
    # the sim rejects inputs over 40 tokens: the long document fails, the others are indexed
    srv = make_sim(max_input_tokens=40)
    spec = f"openai://text-embedding-3-small?base_url={srv.url}&max_retries=0&batch_size=1"
    run = cli("ingest", "docs", "--index", "idx", "--embed", spec, "--json")
    assert run.code == 1, run.stderr
    doc = orjson.loads(run.stdout)
    assert doc["ok"] is False
    failed = [f["source"] for f in doc["failed"]]
    assert failed == ["docs/long.txt"], doc["failed"]
    assert doc["added"] == 3
    run = cli("ingest", "docs", "--index", "idx")
    assert run.code == 1
    assert "failed docs/long.txt:" in run.stdout


def test_provider_of_a_saved_embedder_gone(corpus: Path, cli: Callable[..., Run],
                                           make_sim) -> None:
    srv = make_sim()
    spec = f"openai://text-embedding-3-small?base_url={srv.url}&dimensions=64"
    assert cli("ingest", "docs", "--index", "idx", "--embed", spec).code == 0
    srv.stop()
    t0 = time.perf_counter()
    run = cli("search", "threads", "--index", "idx")
    assert_one_line_error(run, 1, "cannot connect to", srv.url)
    assert time.perf_counter() - t0 < 10
    # what needs no embedding still works without the provider
    run = cli("search", "threads", "--index", "idx", "--mode", "keyword", "--json")
    assert run.code == 0, run.stderr
    assert orjson.loads(run.stdout)["hits"][0]["source"] == "docs/alpha.txt"
    assert cli("stats", "--index", "idx").code == 0


def test_unreachable_database_url_is_one_line_without_the_password(
        corpus: Path, cli: Callable[..., Run]) -> None:
    url = "postgresql://bob:s3cret-pw@/postgres?host=/nonexistent-socket-dir&index=docs"
    for args in (["search", "threads"], ["ingest", "docs"]):
        run = cli(*args, "--index", url)
        assert_one_line_error(run, 2, "cannot use the index at postgresql://***@/postgres")
        assert "s3cret-pw" not in run.stderr + run.stdout
