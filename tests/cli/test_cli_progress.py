"""Ingest progress: a known total from the start, what the run waits for, an ETA from the
recent rate (or none), driven through the real command against a rate-limited simulator."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import Run

from parallelrag.cli_progress import (
    IngestView,
    RateWindow,
    count_files,
    format_eta,
    waiting_reason,
)

pytestmark = pytest.mark.timeout(120)


def test_rate_window_uses_recent_samples_only() -> None:
    w = RateWindow(window_s=10)
    assert w.rate() is None
    w.add(0, 0)
    assert w.rate() is None  # one sample: no rate
    w.add(1, 100)  # a fast start...
    for t in range(2, 40):
        w.add(t, 100 + (t - 1))  # ...then one per second
    rate = w.rate()
    assert rate is not None and rate == pytest.approx(1.0, rel=0.15)
    for t in range(40, 60):
        w.add(t, 138)  # stalled for 20 s: no rate, so no made-up ETA
    assert w.rate() is None


def test_format_eta() -> None:
    assert format_eta(None) == "ETA unknown"
    assert format_eta(float("nan")) == "ETA unknown"
    assert format_eta(42.4) == "ETA 42s"
    assert format_eta(125) == "ETA 2m05s"
    assert format_eta(3 * 3600 + 60) == "ETA 3h01m"


def test_waiting_reasons_from_provider_stats() -> None:
    base = {"retries": 0, "rate_limited": 0, "circuit_rejections": 0, "rate_limit_wait_s": 0.0,
            "in_flight": 0}
    assert waiting_reason(base, dict(base), 0.0) is None
    assert "circuit open" in (waiting_reason(
        {**base, "breaker": {"state": "open", "reopens_in_s": 4.2}}, base, 0.0) or "")
    assert "paused 7s" in (waiting_reason(
        {**base, "rate_limiter": {"paused_for_s": 7.0, "waiting": 3}}, base, 0.0) or "")
    assert "3 requests queued" in (waiting_reason(
        {**base, "rate_limiter": {"paused_for_s": 0.0, "waiting": 3}}, base, 0.0) or "")
    assert "429" in (waiting_reason({**base, "rate_limited": 2}, base, 0.0) or "")
    assert "retrying" in (waiting_reason({**base, "retries": 1}, base, 0.0) or "")
    assert "circuit open" in (waiting_reason({**base, "circuit_rejections": 1}, base, 0.0) or "")
    assert "rate limit" in (waiting_reason({**base, "rate_limit_wait_s": 0.5}, base, 0.0) or "")
    assert "2 requests in flight" in (waiting_reason({**base, "in_flight": 2}, base, 5.0) or "")


def test_count_files_follows_the_ingest_rules(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / ".hidden").write_text("h")
    assert count_files([tmp_path], None, None, None) == 2
    assert count_files([tmp_path], ["*.md"], None, None) == 1
    assert count_files([tmp_path], None, ["*.md"], None) == 1


def test_progress_lines_show_total_and_rate_limit_wait(corpus: Path, cli: Callable[..., Run],
                                                       make_sim) -> None:
    for i in range(6):
        (corpus / "docs" / f"extra{i}.txt").write_text(f"extra document {i} about waiting")
    srv = make_sim()
    # 120 requests/min on the client, one text per request: ~0.5 s per request after the first 2
    spec = f"openai://text-embedding-3-small?base_url={srv.url}&rpm=120&batch_size=1"
    run = cli("ingest", "docs", "--index", "idx", "--embed", spec,
              env={"PARALLELRAG_PROGRESS_EVERY": "0.3"})
    assert run.code == 0, run.stderr
    lines = [ln for ln in run.err_lines if ln.startswith("ingest: ")]
    assert lines, run.stderr
    assert all("/10 files read" in ln for ln in lines), lines  # the total is known from the start
    assert not any("?" in ln for ln in lines)
    assert any("waiting: provider rate limit" in ln for ln in lines), lines
    assert "10 added" in run.stdout
    quiet = cli("ingest", "docs", "--index", "idx2", "--embed", spec,
                env={"PARALLELRAG_PROGRESS_EVERY": "0"})
    assert quiet.code == 0 and quiet.stderr == ""


def test_progress_lines_show_retries(corpus: Path, cli: Callable[..., Run], make_sim) -> None:
    for i in range(6):  # enough requests that retries fall before the last line, not only after
        (corpus / "docs" / f"extra{i}.txt").write_text(f"extra document {i} about retries")
    srv = make_sim(latency=0.2, fault_500=0.5, seed=3)
    spec = f"openai://text-embedding-3-small?base_url={srv.url}&batch_size=1&dimensions=32"
    run = cli("ingest", "docs", "--index", "idx", "--embed", spec,
              env={"PARALLELRAG_PROGRESS_EVERY": "0.2"})
    assert run.code == 0, run.stderr
    assert srv.stats()["status_counts"].get("500", 0) > 0
    lines = [ln for ln in run.err_lines if ln.startswith("ingest: ")]
    assert any("waiting: retrying after errors" in ln for ln in lines), lines


class _Stats:
    """An embedder stand-in for the view: only ``stats()`` is read, the counters are set by hand."""

    def __init__(self) -> None:
        self.prov: dict[str, object] = {"retries": 0, "successes": 0, "in_flight": 1}

    def stats(self) -> dict[str, object]:
        return {"provider": dict(self.prov)}


@pytest.mark.parametrize("every", [0.2, 10.0])
def test_every_plain_line_covers_the_time_since_the_one_before(every: float) -> None:
    # a retry in the first moments of a run, or between two lines, is shown on the next line
    t = [0.0]
    emb = _Stats()
    view = IngestView(4, emb, enabled=True, live=False, plain_every_s=every, clock=lambda: t[0])
    view._snapshot_start()  # what __enter__ takes before it starts the printing thread
    emb.prov["retries"] = 1
    t[0] += every
    assert "waiting: retrying after errors (1 retries so far)" in view.status()
    t[0] += every
    assert "retrying" not in view.status()  # nothing new since the line before
    emb.prov["retries"] = 2
    t[0] += every
    assert "retrying after errors (2 retries so far)" in view.status()
