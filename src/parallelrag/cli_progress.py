"""Ingest progress for the ``parallelrag`` command: what is done, what it waits for, an honest ETA.

The view reads two things: the :class:`~parallelrag.pipeline.IngestProgress` events that
``Index.ingest`` sends to its callback, and the embedder's public ``stats()`` (the shared
resilience counters of its provider), so it can say *why* a run is not moving: the provider's
rate limit (the local limiter holding requests back, or a 429 pause), an open circuit, retries
after errors, or requests in flight that have not answered yet.

The total is the number of files the walk will visit, counted before the run starts (a stat-only
walk with the same include/exclude rules), so the bar never shows ``N/?``. The ETA comes from
the rate of the last ``RATE_WINDOW_S`` seconds, not the average since the start, and is left out
(shown as ``ETA unknown``) while fewer than two samples or no progress exist in that window:
a run held by a rate limit shows the wait, not a made-up time.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

__all__ = ["RATE_WINDOW_S", "IngestView", "RateWindow", "count_files", "format_eta", "waiting_reason"]

RATE_WINDOW_S = 30.0
#: no visible progress for this long and no other reason known: say what is in flight
STALL_S = 3.0


def count_files(paths: Sequence[str | Path], include: Sequence[str] | None,
                exclude: Sequence[str] | None, max_bytes: int | None,
                index_path: str | Path | None = None) -> int | None:
    """Files the ingest walk will visit (stat only, same rules, the index folder
    ``index_path`` left out where a path holds it); None if the walk fails."""
    try:
        from .loaders.sources import iter_sources
        from .pipeline.index import own_folder_excludes

        owns = [own_folder_excludes(index_path, p) for p in paths]
        if not any(owns):
            return sum(1 for _ in iter_sources(list(paths), include=include, exclude=exclude,
                                               max_bytes=max_bytes))
        # one walk per path: the index folder's pattern is relative to each
        return sum(sum(1 for _ in iter_sources([p], include=include,
                                               exclude=[*(exclude or ()), *own],
                                               max_bytes=max_bytes))
                   for p, own in zip(paths, owns, strict=True))
    except Exception:  # counting is a courtesy: the ingest reports real problems itself
        return None


class RateWindow:
    """Rate of a growing counter over the last ``window_s`` seconds."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, t: float, value: float) -> None:
        s = self._samples
        if s and s[-1][1] == value and len(s) > 1 and s[-2][1] == value:
            s[-1] = (t, value)  # a flat stretch keeps its two ends only
        else:
            s.append((t, value))
        while len(s) > 2 and s[1][0] < t - self.window_s:
            s.popleft()

    def rate(self) -> float | None:
        """Units per second over the window, or None without two samples and some progress."""
        s = self._samples
        if len(s) < 2:
            return None
        (t0, v0), (t1, v1) = s[0], s[-1]
        if t1 - t0 <= 0 or v1 <= v0:
            return None
        return (v1 - v0) / (t1 - t0)


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "ETA unknown"
    s = int(seconds + 0.5)
    if s >= 3600:
        return f"ETA {s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"ETA {s // 60}m{s % 60:02d}s"
    return f"ETA {s}s"


def _num(d: dict[str, Any], key: str) -> float:
    v = d.get(key)
    return float(v) if isinstance(v, int | float) else 0.0


def waiting_reason(now: dict[str, Any], before: dict[str, Any] | None,
                   stalled_s: float) -> str | None:
    """What an ingest waits for, from two snapshots of the embedder's provider stats.

    ``now`` / ``before`` are ``EmbeddingClient.stats()["provider"]`` a moment apart; keys that a
    provider does not report are ignored. Returns None when nothing holds the run back.
    """
    br = now.get("breaker")
    if isinstance(br, dict) and br.get("state") in ("open", "half_open"):
        reopen = _num(br, "reopens_in_s")
        when = f", next probe in {reopen:.0f}s" if reopen > 0 else ", probing"
        return f"provider failing: circuit open{when}"
    rl = now.get("rate_limiter")
    if isinstance(rl, dict):
        paused = _num(rl, "paused_for_s")
        if paused > 0:
            return f"provider rate limit: paused {paused:.0f}s (429 Retry-After)"
        if _num(rl, "waiting") > 0:
            return f"provider rate limit: {int(_num(rl, 'waiting'))} requests queued"
    if before is not None:
        if _num(now, "circuit_rejections") > _num(before, "circuit_rejections"):
            return "provider failing: circuit open"
        if _num(now, "rate_limited") > _num(before, "rate_limited"):
            return f"provider rate limit: 429s ({int(_num(now, 'rate_limited'))} so far), backing off"
        if _num(now, "retries") > _num(before, "retries"):
            return f"retrying after errors ({int(_num(now, 'retries'))} retries so far)"
        if _num(now, "rate_limit_wait_s") > _num(before, "rate_limit_wait_s"):
            return "provider rate limit: requests held back"
    if stalled_s >= STALL_S:
        inflight = int(_num(now, "in_flight"))
        if inflight:
            return f"waiting for the provider: {inflight} requests in flight"
        if _num(now, "rate_limit_wait_s") > 0:
            return "provider rate limit: requests held back"
    return None


class IngestView:
    """Renders ingest progress on stderr: a live line on a terminal, a plain line every
    ``plain_every_s`` seconds otherwise, nothing when ``enabled`` is False."""

    def __init__(self, total_files: int | None, embedder: Any, *, enabled: bool, live: bool,
                 plain_every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total_files
        self.embedder = embedder
        self.enabled = enabled
        self.live = live
        self.plain_every_s = plain_every_s
        self._clock = clock
        self._p: Any = None
        self._rate = RateWindow()
        self._t0 = clock()
        self._last_change = self._t0
        self._last_key: tuple[int, int, int] | None = None
        self._prov_before: dict[str, Any] | None = None
        self._prov_start: dict[str, Any] | None = None
        self._prov_t = 0.0
        self._reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress: Any = None
        self._task: Any = None

    # ---------------------------------------------------------------- events
    def on_progress(self, p: Any) -> None:
        """The ``progress`` callback of ``Index.ingest`` (called in order on a worker thread:
        as files are read, and as each embedding request's documents are written)."""
        self._p = p

    def _provider_stats(self) -> dict[str, Any]:
        try:
            s = self.embedder.stats() if self.embedder is not None else {}
        except Exception:
            return {}
        prov = s.get("provider") if isinstance(s, dict) else None
        return prov if isinstance(prov, dict) else {}

    def _live_work(self, prov: dict[str, Any]) -> str | None:
        """Provider work since the view started, from live counters (the pipeline's events
        arrive per answered group of documents; these move per request, retries included)."""
        if self._prov_start is None:
            self._prov_start = dict(prov)
        start = self._prov_start
        if "successes" in prov:
            done = int(_num(prov, "successes") - _num(start, "successes"))
            return f"{done} requests answered"
        if "texts_encoded" in prov:
            done = int(_num(prov, "texts_encoded") - _num(start, "texts_encoded"))
            return f"{done} texts encoded"
        return None

    # ---------------------------------------------------------------- the status line
    def status(self) -> str:
        """One line: files read / total, documents and chunks written, embeddings, wait, ETA."""
        now = self._clock()
        p = self._p
        files = int(getattr(p, "files_seen", 0) or 0)
        docs = int(getattr(p, "documents_done", 0) or 0)
        chunks = int(getattr(p, "chunks", 0) or 0)
        embedded = int(getattr(p, "embedded", 0) or 0)
        key = (files, docs, embedded)
        if key != self._last_key:
            self._last_key = key
            self._last_change = now
        self._rate.add(now, files)
        prov = self._provider_stats()
        # plain lines each cover the time since the line before; a live line holds its reason
        # for a second so that it can be read
        window = 1.0 if self.live else min(1.0, self.plain_every_s)
        if now - self._prov_t >= window or self._prov_before is None:
            self._reason = waiting_reason(prov, self._prov_before, now - self._last_change)
            self._prov_before, self._prov_t = prov, now
        total = self.total
        if total is not None and files > total:  # files appeared during the run
            total = files
        head = f"{files} files read" if total is None else f"{files}/{total} files read"
        parts = [head, f"{docs} documents written", f"{chunks} chunks", f"{embedded} embedded"]
        live = self._live_work(prov)
        if live:
            parts.append(live)
        if self._reason:
            parts.append("waiting: " + self._reason)
        rate = self._rate.rate()
        if total is not None and files >= total:
            parts.append("finishing the last documents")
        elif total is not None and rate:
            parts.append(format_eta((total - files) / rate))
        else:
            parts.append(format_eta(None))
        elapsed = int(now - self._t0)
        parts.append(f"{elapsed // 60}:{elapsed % 60:02d} elapsed")
        return " · ".join(parts)

    # ---------------------------------------------------------------- rendering
    def _snapshot_start(self) -> None:
        """The provider's counters at the start: the first line's reason compares with these,
        so a retry in the run's first moments is shown too."""
        self._prov_start = self._provider_stats()
        self._prov_before, self._prov_t = dict(self._prov_start), self._clock()

    def __enter__(self) -> IngestView:
        if not self.enabled:
            return self
        self._snapshot_start()
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

            view = self

            class _Status(TextColumn):
                def render(self, task: Any) -> Any:
                    from rich.text import Text

                    return Text(view.status())

            self._progress = Progress(
                SpinnerColumn(), TextColumn("ingest"), BarColumn(bar_width=24), _Status(""),
                console=Console(stderr=True), transient=True, refresh_per_second=4,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("ingest", total=self.total)
            self._thread = threading.Thread(target=self._update_bar, daemon=True,
                                            name="parallelrag-cli-progress")
        else:
            self._thread = threading.Thread(target=self._plain, daemon=True,
                                            name="parallelrag-cli-progress")
        self._thread.start()
        return self

    def _update_bar(self) -> None:
        while not self._stop.wait(0.25):
            p = self._p
            files = int(getattr(p, "files_seen", 0) or 0)
            total = self.total if self.total is None else max(self.total, files)
            self._progress.update(self._task, completed=files, total=total)

    def _plain(self) -> None:
        while not self._stop.wait(self.plain_every_s):
            click.echo("ingest: " + self.status(), err=True)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
