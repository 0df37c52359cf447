"""Circuit breaker: stop sending to a provider that keeps failing, probe it after a cool-down.

``closed`` → (``failure_threshold`` consecutive provider failures) → ``open``: every request is
rejected at once with :class:`~parallelrag.errors.CircuitOpenError` → (``reset_timeout_s``
later) → ``half_open``: exactly one probe request goes through, the others are rejected → the
probe succeeds: ``closed``; it fails: ``open`` again for another cool-down.

Only "provider unhealthy" failures count (the executor reports 5xx, timeouts and connection
errors), not 4xx nor 429. A probe that ends neither way (cancelled, a 4xx, a 429) is reported
with :meth:`on_neutral` and lets the next request probe; a probe cancelled before it was even
sent (while it queued for the rate limiter or a concurrency slot) gives its half-open slot back
with :meth:`release_probe`; a probe that never reports back is considered lost after one more
cool-down.

Callers that wait an outage out (batch work, see ``Resilience.execute(outage_wait_s=...)``)
sleep in :meth:`wait_change`, which returns as soon as the state changes (the circuit closes,
opens again, or the probe slot frees) or the given time has passed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any, Literal

from ..errors import CircuitOpenError, ConfigError

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive-failure circuit breaker for one provider key (see module doc)."""

    def __init__(
        self,
        failure_threshold: int = 20,
        reset_timeout_s: float = 5.0,
        *,
        name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigError("failure_threshold must be >= 1")
        if reset_timeout_s < 0:
            raise ConfigError("reset_timeout_s must be >= 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.name = name
        self._clock = clock
        self._state: BreakerState = "closed"
        self.consecutive_failures = 0
        self._failures_when_opened = 0
        self._opened_at = -math.inf
        self._probe_started: float | None = None
        self.opens = 0
        self.rejections = 0
        #: the message of the last failure reported with a cause (quoted when rejecting)
        self.last_error: str | None = None
        self._changed: list[asyncio.Future[None]] = []

    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self._clock() >= self._opened_at + self.reset_timeout_s:
            return "half_open"
        return self._state

    def before_request(self) -> bool:
        """Return if a request may be sent now; raise CircuitOpenError if not.

        Returns True when the request is the half-open probe: its caller must then report how
        it ended (:meth:`on_success`, :meth:`on_failure`, :meth:`on_neutral`), or give the slot
        back with :meth:`release_probe` if it ends before it was sent."""
        if self._state == "closed":
            return False
        now = self._clock()
        if self._state == "open":
            reopens = self._opened_at + self.reset_timeout_s - now
            if reopens > 0:
                self.rejections += 1
                raise CircuitOpenError(
                    f"circuit open for {self.name or 'provider'} after "
                    f"{self._failures_when_opened} consecutive failures; "
                    f"retrying in {reopens:.1f} s{self._last()}",
                    reopens_in_s=reopens,
                )
            self._state = "half_open"
            self._probe_started = None
        # half-open: one probe at a time (a probe silent for a whole cool-down is presumed lost)
        p = self._probe_started
        if p is None or now - p > max(self.reset_timeout_s, 1.0):
            self._probe_started = now
            return True
        self.rejections += 1
        wait = max(0.0, self.reset_timeout_s - (now - p))
        raise CircuitOpenError(
            f"circuit open (half-open) for {self.name or 'provider'} after "
            f"{self._failures_when_opened} consecutive failures: a probe request is in flight; "
            f"retrying in {wait:.1f} s{self._last()}",
            reopens_in_s=wait,
        )

    def _last(self) -> str:
        return f" (last error: {self.last_error})" if self.last_error else ""

    def on_success(self) -> None:
        self.consecutive_failures = 0
        if self._state != "closed":
            self._state = "closed"
            self._probe_started = None
            self._notify()

    def on_failure(self, cause: BaseException | None = None) -> None:
        """A provider failure; ``cause`` (its message, which carries no key) is quoted by the
        CircuitOpenError of the rejected requests, so they say what failed, not only how often."""
        if cause is not None:
            self.last_error = _describe(cause)
        n = self.consecutive_failures + 1
        self.consecutive_failures = n
        st = self._state
        if st == "half_open" or (st == "closed" and n >= self.failure_threshold):
            self._open()

    def on_neutral(self) -> None:
        """A request ended without telling whether the provider is healthy (4xx, 429, cancel)."""
        if self._state == "half_open":
            self._probe_started = None
            self._notify()

    def release_probe(self) -> None:
        """The probe ended before it was sent (cancelled while queued): let another request
        probe now instead of rejecting everyone until the probe is presumed lost."""
        if self._state == "half_open" and self._probe_started is not None:
            self._probe_started = None
            self._notify()

    async def wait_change(self, max_wait_s: float) -> None:
        """Sleep until the breaker changes state or its probe slot frees, at most ``max_wait_s``.

        Call on the event loop that owns the breaker. Returns early, never raises (except
        cancellation); callers re-check with :meth:`before_request`."""
        if max_wait_s <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._changed.append(fut)
        try:
            await asyncio.wait((fut,), timeout=max_wait_s)
        finally:
            if not fut.done():
                fut.cancel()
                try:
                    self._changed.remove(fut)
                except ValueError:  # pragma: no cover - already notified
                    pass

    def _notify(self) -> None:
        waiters, self._changed = self._changed, []
        for f in waiters:
            if not f.done():
                f.set_result(None)

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._probe_started = None
        self._failures_when_opened = self.consecutive_failures
        self.opens += 1
        self._notify()

    def snapshot(self) -> dict[str, Any]:
        st = self.state
        out: dict[str, Any] = {
            "state": st,
            "consecutive_failures": self.consecutive_failures,
            "opens": self.opens,
            "rejections": self.rejections,
            "reopens_in_s": 0.0,
        }
        if st == "open":
            out["reopens_in_s"] = max(0.0, self._opened_at + self.reset_timeout_s - self._clock())
        return out

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self.state!r})"


def _describe(exc: BaseException) -> str:
    """One line for ``exc``: a ParallelRagError's own message (no provider suffix, no key),
    else the type name only (an arbitrary exception's text is not known to be key-free)."""
    msg = getattr(exc, "message", None)
    text = msg if isinstance(msg, str) and msg else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."
