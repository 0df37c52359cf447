"""CircuitBreaker: opens after N consecutive failures, rejects, half-opens, probes, recovers."""

from __future__ import annotations

import pytest

from parallelrag.errors import CircuitOpenError, ConfigError
from parallelrag.resilience import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def state(br: CircuitBreaker) -> str:
    return br.state  # (a plain str, so mypy does not narrow it between calls)


def test_opens_after_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    br = CircuitBreaker(3, 5.0, name="m at http://x", clock=clock)
    for _ in range(2):
        br.before_request()
        br.on_failure()
    br.on_success()  # resets the streak
    for _ in range(2):
        br.on_failure()
    assert state(br) == "closed"
    br.before_request()
    br.on_failure()
    assert state(br) == "open"
    with pytest.raises(CircuitOpenError) as info:
        br.before_request()
    err = info.value
    text = str(err)
    assert "circuit open" in text and "m at http://x" in text
    assert "3 consecutive failures" in text and "retrying in 5.0 s" in text
    assert err.reopens_in_s == pytest.approx(5.0)
    snap = br.snapshot()
    assert snap["state"] == "open" and snap["opens"] == 1 and snap["rejections"] == 1


def test_half_open_lets_one_probe_through_and_closes_on_success() -> None:
    clock = FakeClock()
    br = CircuitBreaker(2, 5.0, clock=clock)
    br.on_failure()
    br.on_failure()
    clock.t += 4.9
    with pytest.raises(CircuitOpenError):
        br.before_request()
    clock.t += 0.2
    assert state(br) == "half_open"
    br.before_request()  # the probe
    with pytest.raises(CircuitOpenError) as info:
        br.before_request()  # everyone else waits for the probe
    assert "half-open" in str(info.value)
    br.on_success()
    assert state(br) == "closed"
    br.before_request()
    br.before_request()


def test_failed_probe_reopens_for_another_cool_down() -> None:
    clock = FakeClock()
    br = CircuitBreaker(1, 2.0, clock=clock)
    br.on_failure()
    clock.t += 2.0
    br.before_request()
    br.on_failure()
    assert state(br) == "open"
    with pytest.raises(CircuitOpenError):
        br.before_request()
    clock.t += 2.0
    br.before_request()
    br.on_success()
    assert state(br) == "closed" and br.opens == 2


def test_neutral_probe_outcome_and_lost_probe_let_another_probe_go() -> None:
    clock = FakeClock()
    br = CircuitBreaker(1, 2.0, clock=clock)
    br.on_failure()
    clock.t += 2.0
    br.before_request()
    br.on_neutral()  # e.g. the probe got a 429 or was cancelled
    br.before_request()  # a new probe may go
    with pytest.raises(CircuitOpenError):
        br.before_request()
    clock.t += 2.5  # the probe never reported back: presumed lost
    br.before_request()


def test_invalid_config() -> None:
    with pytest.raises(ConfigError):
        CircuitBreaker(0)
