"""The executor: one logical provider call = breaker check, rate limit, concurrency slot, attempt,
classification, backoff, retry.

``Resilience`` bundles the pieces for one provider key (base URL, model); ``shared_resilience``
hands every client in the process the same one, so limits hold across clients and threads. All
state lives on the runtime's event loop; nothing here blocks.

Per failed attempt:

=====================================  ============  ===============  =====================
error                                  limiter       breaker          retried
=====================================  ============  ===============  =====================
RateLimitError (429)                   overload      neutral          yes; pauses the key
                                                                      for its Retry-After
ServerError 503 / 529, timeouts        overload      failure          yes
other ServerError (5xx), connection    error         failure          if status retryable
ResponseError, 408 / 409               error         neutral          yes
Authentication / BadRequest / 4xx      error         neutral          no
=====================================  ============  ===============  =====================

Timeouts are retried at most ``RetryPolicy.max_timeout_retries`` times (2 by default) and reach
the adaptive limiter as ``"timeout"``, a congestion signal it weighs against recent successes
(see :mod:`.adaptive`).

**Outages.** By default a call that meets an open circuit fails at once with
:class:`~parallelrag.errors.CircuitOpenError` (right for a single interactive call). Batch work
passes ``outage_wait_s`` (the clients pass ``ResilienceConfig.outage_deadline_s``): such a call
waits for the circuit instead (one caller sends the half-open probe, the others sleep until the
breaker changes state), resumes when the probe succeeds, and fails only once ``outage_wait_s``
has passed since the outage began for it (its first connection error, 5xx or open circuit).
While within that bound, connection errors and 5xx answers do not use up its attempts.

After ``os.fork()`` every Resilience of the parent is reset in the child (fresh limiter, rate
limiter, breaker and stats, same configuration): waiters, in-flight counts and timers of the
parent's loop belong to requests the child will never see finish.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import (
    CircuitOpenError,
    ConfigError,
    ParallelRagError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
)
from .adaptive import AdaptiveLimiter, Outcome
from .breaker import CircuitBreaker
from .ratelimit import RateLimiter
from .retry import RetryPolicy, is_retryable
from .stats import ProviderStats

__all__ = ["Resilience", "ResilienceConfig", "reset_shared", "shared_resilience"]

T = TypeVar("T")

_OVERLOAD_STATUSES = frozenset({503, 529})


@dataclass
class ResilienceConfig:
    """Limits and policies for one provider key. ``adaptive=False`` fixes the concurrency limit
    at ``max_concurrency``; ``rpm`` / ``tpm`` of None are learned from response headers."""

    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int = 256
    min_concurrency: int = 1
    initial_concurrency: int = 32
    adaptive: bool = True
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker_threshold: int = 20
    breaker_reset_s: float = 5.0
    #: how long batch work (``embed_many``, ``complete_many``, ingest) waits out a provider
    #: outage (an open circuit, connection errors, 5xx) before its remaining items fail; the
    #: clients pass it to :meth:`Resilience.execute` as ``outage_wait_s``. Single interactive
    #: calls do not wait: they fail fast.
    outage_deadline_s: float = 300.0

    def __post_init__(self) -> None:
        if self.outage_deadline_s < 0:
            raise ConfigError("outage_deadline_s must be >= 0")


class Resilience:
    """Retry policy, rate limiter, adaptive limiter, breaker and stats for one provider key."""

    def __init__(
        self,
        name: str,
        config: ResilienceConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        cfg = config if config is not None else ResilienceConfig()
        self.name = name
        self.config = cfg
        self._clock = clock
        self.policy: RetryPolicy = cfg.retry
        self._build()
        _all.add(self)

    def _build(self) -> None:
        """(Re)create the stateful parts from the configuration (at init and after fork)."""
        cfg = self.config
        clock = self._clock
        self.rate_limiter = RateLimiter(cfg.rpm, cfg.tpm, clock=clock)
        if cfg.adaptive:
            # min() as in reconfigure(): a later config may lower max under the default min
            self.limiter = AdaptiveLimiter(
                cfg.initial_concurrency,
                min(cfg.min_concurrency, cfg.max_concurrency),
                cfg.max_concurrency,
                clock=clock,
            )
        else:
            n = cfg.max_concurrency
            self.limiter = AdaptiveLimiter(n, n, n, clock=clock)
        self.breaker = CircuitBreaker(
            cfg.breaker_threshold, cfg.breaker_reset_s, name=self.name, clock=clock
        )
        self.stats = ProviderStats(limiter=self.limiter)
        self._rng = random.Random()

    def _after_fork_in_child(self) -> None:
        """Drop the parent's queues, in-flight counts, timers and breaker state (see module
        doc); the configuration (explicit limits, policy) is kept."""
        self._build()

    def __repr__(self) -> str:
        return f"Resilience({self.name!r}, limit={self.limiter.limit:.1f}, breaker={self.breaker.state})"

    # ------------------------------------------------------------------ configuration
    def reconfigure(self, config: ResilienceConfig) -> None:
        """Apply every field of ``config`` that differs from the ResilienceConfig() default
        (the rule :func:`shared_resilience` uses when a later client passes its own config)."""
        default = ResilienceConfig()
        changed = {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(default, f.name)
        }
        if not changed:
            return
        self.config = dataclasses.replace(self.config, **changed)
        cfg = self.config
        if "rpm" in changed or "tpm" in changed:
            self.rate_limiter.set_limits(rpm=changed.get("rpm"), tpm=changed.get("tpm"))
        if {"min_concurrency", "max_concurrency", "adaptive"} & changed.keys():
            if cfg.adaptive:
                self.limiter.set_bounds(
                    min(cfg.min_concurrency, cfg.max_concurrency), cfg.max_concurrency
                )
            else:
                self.limiter.set_bounds(cfg.max_concurrency, cfg.max_concurrency)
        if "retry" in changed:
            self.policy = cfg.retry
        if "breaker_threshold" in changed:
            self.breaker.failure_threshold = cfg.breaker_threshold
        if "breaker_reset_s" in changed:
            self.breaker.reset_timeout_s = cfg.breaker_reset_s

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stats": self.stats.snapshot(),
            "rate_limiter": self.rate_limiter.snapshot(),
            "limiter": self.limiter.snapshot(),
            "breaker": self.breaker.snapshot(),
        }

    # ------------------------------------------------------------------ the hot path
    async def execute(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        tokens: int = 0,
        usage: Callable[[T], int | None] | None = None,
        max_attempts: int | None = None,
        outage_wait_s: float | None = None,
    ) -> T:
        """Run ``attempt()`` under the breaker, rate limiter and concurrency limit, retrying
        retryable failures with backoff until it succeeds, the attempts run out or the deadline
        would be passed. ``tokens`` is the estimated token cost (for TPM); ``usage(result)`` may
        return the provider's count, which corrects the estimate. Cancellation propagates at once.

        ``outage_wait_s`` (batch work): instead of failing on an open circuit, wait it out (see
        the module doc) for at most that many seconds from the start of the outage; None (the
        default) fails fast.
        """
        policy = self.policy
        n_max = max_attempts if max_attempts is not None else policy.max_attempts
        stats = self.stats
        clock = self._clock
        stats.calls += 1
        deadline: float | None = None
        outage_since: float | None = None  # when this call first met the outage
        n = 0  # attempts sent
        charged = 0  # attempts counted against n_max
        timeouts = 0
        outage_failures = 0
        while True:
            # read per attempt: a fork resets them (the objects are replaced in the child)
            lim = self.limiter
            rl = self.rate_limiter
            br = self.breaker
            try:
                probe = br.before_request()
            except CircuitOpenError as exc:
                if outage_wait_s is None:
                    stats.circuit_rejections += 1
                    stats.failures += 1
                    raise
                now = clock()
                if outage_since is None:
                    outage_since = now
                left = outage_since + outage_wait_s - now
                if left <= 0:
                    stats.circuit_rejections += 1
                    stats.failures += 1
                    raise CircuitOpenError(
                        f"{self.name} unavailable: the outage outlasted outage_wait_s="
                        f"{outage_wait_s:g} s ({exc.message})",
                        provider=exc.provider,
                        reopens_in_s=exc.reopens_in_s,
                    ) from exc
                # woken early by any state change (probe done, circuit closed or reopened);
                # the floor keeps a slow probe from turning waiters into a busy loop
                wait = min(left, max(exc.reopens_in_s, 0.25))
                await br.wait_change(wait)
                stats.outage_wait_s += clock() - now
                continue
            try:
                if not rl.try_acquire(tokens):
                    stats.rate_limit_wait_s += await rl.acquire(tokens)
                ticket = lim._seq if lim._try_enter() else await lim._enter_slow()
            except BaseException:
                # cancelled while queued: a probe that was never sent frees the half-open slot
                if probe:
                    br.release_probe()
                raise
            n += 1
            charged += 1
            started = clock()
            if deadline is None and policy.deadline_s is not None:
                deadline = started + policy.deadline_s
            stats.requests += 1
            if n > 1:
                stats.retries += 1
            inf = stats.in_flight + 1
            stats.in_flight = inf
            if inf > stats.max_in_flight:
                stats.max_in_flight = inf
            try:
                result = await attempt()
            except Exception as exc:
                now = clock()
                stats.in_flight -= 1
                stats.errors += 1
                outcome, retry = self._classify(exc, started, probe)
                lim._exit(outcome, started, ticket, now)
                headers = getattr(exc, "headers", None)
                if headers:
                    rl.update_from_headers(headers)
                if not retry:
                    stats.failures += 1
                    raise
                retry_after = getattr(exc, "retry_after", None)
                if not isinstance(retry_after, (int, float)):
                    retry_after = None
                if retry_after and isinstance(exc, RateLimitError):
                    # capped as the retry's own wait is: the pause holds every call on the key
                    rl.pause(min(retry_after, policy.max_retry_after_s))
                if outage_wait_s is not None and _is_outage(exc):
                    if outage_since is None:
                        outage_since = started
                    left = outage_since + outage_wait_s - now
                    if left > 0:
                        # waiting out an outage: this failure does not use up an attempt
                        charged -= 1
                        outage_failures += 1
                        delay = min(left, policy.backoff(outage_failures, retry_after, self._rng))
                        stats.retry_wait_s += delay
                        await asyncio.sleep(delay)
                        continue
                    stats.failures += 1
                    raise _gave_up(
                        exc, n, f"; the outage outlasted outage_wait_s={outage_wait_s:g} s"
                    ) from exc
                if isinstance(exc, ProviderTimeoutError):
                    timeouts += 1
                    if timeouts > policy.max_timeout_retries:
                        stats.failures += 1
                        word = "timeout" if timeouts == 1 else "timeouts"
                        raise _gave_up(exc, n, f", {timeouts} {word}") from exc
                if charged >= n_max:
                    stats.failures += 1
                    raise _gave_up(exc, n, "") from exc
                delay = policy.backoff(charged, retry_after, self._rng)
                if deadline is not None and now + delay > deadline:
                    stats.failures += 1
                    raise _gave_up(
                        exc, n, f"; another try would pass the {policy.deadline_s:g} s deadline"
                    ) from exc
                stats.retry_wait_s += delay
                await asyncio.sleep(delay)
                continue
            except BaseException:  # CancelledError, KeyboardInterrupt: release, no retry
                stats.in_flight -= 1
                lim._exit("cancelled", started, ticket, clock())
                if probe:
                    br.release_probe()
                raise
            now = clock()
            stats.in_flight -= 1
            lim._exit("success", started, ticket, now)
            br.on_success()
            stats.observe_latency(now - started)
            stats.successes += 1
            used = usage(result) if usage is not None else None
            if used is not None:
                stats.tokens += used
                rl.record_usage(tokens, used)
            else:
                stats.tokens += tokens
            return result

    def _classify(self, exc: Exception, started: float, probe: bool = False) -> tuple[Outcome, bool]:
        """Update stats and breaker for a failed attempt; return (limiter outcome, retry?).

        Overloads (503/529, timeouts) count towards the breaker once per congestion epoch, as
        they do for the adaptive limiter: a burst of 503s answering one wave of requests (a
        server that takes 12 at a time, sent 200) is one signal, not 188 consecutive failures.
        A server that answers every retry with 503 still opens the breaker, because each retry
        starts after the cut its predecessor caused. A failed half-open probe always counts.
        """
        stats = self.stats
        br = self.breaker
        new_epoch = probe or started >= self.limiter._last_cut
        retry = is_retryable(exc, self.policy)
        status = getattr(exc, "status_code", None) if isinstance(exc, ProviderError) else None
        if isinstance(exc, RateLimitError) or status == 429:
            stats.rate_limited += 1
            stats.overloads += 1
            br.on_neutral()
            return "overload", retry
        if isinstance(exc, ProviderTimeoutError):
            stats.timeouts += 1
            stats.overloads += 1
            if new_epoch:
                br.on_failure(exc)
            else:
                br.on_neutral()
            return "timeout", retry
        if isinstance(exc, ServerError) or (status is not None and status >= 500):
            stats.server_errors += 1
            if status in _OVERLOAD_STATUSES:
                stats.overloads += 1
                if new_epoch:
                    br.on_failure(exc)
                else:
                    br.on_neutral()
                return "overload", retry
            br.on_failure(exc)
            return "error", retry
        if isinstance(exc, ProviderConnectionError):
            br.on_failure(exc)
            return "error", retry
        br.on_neutral()
        return "error", retry


def _is_outage(exc: Exception) -> bool:
    """A failure that says "the provider is down" (waited out by batch work): no connection,
    or a 5xx answer. Timeouts are not: they have their own cap."""
    if isinstance(exc, ProviderTimeoutError):
        return False
    if isinstance(exc, ProviderConnectionError):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(exc, ServerError) or (isinstance(status, int) and status >= 500)


def _gave_up(exc: Exception, attempts: int, why: str) -> Exception:
    """A copy of ``exc`` (same class and attributes) whose message says that we gave up."""
    if not isinstance(exc, ParallelRagError):
        return exc
    cls = type(exc)
    new = cls.__new__(cls)
    new.__dict__.update(exc.__dict__)
    word = "attempt" if attempts == 1 else "attempts"
    ParallelRagError.__init__(
        new,
        f"{exc.message} (gave up after {attempts} {word}{why})",
        provider=exc.provider,
        status_code=exc.status_code,
        request_id=exc.request_id,
    )
    return new


# --------------------------------------------------------------------------- the process registry
_shared: dict[tuple[str, str], Resilience] = {}


def shared_resilience(key: tuple[str, str], config: ResilienceConfig | None = None) -> Resilience:
    """The process-wide Resilience for ``key = (base_url, model)``.

    The first call creates it from ``config`` (or the defaults). A later call with a config
    applies each field of it that differs from the ``ResilienceConfig()`` default (explicit
    rpm / tpm, concurrency bounds, retry policy, breaker settings) to the existing object:
    the last explicit setting wins, defaults never undo one.
    """
    r = _shared.get(key)
    if r is None:
        fresh = Resilience(f"{key[1]} at {key[0]}", config)
        r = _shared.setdefault(key, fresh)  # atomic: racing threads end up with one object
        if r is fresh:
            return r
    if config is not None:
        r.reconfigure(config)
    return r


#: every Resilience alive in the process (shared or not), to reset in a forked child
_all: weakref.WeakSet[Resilience] = weakref.WeakSet()


def reset_shared() -> None:
    """Forget every shared Resilience (between tests)."""
    _shared.clear()


def _after_fork_in_child() -> None:
    """Reset every Resilience in place: clients made before the fork keep their object (and
    still share it with clients made after, through the registry), with the parent's queues,
    in-flight counts and breaker state gone."""
    for r in list(_all):
        r._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def config_from_limits(limits: Mapping[str, Any]) -> ResilienceConfig | None:
    """Client keyword options (``rpm=``, ``tpm=``, ``max_concurrency=``, ``max_retries=``,
    ``base_delay_s=``, ...) → a :class:`ResilienceConfig`; None when there are none.

    ``max_retries=N`` means N retries (``max_attempts = N + 1``); RetryPolicy fields are accepted
    by name; anything else is a :class:`ConfigError`.
    """
    if not limits:
        return None
    names = {f.name for f in dataclasses.fields(ResilienceConfig)}
    retry_names = {f.name for f in dataclasses.fields(RetryPolicy)}
    cfg_kw: dict[str, Any] = {}
    retry_kw: dict[str, Any] = {}
    for key, value in limits.items():
        if key == "max_retries":
            retry_kw["max_attempts"] = int(value) + 1
        elif key in retry_names:
            retry_kw[key] = value
        elif key in names:
            cfg_kw[key] = value
        else:
            raise ConfigError(f"unknown option {key!r}")
    if retry_kw:
        cfg_kw["retry"] = RetryPolicy(**retry_kw)
    return ResilienceConfig(**cfg_kw)
