"""RetryPolicy.backoff, parse_retry_after, parse_duration, is_retryable."""

from __future__ import annotations

import email.utils
import random

import pytest

from parallelrag.errors import (
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ConfigError,
    ParallelRagError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ResponseError,
    ServerError,
)
from parallelrag.resilience import RetryPolicy, is_retryable, parse_duration, parse_retry_after


def test_backoff_full_jitter_bounds() -> None:
    p = RetryPolicy(base_delay_s=0.2, max_delay_s=5.0)
    rng = random.Random(1)
    for attempt in range(1, 12):
        ceiling = min(5.0, 0.2 * 2 ** (attempt - 1))
        samples = [p.backoff(attempt, rng=rng) for _ in range(400)]
        assert all(0.0 <= s <= ceiling for s in samples), attempt
        # full jitter: spread over the whole range, not clustered at the top
        assert min(samples) < 0.1 * ceiling
        assert max(samples) > 0.9 * ceiling
    assert p.backoff(10_000, rng=rng) <= 5.0  # no overflow for huge attempt numbers


def test_backoff_honours_retry_after() -> None:
    p = RetryPolicy(max_delay_s=1.0)
    rng = random.Random(2)
    for ra in (0.0, 0.5, 3.0, 30.0):
        waits = [p.backoff(1, ra, rng) for _ in range(200)]
        # never below the server's wait, even above max_delay_s; jitter ≤ max(10 %, 50 ms)
        assert all(ra <= w <= ra + max(0.1 * ra, 0.05) + 1e-9 for w in waits), ra
        assert len(set(waits)) > 100  # a herd spreads
    # absurd Retry-After values are capped
    assert p.backoff(1, 10_000.0, rng) <= 120.0 * 1.1


def test_policy_validation() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError):
        RetryPolicy(deadline_s=0)


def test_parse_retry_after_ms_seconds_and_case() -> None:
    assert parse_retry_after({"retry-after-ms": "250"}) == pytest.approx(0.25)
    assert parse_retry_after({"Retry-After-Ms": "1.5"}) == pytest.approx(0.0015)
    # ms wins over seconds
    assert parse_retry_after({"retry-after": "7", "retry-after-ms": "100"}) == pytest.approx(0.1)
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"RETRY-AFTER": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after": "-3"}) == 0.0
    assert parse_retry_after({"retry-after-ms": "-3"}) == 0.0
    # garbage ms falls back to seconds
    assert parse_retry_after({"retry-after-ms": "soon", "retry-after": "4"}) == 4.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"content-type": "application/json"}) is None


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=now) == 0.0


@pytest.mark.parametrize("value", ["", "soon", "nan", "inf", "Tue, 99 Foo 2024", "1s"])
def test_parse_retry_after_garbage(value: str) -> None:
    assert parse_retry_after({"retry-after": value}) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("120ms", 0.12),
        ("1h2m3.5s", 3723.5),
        ("2.5", 2.5),
        ("17", 17.0),
        ("0s", 0.0),
        ("500us", 0.0005),
        (" 3m ", 180.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "1x", "s", "1s2", "m1s", "-"])
def test_parse_duration_garbage(text: str) -> None:
    assert parse_duration(text) is None


P = RetryPolicy()


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RateLimitError("429", status_code=429), True),
        (RateLimitError("429"), True),
        (ServerError("500", status_code=500), True),
        (ServerError("502", status_code=502), True),
        (ServerError("503", status_code=503), True),
        (ServerError("504", status_code=504), True),
        (ServerError("no status"), True),
        (ServerError("501", status_code=501), False),
        (ProviderTimeoutError("t"), True),
        (ProviderConnectionError("reset"), True),
        (ResponseError("bad json", status_code=200), True),
        (ProviderError("408", status_code=408), True),
        (ProviderError("409", status_code=409), True),
        (ProviderError("418", status_code=418), False),
        (ProviderError("no status"), False),
        (AuthenticationError("401", status_code=401), False),
        (AuthenticationError("403", status_code=403), False),
        (BadRequestError("400", status_code=400), False),
        (BadRequestError("404", status_code=404), False),
        (BadRequestError("422", status_code=422), False),
        (CircuitOpenError("open"), False),
        (ParallelRagError("generic"), False),
        (ConnectionResetError("raw"), False),
        (ValueError("bug"), False),
    ],
)
def test_is_retryable_table(exc: BaseException, expected: bool) -> None:
    assert is_retryable(exc, P) is expected


def test_is_retryable_respects_policy_statuses() -> None:
    p = RetryPolicy(retry_statuses=frozenset({503}))
    assert is_retryable(ServerError("503", status_code=503), p)
    assert not is_retryable(ServerError("500", status_code=500), p)
    assert not is_retryable(ProviderError("408", status_code=408), p)
