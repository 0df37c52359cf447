"""Adaptive concurrency limiter: AIMD with a binary-search recovery (after TCP BIC).

* **Slow start** — until the first overload, each success of a bottlenecked request adds
  ``increase`` (the limit doubles per round trip, as in TCP slow start); ``slow_start=False``
  turns this off.
  While requests queue behind a full limit, slow start also probes on time: if no overload
  came back for ``probe_s`` (429s and 503s are answered fast), the server is taking what it got
  and the limit doubles without waiting for slow responses to complete.
* **Increase** — after that, on a success of a request during whose life the limit was the bottleneck
  (some acquire saw ``in_flight >= 0.8 × limit``, or requests had to queue),
  ``limit += step / limit``: about
  ``step`` per round trip. ``step`` is ``increase`` (default 1) — except while the limit is below
  the level where the last overload happened (``w_max``): then it is half the remaining distance,
  so the limit climbs back quickly towards the level that worked and probes gently beyond it.
* **Decrease** — on an overload (429, 503, timeout): ``limit = max(min_limit, limit ×
  decrease_factor)``, at most once per *congestion epoch*: an overload reported by a request that
  started before the last decrease is ignored, so a burst of 429s from one window cuts once, not
  to the floor.
* **Timeouts** are a weaker congestion signal than a 429 or a 503: a request can time out for
  reasons of its own (a long generation, one slow backend). A timeout is treated as an overload
  (and may cut, once per epoch as above) only when the limit was the bottleneck during the
  request's life *and* timeouts make up at least ``TIMEOUT_SHARE`` of the last
  ``TIMEOUT_WINDOW`` completions (successes and timeouts); otherwise it is counted in
  ``timeouts_ignored``. So one call that times out and retries alone leaves the limit where it
  is, and a few timeouts among many successes do not drive the shared limit down, while a server
  that stops answering a full pipeline still halves it per epoch.
* ``limit`` is a float clamped to ``[min_limit, max_limit]``; ``int(limit)`` requests may be in
  flight. Waiters are served FIFO; when the limit shrinks, in-flight requests finish normally and
  new ones wait.

``history`` is a bounded list of ``(clock time, limit)`` samples (changes coalesced per
``history_resolution_s``, every decrease kept), for traces and plots. Runs on one event loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

from ..errors import ConfigError

__all__ = ["AdaptiveLimiter", "Outcome", "Slot"]

Outcome = Literal["success", "overload", "timeout", "error", "cancelled"]
Clock = Callable[[], float]

#: how many recent completions (successes and timeouts) decide whether timeouts are congestion
TIMEOUT_WINDOW = 32
#: the share of timeouts among those completions from which a timeout counts as an overload
TIMEOUT_SHARE = 0.5

#: the limit is "the bottleneck" when an acquire brings in_flight to this fraction of it
BOTTLENECK_FRACTION = 0.8
#: below the last overload level, the per-round-trip step never drops under this × increase
PLATEAU_FRACTION = 0.1


class Slot:
    """One held concurrency slot; ``async with limiter.slot() as s: ...; s.outcome = "overload"``.

    Without an explicit ``outcome`` the slot reports ``"success"`` when the block ends normally,
    ``"error"`` on an exception and always ``"cancelled"`` on ``CancelledError``.
    """

    __slots__ = ("_limiter", "outcome", "started", "ticket")

    def __init__(self, limiter: AdaptiveLimiter) -> None:
        self._limiter = limiter
        self.outcome: Outcome | None = None
        self.started = 0.0
        self.ticket = 0

    async def __aenter__(self) -> Slot:
        lim = self._limiter
        self.ticket = lim._seq if lim._try_enter() else await lim._enter_slow()
        self.started = lim._clock()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            outcome: Outcome = self.outcome or "success"
        elif issubclass(exc_type, asyncio.CancelledError):
            outcome = "cancelled"
        else:
            outcome = self.outcome or "error"
        lim = self._limiter
        lim._exit(outcome, self.started, self.ticket, lim._clock())


class AdaptiveLimiter:
    """AIMD concurrency limit for one provider key (see module doc)."""

    def __init__(
        self,
        initial: int = 8,
        min_limit: int = 1,
        max_limit: int = 256,
        *,
        increase: float = 1.0,
        decrease_factor: float = 0.5,
        clock: Clock = time.monotonic,
        history_size: int = 2048,
        history_resolution_s: float = 0.01,
        slow_start: bool = True,
        probe_s: float | None = 0.025,
    ) -> None:
        if min_limit < 1 or max_limit < min_limit:
            raise ConfigError(f"need 1 <= min_limit <= max_limit, got {min_limit}, {max_limit}")
        if not 0.0 < decrease_factor < 1.0:
            raise ConfigError(f"decrease_factor must be in (0, 1), got {decrease_factor}")
        if increase < 0:
            raise ConfigError("increase must be >= 0")
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.increase = float(increase)
        self.slow_start = slow_start
        self.probe_s = probe_s
        self._probe_handle: asyncio.TimerHandle | None = None
        self.decrease_factor = float(decrease_factor)
        self._clock = clock
        self.limit = float(min(max(initial, min_limit), max_limit))
        self._cap = int(self.limit)
        self._bottleneck_at = min(BOTTLENECK_FRACTION * self.limit, float(self._cap))
        self.in_flight = 0
        self.max_in_flight = 0
        self._waiters: deque[asyncio.Future[int]] = deque()
        self._seq = 0
        self._sat_seq = -1
        self._last_cut = -math.inf
        self._w_max: float | None = None
        self._latency_ewma: float | None = None
        self.increases = 0
        self.decreases = 0
        self.overloads = 0
        self.overloads_ignored = 0
        self.timeouts = 0
        self.timeouts_ignored = 0
        self._recent: deque[bool] = deque(maxlen=TIMEOUT_WINDOW)  # True = a timeout
        self._recent_timeouts = 0
        self._hist_max = max(16, history_size)
        self._hist_res = history_resolution_s
        self._last_was_cut = False
        self.history: list[tuple[float, float]] = [(clock(), self.limit)]

    # ------------------------------------------------------------------ public API
    def slot(self) -> Slot:
        """An async context manager holding one slot; see :class:`Slot`."""
        return Slot(self)

    async def acquire(self) -> None:
        """Wait (FIFO) for a slot. Pair with :meth:`release`."""
        if not self._try_enter():
            await self._enter_slow()

    def release(self, outcome: Outcome, latency_s: float | None = None) -> None:
        """Give a slot back, reporting how the request went.

        Without the acquire-time information a :class:`Slot` carries, the request's start is
        taken as ``now - latency_s`` (or ``now -`` the mean latency) for the epoch rule, and the
        request is assumed to be the oldest one in flight for the bottleneck test.
        """
        now = self._clock()
        if latency_s is None:
            latency_s = self._latency_ewma or 0.0
        self._exit(outcome, now - latency_s, None, now)

    def expect(self, n: int) -> None:
        """A caller is about to start ``n`` requests at once (a batch that knows its size).

        While the limiter is still in slow start and has never seen an overload, open the
        limit to ``min(n, max_limit)`` at once instead of reaching it by doubling: the time probe
        would get there within a few ``probe_s`` anyway, since nothing has pushed back, and the
        batch would spend those milliseconds queued. After the first overload this is a no-op:
        AIMD owns the limit from then on.
        """
        if not (self.slow_start and self._w_max is None and self.overloads == 0):
            return
        target = float(min(n, self.max_limit))
        if target > self.limit:
            self.increases += 1
            self._set_limit(target, self._clock(), cut=False)
            self._wake()

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    def set_bounds(self, min_limit: int | None = None, max_limit: int | None = None) -> None:
        """Change ``min_limit`` / ``max_limit`` (the current limit is clamped into them)."""
        lo = self.min_limit if min_limit is None else min_limit
        hi = self.max_limit if max_limit is None else max_limit
        if lo < 1 or hi < lo:
            raise ConfigError(f"need 1 <= min_limit <= max_limit, got {lo}, {hi}")
        self.min_limit, self.max_limit = lo, hi
        self._set_limit(min(max(self.limit, lo), hi), self._clock(), cut=False)
        self._wake()

    def snapshot(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "min_limit": self.min_limit,
            "max_limit": self.max_limit,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "waiting": self.waiting,
            "increases": self.increases,
            "decreases": self.decreases,
            "overloads": self.overloads,
            "overloads_ignored": self.overloads_ignored,
            "timeouts": self.timeouts,
            "timeouts_ignored": self.timeouts_ignored,
            "latency_ewma_s": self._latency_ewma,
        }

    def __repr__(self) -> str:
        return (
            f"AdaptiveLimiter(limit={self.limit:.2f}, in_flight={self.in_flight}, "
            f"range=[{self.min_limit}, {self.max_limit}])"
        )

    # ------------------------------------------------------------------ internals (hot path)
    # Every granted slot gets a ticket (a sequence number). ``_sat_seq`` is the newest ticket
    # outstanding when the limit last was the bottleneck, so a request saw saturation during its
    # life iff ``_sat_seq >= its ticket``.
    def _try_enter(self) -> bool:
        """Take a slot if one is free and nobody queues; the ticket is then ``self._seq``."""
        if self.in_flight < self._cap and not self._waiters:
            n = self.in_flight + 1
            self.in_flight = n
            seq = self._seq + 1
            self._seq = seq
            if n >= self._bottleneck_at:
                self._sat_seq = seq
            if n > self.max_in_flight:
                self.max_in_flight = n
            return True
        return False

    async def _enter_slow(self) -> int:
        """Queue (FIFO) for a slot; return its ticket."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._waiters.append(fut)
        if (self.slow_start and self._w_max is None and self.probe_s
                and self._probe_handle is None and self.limit < self.max_limit):
            self._probe_handle = loop.call_later(self.probe_s, self._probe, self.overloads)
        self._sat_seq = self._seq  # everyone in flight now sees the limit as the bottleneck
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted, then cancelled: give it back
                self.in_flight -= 1
            self._wake()
            raise

    def _probe(self, overloads_before: int) -> None:
        """Slow start without waiting for completions: requests are queued, the limit is full,
        and no overload (429/503/timeout, which come back fast) arrived for ``probe_s`` — so the
        server is taking everything it got. Double the limit and look again."""
        self._probe_handle = None
        if not (self.slow_start and self._w_max is None) or self.overloads != overloads_before:
            return
        if not self._waiters or self.in_flight < self._cap:
            return
        new = min(float(self.max_limit), self.limit * 2.0)
        if new != self.limit:
            self.increases += 1
            self._set_limit(new, self._clock(), cut=False)
            self._wake()
        if self._waiters and self.limit < self.max_limit and self.probe_s:
            loop = asyncio.get_running_loop()
            self._probe_handle = loop.call_later(self.probe_s, self._probe, self.overloads)

    def _wake(self) -> None:
        q = self._waiters
        while q and self.in_flight < self._cap:
            f = q.popleft()
            if f.done():
                continue
            n = self.in_flight + 1
            self.in_flight = n
            if n > self.max_in_flight:
                self.max_in_flight = n
            seq = self._seq + 1
            self._seq = seq
            self._sat_seq = seq
            f.set_result(seq)

    def _note_completion(self, timed_out: bool) -> None:
        r = self._recent
        if len(r) == r.maxlen and r[0]:
            self._recent_timeouts -= 1
        r.append(timed_out)
        if timed_out:
            self._recent_timeouts += 1

    def _exit(self, outcome: Outcome, started: float, ticket: int | None, now: float) -> None:
        n = self.in_flight
        self.in_flight = n - 1
        if outcome == "timeout":
            self.timeouts += 1
            self._note_completion(True)
            if ticket is None:
                ticket = self._seq - n + 1
            congested = (
                self._sat_seq >= ticket
                and self._recent_timeouts >= TIMEOUT_SHARE * len(self._recent)
            )
            if not congested:
                self.timeouts_ignored += 1
                if self._waiters:
                    self._wake()
                return
            outcome = "overload"
        if outcome == "success":
            self._note_completion(False)
            lat = now - started
            ew = self._latency_ewma
            self._latency_ewma = lat if ew is None else ew + 0.1 * (lat - ew)
            if ticket is None:  # plain release(): assume the oldest outstanding request ended
                ticket = self._seq - n + 1
            saturated = self._sat_seq >= ticket
            if saturated and self.limit < self.max_limit:
                self._grow(now)
        elif outcome == "overload":
            self.overloads += 1
            if started >= self._last_cut:
                self._cut(now)
            else:
                self.overloads_ignored += 1
        if self._waiters:
            self._wake()

    def _grow(self, now: float) -> None:
        lim = self.limit
        wm = self._w_max
        if wm is None and self.slow_start:
            # slow start (as TCP): +increase per success, i.e. the limit doubles every round
            # trip until the first overload; then AIMD takes over
            new = lim + self.increase
            if new > self.max_limit:
                new = float(self.max_limit)
            if new != lim:
                self.increases += 1
                self._set_limit(new, now, cut=False)
            return
        if wm is not None and lim < wm:
            # binary search back towards the last overload level, slowing to a crawl near it
            step = (wm - lim) * 0.5
            floor = self.increase * PLATEAU_FRACTION
            if step < floor:
                step = floor
        else:
            step = self.increase
        new = lim + step / lim
        if new > self.max_limit:
            new = float(self.max_limit)
        if new != lim:
            self.increases += 1
            self._set_limit(new, now, cut=False)

    def _cut(self, now: float) -> None:
        lim = self.limit
        self._w_max = lim
        self._last_cut = now
        new = lim * self.decrease_factor
        if new < self.min_limit:
            new = float(self.min_limit)
        self.decreases += 1
        self._set_limit(new, now, cut=True)

    def _set_limit(self, value: float, now: float, *, cut: bool) -> None:
        self.limit = value
        self._cap = int(value)
        self._bottleneck_at = min(BOTTLENECK_FRACTION * value, float(self._cap))
        h = self.history
        if not cut and not self._last_was_cut and h and now - h[-1][0] < self._hist_res:
            h[-1] = (h[-1][0], value)
        else:
            h.append((now, value))
            self._last_was_cut = cut
            if len(h) > self._hist_max:
                del h[: len(h) // 2]
