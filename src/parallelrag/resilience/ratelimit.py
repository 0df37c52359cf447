"""Client-side rate limiting: token buckets for requests/min and tokens/min.

Each bucket refills continuously at ``limit / 60`` per second and holds at most
``capacity = max(1, limit * burst_s / 60)``. For limits configured explicitly that is by default
one second's worth of budget: servers may enforce per-minute limits on shorter windows, so a full
minute's burst could be answered with 429s; one second keeps the start smooth and costs nothing in
sustained throughput. Limits *learned* from the server's headers use ``learned_burst_s`` (default
the whole minute), because the same headers carry the server's ``remaining`` count, which clamps
the bucket: the client may spend exactly what the server says is left.

Waiters are served strictly first-in first-out: only the head of the queue waits on the clock, so
a large request is never starved by a stream of small ones. A request that needs more tokens than
the bucket can ever hold proceeds once the bucket is full and drives it negative (the debt is
repaid by refill before anyone else goes) — it never waits forever.

Limits come from the configuration, or, when unconfigured, are learned from the server's
``x-ratelimit-*`` (OpenAI) / ``anthropic-ratelimit-*`` headers. The ``remaining`` header only ever
*lowers* the local level: headers arrive late and out of order, and the local bucket has already
debited requests the server has not seen yet.

Everything here runs on one event loop; no thread locks.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from ..errors import ConfigError
from .retry import _is_case_insensitive, parse_duration

__all__ = ["RateLimiter", "parse_duration"]

Clock = Callable[[], float]
_NEG_INF = -math.inf
#: at most this long is slept in one go, so a limit learned or raised meanwhile takes effect
_MAX_SLEEP_S = 1.0


class _Bucket:
    __slots__ = ("capacity", "level", "limit", "rate", "updated")

    def __init__(self, limit: float, burst_s: float, now: float) -> None:
        self.limit = 0.0
        self.rate = 0.0
        self.capacity = 1.0
        self.set_limit(limit, burst_s)
        self.level = self.capacity
        self.updated = now

    def set_limit(self, limit: float, burst_s: float) -> None:
        self.limit = float(limit)
        self.rate = self.limit / 60.0
        self.capacity = max(1.0, self.limit * burst_s / 60.0)
        if getattr(self, "level", 0.0) > self.capacity:
            self.level = self.capacity

    def refill(self, now: float) -> None:
        dt = now - self.updated
        if dt > 0.0:
            lvl = self.level + dt * self.rate
            self.level = self.capacity if lvl > self.capacity else lvl
            self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` may be taken (an oversize amount: until the bucket is full)."""
        need = amount if amount < self.capacity else self.capacity
        if self.level >= need:
            return 0.0
        return (need - self.level) / self.rate


def _num(s: str | None) -> float | None:
    if s is None:
        return None
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _reset_seconds(s: str | None, absolute: bool) -> float | None:
    if s is None:
        return None
    if absolute:  # Anthropic: RFC 3339 time
        try:
            when = datetime.fromisoformat(s.strip())
        except ValueError:
            return parse_duration(s)
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - time.time())
    return parse_duration(s)


class RateLimiter:
    """Requests/min and tokens/min token buckets for one provider key (see module doc)."""

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        clock: Clock = time.monotonic,
        burst_s: float = 1.0,
        learned_burst_s: float = 60.0,
    ) -> None:
        if burst_s <= 0 or learned_burst_s <= 0:
            raise ConfigError("burst_s and learned_burst_s must be > 0")
        self._clock = clock
        self._burst_s = burst_s
        self._learned_burst_s = learned_burst_s
        now = clock()
        self._explicit_rpm = _positive(rpm, "rpm")
        self._explicit_tpm = _positive(tpm, "tpm")
        self._req: _Bucket | None = (
            _Bucket(self._explicit_rpm, burst_s, now) if self._explicit_rpm else None
        )
        self._tok: _Bucket | None = (
            _Bucket(self._explicit_tpm, burst_s, now) if self._explicit_tpm else None
        )
        self._pause_until = _NEG_INF
        self._queue: deque[asyncio.Future[None]] = deque()
        self.acquired = 0
        self.waits = 0
        self.total_wait_s = 0.0
        self.pauses = 0
        self.header_updates = 0

    # ------------------------------------------------------------------ limits
    @property
    def rpm(self) -> float | None:
        return self._req.limit if self._req is not None else None

    @property
    def tpm(self) -> float | None:
        return self._tok.limit if self._tok is not None else None

    def set_limits(self, rpm: float | None = None, tpm: float | None = None) -> None:
        """Configure limits explicitly (None leaves that limit as it is)."""
        now = self._clock()
        if rpm is not None:
            self._explicit_rpm = _positive(rpm, "rpm")
            self._req = self._set(self._req, rpm, now)
        if tpm is not None:
            self._explicit_tpm = _positive(tpm, "tpm")
            self._tok = self._set(self._tok, tpm, now)

    def _set(self, bucket: _Bucket | None, limit: float, now: float,
             burst_s: float | None = None) -> _Bucket:
        burst = self._burst_s if burst_s is None else burst_s
        if bucket is None:
            return _Bucket(limit, burst, now)
        if bucket.limit != limit:
            bucket.refill(now)
            bucket.set_limit(limit, burst)
        return bucket

    # ------------------------------------------------------------------ acquiring
    def _wait_time(self, tokens: int, now: float) -> float:
        w = self._pause_until - now
        b = self._req
        if b is not None:
            b.refill(now)
            bw = b.wait_for(1.0)
            if bw > w:
                w = bw
        b = self._tok
        if b is not None and tokens > 0:
            b.refill(now)
            bw = b.wait_for(tokens)
            if bw > w:
                w = bw
        return w

    def _debit(self, tokens: int) -> None:
        if self._req is not None:
            self._req.level -= 1.0
        if self._tok is not None and tokens > 0:
            self._tok.level -= tokens
        self.acquired += 1

    def try_acquire(self, tokens: int = 0) -> bool:
        """Take one request and ``tokens`` tokens now if nobody is queued and both are there."""
        if self._queue:
            return False
        if self._req is None and self._tok is None:
            if self._pause_until != _NEG_INF and self._clock() < self._pause_until:
                return False
            self.acquired += 1
            return True
        if self._wait_time(tokens, self._clock()) > 0.0:
            return False
        self._debit(tokens)
        return True

    async def acquire(self, tokens: int = 0) -> float:
        """Wait (FIFO) for one request and ``tokens`` tokens, debit them; return seconds waited."""
        if self.try_acquire(tokens):
            return 0.0
        t0 = self._clock()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        q = self._queue
        q.append(fut)
        if len(q) == 1:
            fut.set_result(None)  # we are the head
        try:
            await fut
            while True:
                now = self._clock()
                w = self._wait_time(tokens, now)
                if w <= 0.0:
                    self._debit(tokens)
                    break
                await asyncio.sleep(w if w < _MAX_SLEEP_S else _MAX_SLEEP_S)
        finally:
            if fut.done() and not fut.cancelled():
                # we were the head (possibly cancelled right after being promoted): pass it on
                q.popleft()
                while q:
                    nxt = q[0]
                    if nxt.done():  # cancelled while waiting
                        q.popleft()
                        continue
                    nxt.set_result(None)
                    break
        waited = self._clock() - t0
        self.waits += 1
        self.total_wait_s += waited
        return waited

    def record_usage(self, estimated_tokens: int, actual_tokens: int) -> None:
        """Correct the token bucket by ``actual - estimated`` once the real usage is known."""
        b = self._tok
        if b is None:
            return
        b.refill(self._clock())
        b.level -= actual_tokens - estimated_tokens
        if b.level > b.capacity:
            b.level = b.capacity

    def pause(self, seconds: float) -> None:
        """Nobody acquires for ``seconds`` (e.g. after a 429 with Retry-After). Never shortens."""
        if not seconds > 0 or not math.isfinite(seconds):
            return
        until = self._clock() + seconds
        if until > self._pause_until:
            self._pause_until = until
            self.pauses += 1

    # ------------------------------------------------------------------ server headers
    def update_from_headers(self, headers: Mapping[str, str]) -> None:
        """Learn limits and clamp the local levels from rate-limit response headers."""
        if not headers:
            return
        if not _is_case_insensitive(headers):
            headers = {k.lower(): v for k, v in headers.items()}
        get = headers.get
        lim = get("x-ratelimit-limit-requests")
        rem = get("x-ratelimit-remaining-requests")
        if lim is not None or rem is not None:
            self._apply(False, lim, rem, get("x-ratelimit-reset-requests"), False)
        else:
            lim = get("anthropic-ratelimit-requests-limit")
            rem = get("anthropic-ratelimit-requests-remaining")
            if lim is not None or rem is not None:
                self._apply(False, lim, rem, get("anthropic-ratelimit-requests-reset"), True)
        lim = get("x-ratelimit-limit-tokens")
        rem = get("x-ratelimit-remaining-tokens")
        if lim is not None or rem is not None:
            self._apply(True, lim, rem, get("x-ratelimit-reset-tokens"), False)
            return
        for prefix in ("anthropic-ratelimit-tokens-", "anthropic-ratelimit-input-tokens-"):
            lim = get(prefix + "limit")
            rem = get(prefix + "remaining")
            if lim is not None or rem is not None:
                self._apply(True, lim, rem, get(prefix + "reset"), True)
                return

    def _apply(
        self,
        tokens: bool,
        lim_s: str | None,
        rem_s: str | None,
        reset_s: str | None,
        abs_reset: bool,
    ) -> None:
        self.header_updates += 1
        now = self._clock()
        bucket = self._tok if tokens else self._req
        limit = _num(lim_s)
        if limit is not None and limit > 0:
            explicit = self._explicit_tpm if tokens else self._explicit_rpm
            eff = limit if explicit is None else min(explicit, limit)
            if bucket is None or bucket.limit != eff:
                # a limit the server announces comes with its 'remaining' count, which clamps
                # the bucket below: the whole window's budget can be used, as the server allows
                burst = self._learned_burst_s if explicit is None else self._burst_s
                bucket = self._set(bucket, eff, now, burst)
                if tokens:
                    self._tok = bucket
                else:
                    self._req = bucket
        rem = _num(rem_s)
        if rem is None:
            return
        # an over-drawn window ("remaining: -5000") means none left, not a debt of 5000 that
        # would hold every call on the key for many windows
        rem = max(rem, 0.0)
        if bucket is not None:
            bucket.refill(now)
            if rem < bucket.level:
                bucket.level = rem
        elif rem <= 0:
            # no limit known but the server says none is left: wait for its reset
            reset = _reset_seconds(reset_s, abs_reset)
            if reset is not None:
                self.pause(min(reset, 60.0))

    # ------------------------------------------------------------------ observability
    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        out: dict[str, Any] = {
            "rpm": self.rpm,
            "tpm": self.tpm,
            "rpm_source": _source(self._req, self._explicit_rpm),
            "tpm_source": _source(self._tok, self._explicit_tpm),
            "available_requests": None,
            "available_tokens": None,
            "waiting": sum(1 for f in self._queue if not f.cancelled()),
            "acquired": self.acquired,
            "waits": self.waits,
            "total_wait_s": self.total_wait_s,
            "paused_for_s": max(0.0, self._pause_until - now),
            "pauses": self.pauses,
        }
        if self._req is not None:
            self._req.refill(now)
            out["available_requests"] = self._req.level
        if self._tok is not None:
            self._tok.refill(now)
            out["available_tokens"] = self._tok.level
        return out

    def __repr__(self) -> str:
        return f"RateLimiter(rpm={self.rpm!r}, tpm={self.tpm!r})"


def _positive(v: float | None, name: str) -> float | None:
    if v is None:
        return None
    if not v > 0 or not math.isfinite(v):
        raise ConfigError(f"{name} must be a positive number or None, got {v!r}")
    return float(v)


def _source(bucket: _Bucket | None, explicit: float | None) -> str | None:
    if bucket is None:
        return None
    return "config" if explicit is not None and bucket.limit == explicit else "headers"
