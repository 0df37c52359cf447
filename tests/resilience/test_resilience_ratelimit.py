"""RateLimiter: pacing, FIFO fairness, oversize requests, headers, pause, cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from parallelrag.errors import ConfigError
from parallelrag.resilience import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_unlimited_never_waits() -> None:
    rl = RateLimiter()
    t0 = time.perf_counter()
    for _ in range(1000):
        assert await rl.acquire(500) == 0.0
    assert time.perf_counter() - t0 < 0.5
    assert rl.rpm is None and rl.tpm is None


async def test_paces_requests_at_configured_rpm() -> None:
    # 6000 rpm = 100/s; burst of 0.1 s = 10 requests, the other 50 are paced → ~0.5 s
    rl = RateLimiter(rpm=6000, burst_s=0.1)
    done: list[float] = []
    t0 = time.perf_counter()

    async def one() -> None:
        await rl.acquire()
        done.append(time.perf_counter() - t0)

    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(60))), 10)
    elapsed = max(done)
    assert 0.4 <= elapsed <= 1.5, elapsed
    # roughly even spacing after the burst: no 20 requests land within 0.1 s
    tail = sorted(done)[10:]
    assert all(tail[i + 20] - tail[i] > 0.1 for i in range(len(tail) - 20))
    snap = rl.snapshot()
    assert snap["acquired"] == 60 and snap["waits"] >= 40 and snap["total_wait_s"] > 0


def test_bucket_math_with_fake_clock() -> None:
    clock = FakeClock()
    # 60 rpm: 1 request/s, capacity 1; 600 tpm: 10 tokens/s, capacity 10
    rl = RateLimiter(rpm=60, tpm=600, clock=clock)
    assert rl.try_acquire(4)  # tokens 10 → 6, requests 1 → 0
    assert not rl.try_acquire(1)  # no request left
    clock.t += 0.5
    assert not rl.try_acquire(1)  # half a request refilled
    clock.t += 0.5
    assert rl.try_acquire(10)  # tokens 6 + 10 capped at 10 → 0
    clock.t += 1.0
    assert rl.try_acquire(10)  # both refilled in full
    clock.t += 0.3
    assert not rl.try_acquire(0)  # 0.3 of a request
    snap = rl.snapshot()
    assert snap["available_requests"] == pytest.approx(0.3)
    assert snap["available_tokens"] == pytest.approx(3.0)


async def test_fifo_big_request_not_starved() -> None:
    # 600 tpm → 10 tokens/s, capacity 10. A 10-token request queued first must go before the
    # stream of 1-token requests queued after it.
    rl = RateLimiter(tpm=600)
    assert await rl.acquire(9) == 0.0  # drain most of the bucket
    order: list[str] = []

    async def req(name: str, tokens: int) -> None:
        await rl.acquire(tokens)
        order.append(name)

    big = asyncio.create_task(req("big", 10))
    await asyncio.sleep(0)
    smalls = [asyncio.create_task(req(f"s{i}", 1)) for i in range(5)]
    await asyncio.wait_for(asyncio.gather(big, *smalls), 10)
    assert order[0] == "big", order


async def test_oversize_request_proceeds_alone_when_bucket_full() -> None:
    rl = RateLimiter(tpm=600)  # capacity 10 tokens, refill 10/s
    await rl.acquire(5)  # half empty: the oversize one must wait ~0.5 s for a full bucket
    t0 = time.perf_counter()
    waited = await asyncio.wait_for(rl.acquire(1000), 5)  # never waits forever
    elapsed = time.perf_counter() - t0
    assert 0.3 <= elapsed <= 2.0 and waited == pytest.approx(elapsed, abs=0.05)
    snap = rl.snapshot()
    assert snap["available_tokens"] < 0  # it took everything and went into debt
    assert not rl.try_acquire(1)  # the debt is repaid before anyone else goes
    assert rl.try_acquire(0)  # requests without tokens are not held back by the token debt


async def test_oversize_request_from_an_empty_queue_and_full_bucket_is_immediate() -> None:
    rl = RateLimiter(tpm=60)  # capacity 1 token
    assert await asyncio.wait_for(rl.acquire(10_000), 1) == 0.0


def test_record_usage_corrects_the_estimate() -> None:
    clock = FakeClock()
    rl = RateLimiter(tpm=6000, clock=clock)  # capacity 100
    assert rl.try_acquire(50)
    rl.record_usage(50, 80)  # used 30 more than estimated
    assert rl.snapshot()["available_tokens"] == pytest.approx(20.0)
    rl.record_usage(80, 0)  # never above capacity
    assert rl.snapshot()["available_tokens"] == pytest.approx(100.0)


def test_learns_limits_and_clamps_remaining_from_openai_headers() -> None:
    clock = FakeClock()
    rl = RateLimiter(clock=clock)
    rl.update_from_headers(
        {
            "x-ratelimit-limit-requests": "600",
            "x-ratelimit-remaining-requests": "3",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-limit-tokens": "60000",
            "x-ratelimit-remaining-tokens": "100",
            "x-ratelimit-reset-tokens": "120ms",
        }
    )
    assert rl.rpm == 600 and rl.tpm == 60000
    snap = rl.snapshot()
    assert snap["rpm_source"] == "headers"
    assert snap["available_requests"] == pytest.approx(3.0)  # capacity 10, server says 3
    assert snap["available_tokens"] == pytest.approx(100.0)  # capacity 1000, server says 100
    # a late header claiming more is left never raises the local view
    rl.update_from_headers({"x-ratelimit-remaining-requests": "9"})
    assert rl.snapshot()["available_requests"] == pytest.approx(3.0)
    # ... but one saying less lowers it
    rl.update_from_headers({"X-RateLimit-Remaining-Requests": "1"})  # case-insensitive
    assert rl.snapshot()["available_requests"] == pytest.approx(1.0)


def test_learns_limits_from_anthropic_headers() -> None:
    rl = RateLimiter(clock=FakeClock())
    rl.update_from_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "0",
            "anthropic-ratelimit-requests-reset": "2030-01-01T00:00:00Z",
            "anthropic-ratelimit-input-tokens-limit": "40000",
            "anthropic-ratelimit-input-tokens-remaining": "39000",
            "anthropic-ratelimit-output-tokens-limit": "8000",
        }
    )
    assert rl.rpm == 50 and rl.tpm == 40000
    snap = rl.snapshot()
    assert snap["available_requests"] == pytest.approx(0.0)
    assert snap["available_tokens"] == pytest.approx(39000)  # learned: a whole minute, clamped
    assert not rl.try_acquire()


def test_explicit_limit_wins_unless_server_is_stricter() -> None:
    rl = RateLimiter(rpm=120, clock=FakeClock())
    rl.update_from_headers({"x-ratelimit-limit-requests": "1000"})
    assert rl.rpm == 120
    rl.update_from_headers({"x-ratelimit-limit-requests": "60"})
    assert rl.rpm == 60
    assert rl.snapshot()["rpm_source"] == "headers"


def test_remaining_zero_without_known_limit_pauses_until_reset() -> None:
    clock = FakeClock()
    rl = RateLimiter(clock=clock)
    rl.update_from_headers(
        {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"}
    )
    assert not rl.try_acquire()
    clock.t += 1.6
    assert rl.try_acquire()


def test_garbage_headers_are_ignored() -> None:
    rl = RateLimiter(clock=FakeClock())
    rl.update_from_headers(
        {"x-ratelimit-limit-requests": "lots", "x-ratelimit-remaining-requests": "?"}
    )
    rl.update_from_headers({})
    assert rl.rpm is None and rl.try_acquire()


async def test_pause_blocks_everyone_and_never_shortens() -> None:
    rl = RateLimiter()
    rl.pause(0.3)
    rl.pause(0.05)  # a shorter pause does not cut the longer one short
    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(rl.acquire(), rl.acquire()), 5)
    assert time.perf_counter() - t0 >= 0.28
    assert rl.snapshot()["pauses"] == 1
    assert await rl.acquire() == 0.0  # over


async def test_cancelled_waiters_do_not_block_the_queue() -> None:
    rl = RateLimiter(rpm=600)  # capacity 10, refill 10/s
    for _ in range(10):
        assert rl.try_acquire()
    head = asyncio.create_task(rl.acquire())
    mid = asyncio.create_task(rl.acquire())
    tail = asyncio.create_task(rl.acquire())
    await asyncio.sleep(0.01)
    mid.cancel()
    head.cancel()
    waited = await asyncio.wait_for(tail, 2)
    assert waited < 0.5
    assert rl.snapshot()["waiting"] == 0
    # the queue is clean: the next caller is not stuck behind cancelled futures
    await asyncio.wait_for(rl.acquire(), 2)


def test_invalid_limits() -> None:
    with pytest.raises(ConfigError):
        RateLimiter(rpm=0)
    with pytest.raises(ConfigError):
        RateLimiter(tpm=-5)
