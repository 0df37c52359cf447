"""Resilience.execute: retries, Retry-After, giving up, deadline, cancellation, breaker,
usage accounting, heavy concurrency, and the shared registry."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Iterator

import pytest

from parallelrag.errors import (
    BadRequestError,
    CircuitOpenError,
    ProviderConnectionError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
)
from parallelrag.resilience import (
    Resilience,
    ResilienceConfig,
    RetryPolicy,
    diff_counters,
    reset_shared,
    shared_resilience,
)

FAST = RetryPolicy(base_delay_s=0.01, max_delay_s=0.05)


def make(**kw: object) -> Resilience:
    kw.setdefault("retry", FAST)
    return Resilience("test-model at http://sim", ResilienceConfig(**kw))  # type: ignore[arg-type]


class Script:
    """An attempt() that raises the scripted errors in order, then returns ``result``."""

    def __init__(self, *errors: BaseException, result: object = "ok") -> None:
        self.errors = list(errors)
        self.result = result
        self.calls: list[float] = []

    async def __call__(self) -> object:
        self.calls.append(time.perf_counter())
        if self.errors:
            raise self.errors.pop(0)
        return self.result


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    reset_shared()
    yield
    reset_shared()


async def test_retries_503_then_returns_the_success() -> None:
    r = make()
    att = Script(ServerError("503", status_code=503), ServerError("503", status_code=503))
    assert await r.execute(att) == "ok"
    assert len(att.calls) == 3
    s = r.stats
    assert (s.requests, s.retries, s.successes, s.failures) == (3, 2, 1, 0)
    assert s.overloads == 2 and s.server_errors == 2 and s.in_flight == 0
    assert r.breaker.consecutive_failures == 0  # the success reset the streak
    assert r.limiter.overloads == 2


async def test_connection_errors_and_timeouts_are_retried() -> None:
    r = make()
    att = Script(ProviderConnectionError("reset"), ProviderTimeoutError("read timeout"))
    assert await r.execute(att) == "ok"
    assert r.stats.timeouts == 1 and r.stats.retries == 2


async def test_400_is_not_retried() -> None:
    r = make()
    att = Script(BadRequestError("bad input", status_code=400))
    with pytest.raises(BadRequestError) as info:
        await r.execute(att)
    assert len(att.calls) == 1
    assert "gave up" not in str(info.value)  # raised as is
    assert r.stats.failures == 1 and r.stats.retries == 0
    assert r.breaker.consecutive_failures == 0  # a 4xx says nothing about provider health


async def test_honours_retry_after_and_pauses_the_key() -> None:
    r = make()
    att = Script(RateLimitError("slow down", retry_after=0.3, status_code=429))
    first = asyncio.create_task(r.execute(att))
    await asyncio.sleep(0.05)
    # another caller on the same key, arriving during the pause, waits too
    other = Script()
    t0 = time.perf_counter()
    await r.execute(other)
    assert other.calls[0] - t0 >= 0.2
    assert await first == "ok"
    gap = att.calls[1] - att.calls[0]
    assert gap >= 0.3, gap
    assert gap < 0.3 + 0.05 + 0.2  # retry-after plus a small jitter, not a long backoff
    assert r.stats.rate_limited == 1 and r.stats.retries == 1
    assert r.breaker.consecutive_failures == 0  # 429s do not count against provider health


async def test_gives_up_after_max_attempts_with_a_clear_message() -> None:
    r = make(retry=RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.01))
    errors = [
        ServerError("server error 500: boom", status_code=500, provider="sim") for _ in range(5)
    ]
    att = Script(*errors)
    with pytest.raises(ServerError) as info:
        await r.execute(att)
    err = info.value
    assert len(att.calls) == 3
    assert "gave up after 3 attempts" in str(err) and "boom" in str(err)
    assert err.status_code == 500 and err.provider == "sim"
    assert err.__cause__ is errors[2]
    assert r.stats.failures == 1 and r.stats.requests == 3


async def test_max_attempts_argument_overrides_policy() -> None:
    r = make()
    att = Script(*[ProviderConnectionError("down") for _ in range(5)])
    with pytest.raises(ProviderConnectionError, match="gave up after 1 attempt"):
        await r.execute(att, max_attempts=1)
    assert len(att.calls) == 1


async def test_rate_limit_error_keeps_its_attributes_when_giving_up() -> None:
    r = make(retry=RetryPolicy(max_attempts=2, base_delay_s=0.001))
    att = Script(*[RateLimitError("429", retry_after=0.01, status_code=429) for _ in range(3)])
    with pytest.raises(RateLimitError) as info:
        await r.execute(att)
    assert info.value.retry_after == 0.01 and "gave up after 2 attempts" in str(info.value)


async def test_deadline_is_respected() -> None:
    r = make(
        retry=RetryPolicy(max_attempts=100, base_delay_s=0.05, max_delay_s=0.1, deadline_s=0.3)
    )
    att = Script(*[ServerError("500", status_code=500) for _ in range(100)])
    t0 = time.perf_counter()
    with pytest.raises(ServerError, match="deadline") as info:
        await r.execute(att)
    elapsed = time.perf_counter() - t0
    # no backoff sleep was started that would end past the deadline (the sleeps requested add
    # up to at most 0.3 s); the wall-clock bound leaves room for a loaded machine's scheduling
    # (without the deadline the 100 attempts would take about 7 s)
    assert r.stats.retry_wait_s <= 0.3, r.stats.retry_wait_s
    assert elapsed <= 0.3 + 0.5, elapsed
    assert 2 <= len(att.calls) < 100
    assert "0.3 s deadline" in str(info.value)


async def test_cancellation_releases_the_slot_and_does_not_retry() -> None:
    r = make(max_concurrency=1, adaptive=False)
    started = asyncio.Event()
    calls = 0

    async def slow() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.sleep(10)
        return "never"

    task = asyncio.create_task(r.execute(slow))
    await started.wait()
    assert r.limiter.in_flight == 1 and r.stats.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1
    assert r.limiter.in_flight == 0 and r.stats.in_flight == 0
    assert await asyncio.wait_for(r.execute(Script()), 1) == "ok"  # the slot is free again


class _TopOfRange(random.Random):
    """Full jitter that always draws the top of its range (a deterministic backoff)."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_cancellation_during_backoff() -> None:
    r = make(retry=RetryPolicy(base_delay_s=5.0, max_delay_s=5.0))
    # full jitter could draw a backoff under the 50 ms this test waits (it did, ~1 run in 100)
    r._rng = _TopOfRange()
    att = Script(*[ServerError("500", status_code=500) for _ in range(3)])
    task = asyncio.create_task(r.execute(att))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(att.calls) == 1 and r.limiter.in_flight == 0


async def test_breaker_opens_and_rejects_without_calling() -> None:
    r = make(
        breaker_threshold=3,
        breaker_reset_s=0.2,
        retry=RetryPolicy(max_attempts=1, base_delay_s=0.001),
    )
    att = Script(*[ServerError("500", status_code=500) for _ in range(3)])
    for _ in range(3):
        with pytest.raises(ServerError):
            await r.execute(att)
    with pytest.raises(CircuitOpenError, match="circuit open"):
        await r.execute(att)
    assert len(att.calls) == 3 and r.stats.circuit_rejections == 1
    await asyncio.sleep(0.25)
    assert await r.execute(att) == "ok"  # the probe succeeds and closes the circuit
    assert r.breaker.state == "closed"


async def test_usage_corrects_tokens() -> None:
    r = make(tpm=60_000)  # capacity 1000 tokens
    before = r.stats.copy_counters()
    out = await r.execute(Script(result=(1, 700)), tokens=100, usage=lambda res: res[1])  # type: ignore[index]
    assert out == (1, 700)
    assert r.stats.tokens == 700
    assert r.rate_limiter.snapshot()["available_tokens"] == pytest.approx(300, abs=5)
    await r.execute(Script(), tokens=50)  # no usage: the estimate counts
    delta = diff_counters(before, r.stats.copy_counters())
    assert delta["tokens"] == 750 and delta["calls"] == 2


async def test_error_headers_feed_the_rate_limiter() -> None:
    r = make()
    err = RateLimitError("429", retry_after=0.01, status_code=429)
    err.headers = {"x-ratelimit-limit-requests": "6000", "x-ratelimit-remaining-requests": "0"}  # type: ignore[attr-defined]
    await r.execute(Script(err))
    assert r.rate_limiter.rpm == 6000


async def test_fixed_limit_holds_under_heavy_concurrency() -> None:
    r = make(max_concurrency=8, adaptive=False)
    state = {"now": 0, "max": 0}

    async def attempt() -> int:
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0)
        state["now"] -= 1
        return 1

    results = await asyncio.wait_for(asyncio.gather(*(r.execute(attempt) for _ in range(3000))), 20)
    assert sum(results) == 3000
    assert state["max"] == 8 and r.stats.max_in_flight == 8
    assert r.limiter.in_flight == 0 and r.stats.in_flight == 0


async def test_thousands_of_calls_with_faults_all_succeed() -> None:
    r = make(initial_concurrency=16)
    n = 0

    async def flaky() -> int:
        nonlocal n
        n += 1
        mine = n
        await asyncio.sleep(0)
        if mine % 7 == 0:
            raise ServerError("503", status_code=503)
        if mine % 11 == 0:
            raise RateLimitError("429", retry_after=0.0, status_code=429)
        return 1

    results = await asyncio.wait_for(asyncio.gather(*(r.execute(flaky) for _ in range(4000))), 30)
    assert sum(results) == 4000
    s = r.stats
    assert s.successes == 4000 and s.failures == 0 and s.retries > 0
    assert r.limiter.in_flight == 0 and s.in_flight == 0 and r.limiter.waiting == 0


async def test_executor_settles_near_server_cap_of_12() -> None:
    r = make(
        initial_concurrency=4,
        max_concurrency=64,
        retry=RetryPolicy(max_attempts=50, base_delay_s=0.01),
    )
    state = {"in_flight": 0, "max": 0}

    async def server() -> int:
        if state["in_flight"] >= 12:
            await asyncio.sleep(0.001)
            raise RateLimitError("overloaded", retry_after=0.05, status_code=429)
        state["in_flight"] += 1
        state["max"] = max(state["max"], state["in_flight"])
        try:
            await asyncio.sleep(0.02)
        finally:
            state["in_flight"] -= 1
        return 1

    queue = list(range(600))

    async def worker() -> None:
        while queue:
            queue.pop()
            await r.execute(server)

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(48))), 30)
    hist = r.limiter.history
    mean_tail = statistics.mean(v for _, v in hist[len(hist) // 2 :])
    msg = (
        f"mean {mean_tail:.2f}, stats {r.stats.snapshot()}, trace {[round(v, 1) for _, v in hist]}"
    )
    assert 9 <= mean_tail <= 14, msg
    assert r.stats.successes == 600 and r.stats.rate_limited < 80, msg


def test_shared_registry() -> None:
    key = ("http://sim/v1", "m")
    a = shared_resilience(key)
    b = shared_resilience(key, ResilienceConfig(rpm=600, max_concurrency=32))
    assert a is b
    assert a.rate_limiter.rpm == 600 and a.limiter.max_limit == 32
    c = shared_resilience(key, ResilienceConfig())  # defaults never undo an explicit setting
    assert c is a and a.rate_limiter.rpm == 600 and a.limiter.max_limit == 32
    shared_resilience(key, ResilienceConfig(adaptive=False, max_concurrency=4))
    assert a.limiter.limit == 4 and a.limiter.min_limit == 4
    shared_resilience(key, ResilienceConfig(retry=RetryPolicy(max_attempts=2)))
    assert a.policy.max_attempts == 2
    assert shared_resilience(("http://sim/v1", "other")) is not a
    reset_shared()
    assert shared_resilience(key) is not a


def test_config_from_limits_maps_client_options_and_rejects_unknown() -> None:
    from parallelrag.errors import ConfigError
    from parallelrag.resilience import config_from_limits

    assert config_from_limits({}) is None
    cfg = config_from_limits({"rpm": 600, "max_concurrency": 8, "max_retries": 2,
                              "base_delay_s": 0.01})
    assert cfg is not None
    assert (cfg.rpm, cfg.max_concurrency) == (600, 8)
    assert cfg.retry.max_attempts == 3 and cfg.retry.base_delay_s == 0.01
    with pytest.raises(ConfigError, match="unknown option 'rmp'"):
        config_from_limits({"rmp": 600})
