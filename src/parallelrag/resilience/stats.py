"""Counters and a latency window for one provider key (shared by every caller of that key).

Counters (attempt level unless noted):

``calls``          logical ``execute()`` calls started
``requests``       attempts sent to the provider
``successes``      logical calls that succeeded
``failures``       logical calls that ended with an error (after any retries)
``errors``         attempts that failed (any reason)
``retries``        attempts made after a failed one
``rate_limited``   429s seen
``overloads``      overload signals (429, 503, timeouts)
``timeouts``       attempts that timed out
``server_errors``  attempts answered with a 5xx
``circuit_rejections``  calls refused because the breaker was open
``tokens``         tokens used (the provider's count when it gives one, else our estimate)
``in_flight`` / ``max_in_flight``  attempts in flight now / at most
``retry_wait_s``   seconds spent in retry backoff
``rate_limit_wait_s``  seconds spent waiting for the rate limiter
``outage_wait_s``  seconds batch calls spent waiting for an open circuit (``outage_wait_s``)

Latency percentiles come from the last ``window`` successful attempts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adaptive import AdaptiveLimiter

__all__ = ["COUNTERS", "ProviderStats", "diff_counters"]

COUNTERS: tuple[str, ...] = (
    "calls",
    "requests",
    "successes",
    "failures",
    "errors",
    "retries",
    "rate_limited",
    "overloads",
    "timeouts",
    "server_errors",
    "circuit_rejections",
    "tokens",
    "retry_wait_s",
    "rate_limit_wait_s",
    "outage_wait_s",
)


class ProviderStats:
    """Counters + a ring buffer of recent latencies (see module doc)."""

    __slots__ = (
        "_lat",
        "_lat_i",
        "_lat_n",
        "calls",
        "circuit_rejections",
        "errors",
        "failures",
        "in_flight",
        "limiter",
        "max_in_flight",
        "outage_wait_s",
        "overloads",
        "rate_limit_wait_s",
        "rate_limited",
        "requests",
        "retries",
        "retry_wait_s",
        "server_errors",
        "successes",
        "timeouts",
        "tokens",
        "window",
    )

    def __init__(self, window: int = 4096, limiter: AdaptiveLimiter | None = None) -> None:
        self.calls = 0
        self.requests = 0
        self.successes = 0
        self.failures = 0
        self.errors = 0
        self.retries = 0
        self.rate_limited = 0
        self.overloads = 0
        self.timeouts = 0
        self.server_errors = 0
        self.circuit_rejections = 0
        self.tokens = 0
        self.retry_wait_s = 0.0
        self.rate_limit_wait_s = 0.0
        self.outage_wait_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.window = max(1, window)
        self._lat: list[float] = []
        self._lat_i = 0
        self._lat_n = 0
        self.limiter = limiter

    def observe_latency(self, s: float) -> None:
        """Record one attempt's latency (seconds)."""
        lat = self._lat
        if len(lat) < self.window:
            lat.append(s)
        else:
            i = self._lat_i
            lat[i] = s
            self._lat_i = i + 1 if i + 1 < self.window else 0
        self._lat_n += 1

    def latency_percentiles(self) -> dict[str, float | None]:
        data = sorted(self._lat)
        n = len(data)
        if not n:
            return {"latency_p50": None, "latency_p90": None, "latency_p99": None}

        def pct(q: float) -> float:
            return data[min(n - 1, int(q * n))]

        return {"latency_p50": pct(0.5), "latency_p90": pct(0.9), "latency_p99": pct(0.99)}

    def copy_counters(self) -> dict[str, float]:
        """The monotonic counters now; diff two copies with :func:`diff_counters`."""
        return {name: getattr(self, name) for name in COUNTERS}

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = self.copy_counters()
        out["in_flight"] = self.in_flight
        out["max_in_flight"] = self.max_in_flight
        out["latency_samples"] = self._lat_n
        out.update(self.latency_percentiles())
        out["concurrency_limit"] = self.limiter.limit if self.limiter is not None else None
        return out

    def merge(self, other: ProviderStats) -> None:
        """Add ``other``'s counters and latencies into this one (for totals across keys)."""
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.in_flight += other.in_flight
        self.max_in_flight = max(self.max_in_flight, other.max_in_flight)
        for s in other._lat:
            self.observe_latency(s)

    def __repr__(self) -> str:
        return (
            f"ProviderStats(requests={self.requests}, successes={self.successes}, "
            f"retries={self.retries}, rate_limited={self.rate_limited})"
        )


def diff_counters(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """``after - before`` per counter: the activity between two :meth:`copy_counters` calls."""
    return {k: after[k] - before.get(k, 0) for k in after}
