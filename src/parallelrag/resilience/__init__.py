"""Resilience for provider calls: retry policy, rate limiter, adaptive concurrency limiter,
circuit breaker, stats, and the executor that combines them.

One :class:`Resilience` per provider key (base URL, model), shared process-wide through
:func:`shared_resilience`; it lives on the runtime's event loop.
"""

from __future__ import annotations

from .adaptive import AdaptiveLimiter, Outcome, Slot
from .breaker import BreakerState, CircuitBreaker
from .executor import (
    Resilience,
    ResilienceConfig,
    config_from_limits,
    reset_shared,
    shared_resilience,
)
from .ratelimit import RateLimiter
from .retry import RetryPolicy, is_retryable, parse_duration, parse_retry_after
from .stats import ProviderStats, diff_counters

__all__ = [
    "AdaptiveLimiter",
    "BreakerState",
    "CircuitBreaker",
    "Outcome",
    "ProviderStats",
    "RateLimiter",
    "Resilience",
    "ResilienceConfig",
    "RetryPolicy",
    "Slot",
    "config_from_limits",
    "diff_counters",
    "is_retryable",
    "parse_duration",
    "parse_retry_after",
    "reset_shared",
    "shared_resilience",
]
