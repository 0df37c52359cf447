"""Retry policy: which errors to retry, how long to wait, and how to read ``Retry-After``.

Backoff is exponential with *full jitter* (``uniform(0, min(max_delay, base * 2**(n-1)))``), the
scheme that spreads a herd of clients best. When the server says how long to wait
(``retry-after-ms`` / ``Retry-After``), that wait is honoured as a floor, plus a small jitter.
"""

from __future__ import annotations

import email.utils
import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC

from ..errors import (
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    ResponseError,
    ResponseTooLargeError,
    ServerError,
    TLSVerificationError,
)

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "RetryPolicy",
    "get_header",
    "is_retryable",
    "parse_duration",
    "parse_retry_after",
]

DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({408, 409, 429, 500, 502, 503, 504})

_rng = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one logical call is retried.

    ``deadline_s`` bounds the time from the first attempt's send to the start of the last
    retry (waits included): a retry whose backoff would end past the deadline is not made.
    Queueing for the very first rate-limit token / concurrency slot is not counted, because
    that is waiting the caller asked for by submitting many calls at once.

    ``max_timeout_retries`` caps the retries of attempts that timed out (openai-python's default
    of 2): a server that does not answer within the read timeout usually will not on the next
    try either, and every resent request may be billed. Other retryable failures still get up
    to ``max_attempts`` in all.
    """

    max_attempts: int = 8
    base_delay_s: float = 0.2
    max_delay_s: float = 20.0
    deadline_s: float | None = 300.0
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
    #: the most a server's Retry-After may make us wait for one retry
    max_retry_after_s: float = 120.0
    #: retries allowed after timed-out attempts (within ``max_attempts`` and the deadline)
    max_timeout_retries: int = 2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("max_attempts must be >= 1")
        if self.max_timeout_retries < 0:
            raise ConfigError("max_timeout_retries must be >= 0")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ConfigError("delays must be >= 0")
        if self.deadline_s is not None and self.deadline_s <= 0:
            raise ConfigError("deadline_s must be > 0 or None")

    def backoff(
        self,
        attempt: int,
        retry_after_s: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Without a server hint: full jitter, ``uniform(0, min(max_delay_s, base * 2**(attempt-1)))``.
        With ``retry_after_s``: at least that long (capped at ``max_retry_after_s``, never capped
        below it by ``max_delay_s``), plus a jitter of up to max(10 %, 50 ms) so that clients told
        the same instant do not all come back at once.
        """
        r = rng if rng is not None else _rng
        if retry_after_s is not None and retry_after_s >= 0 and math.isfinite(retry_after_s):
            wait = min(retry_after_s, self.max_retry_after_s)
            return wait + r.uniform(0.0, max(0.1 * wait, 0.05))
        exp = max(0, attempt - 1)
        ceiling = (
            self.max_delay_s if exp >= 64 else min(self.max_delay_s, self.base_delay_s * 2.0**exp)
        )
        return r.uniform(0.0, ceiling)


def get_header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup (``name`` lower-case) on any mapping."""
    v = headers.get(name)
    if v is not None:
        return v
    if _is_case_insensitive(headers):
        return None
    for k, val in headers.items():
        if k.lower() == name:
            return val
    return None


def _is_case_insensitive(headers: Mapping[str, str]) -> bool:
    name = type(headers).__name__
    return name in ("CIMultiDict", "CIMultiDictProxy", "HTTPMessage", "Message", "Headers")


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait, or None.

    ``retry-after-ms`` (milliseconds, may be fractional) wins over ``retry-after`` (seconds, or an
    HTTP date relative to ``now``, default ``time.time()``). Negative values give 0; garbage None.
    """
    if not headers:
        return None
    ms = get_header(headers, "retry-after-ms")
    if ms is not None:
        try:
            v = float(ms.strip())
        except ValueError:
            v = math.nan
        if math.isfinite(v):
            return max(0.0, v / 1000.0)
    ra = get_header(headers, "retry-after")
    if ra is None:
        return None
    ra = ra.strip()
    try:
        v = float(ra)
    except ValueError:
        pass
    else:
        return max(0.0, v) if math.isfinite(v) else None
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None
        return None
    if when.tzinfo is None:
        # an HTTP date is always GMT; a naive result means "-0000"
        when = when.replace(tzinfo=UTC)
    ref = time.time() if now is None else now
    return max(0.0, when.timestamp() - ref)


_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(s: str) -> float | None:
    """Parse a Go-style duration ("6m0s", "120ms", "1h2m3.5s") or plain seconds ("2.5") → seconds."""
    s = s.strip()
    if not s:
        return None
    try:
        v = float(s)
    except ValueError:
        pass
    else:
        return max(0.0, v) if math.isfinite(v) else None
    pos = 0
    total = 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        return None
    return total


def is_retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    """Whether another attempt may succeed where ``exc`` failed.

    Retried: 429, 5xx in ``retry_statuses`` (or without a status), timeouts, connection errors,
    malformed responses, and any ProviderError whose status is in ``retry_statuses`` (408/409).
    Never: authentication, bad requests, an open circuit, a certificate the verifier rejects, a
    response over the size limit, a 429 that says the quota is used up, other 4xx, and
    exceptions that are not ParallelRagErrors (the HTTP layer translates transport errors into
    ours).
    """
    if isinstance(exc, (CircuitOpenError, AuthenticationError, BadRequestError,
                        TLSVerificationError, ResponseTooLargeError, QuotaExceededError)):
        return False  # the same request would fail the same way (a certificate, a key, a size,
        # an account out of credit)
    if isinstance(exc, (ProviderTimeoutError, ProviderConnectionError, ResponseError)):
        return True
    if isinstance(exc, (RateLimitError, ServerError)):
        return exc.status_code is None or exc.status_code in policy.retry_statuses
    if isinstance(exc, ProviderError):
        return exc.status_code is not None and exc.status_code in policy.retry_statuses
    return False
