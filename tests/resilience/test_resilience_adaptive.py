"""AdaptiveLimiter: AIMD growth when bottlenecked, one cut per congestion epoch, bounds, FIFO,
cancellation, and settling near a server's cap in a pure-logic simulation."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from parallelrag.errors import ConfigError
from parallelrag.resilience import AdaptiveLimiter


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


async def _round_trips(lim: AdaptiveLimiter, clock: FakeClock, n: int) -> None:
    for _ in range(n):  # round trips with the limit full
        slots = [lim.slot() for _ in range(int(lim.limit))]
        for s in slots:
            await s.__aenter__()
        clock.t += 0.01
        for s in slots:
            await s.__aexit__(None, None, None)


async def test_slow_start_doubles_per_round_trip_until_first_overload() -> None:
    clock = FakeClock()
    lim = AdaptiveLimiter(initial=4, max_limit=1000, clock=clock)
    await _round_trips(lim, clock, 3)
    assert lim.limit == 32.0  # 4 → 8 → 16 → 32
    async with lim.slot() as s:
        s.outcome = "overload"
    assert lim.limit == 16.0
    await _round_trips(lim, clock, 1)
    assert 16.0 < lim.limit < 24.0  # recovery towards the old level: slower than doubling


async def test_grows_when_bottlenecked() -> None:
    clock = FakeClock()
    lim = AdaptiveLimiter(initial=4, max_limit=64, clock=clock, slow_start=False)
    for _ in range(5):  # five "round trips" with the limit full
        slots = [lim.slot() for _ in range(int(lim.limit))]
        for s in slots:
            await s.__aenter__()
        clock.t += 0.01
        for s in slots:
            await s.__aexit__(None, None, None)
    # ≈ +1 per round trip: 4 → ~8-9
    assert 7.5 <= lim.limit <= 10, lim.limit
    assert lim.increases > 0 and lim.decreases == 0


async def test_does_not_grow_when_not_the_bottleneck() -> None:
    lim = AdaptiveLimiter(initial=8)
    for _ in range(100):  # one at a time: 1 in flight out of 8
        async with lim.slot():
            pass
    assert lim.limit == 8.0
    assert lim.max_in_flight == 1


async def test_cuts_once_per_congestion_epoch() -> None:
    clock = FakeClock()
    lim = AdaptiveLimiter(initial=16, clock=clock)
    old = [lim.slot() for _ in range(10)]
    for s in old:
        await s.__aenter__()
    clock.t = 1.0
    for s in old:  # a burst of 429s from one window
        s.outcome = "overload"
        await s.__aexit__(None, None, None)
    assert lim.limit == 8.0  # cut once, not to the floor
    assert lim.decreases == 1 and lim.overloads == 10 and lim.overloads_ignored == 9
    clock.t = 2.0
    async with lim.slot() as s:  # started after the cut: a new epoch
        s.outcome = "overload"
    assert lim.limit == 4.0 and lim.decreases == 2


async def test_bounds_are_respected() -> None:
    clock = FakeClock()
    lim = AdaptiveLimiter(initial=4, min_limit=3, max_limit=6, clock=clock)
    for i in range(5):
        clock.t = float(i + 1)
        async with lim.slot() as s:
            s.outcome = "overload"
    assert lim.limit == 3.0
    for _ in range(200):
        slots = [lim.slot() for _ in range(int(lim.limit))]
        for sl in slots:
            await sl.__aenter__()
        for sl in slots:
            await sl.__aexit__(None, None, None)
    assert lim.limit == 6.0
    with pytest.raises(ConfigError):
        AdaptiveLimiter(min_limit=5, max_limit=4)
    with pytest.raises(ConfigError):
        AdaptiveLimiter(decrease_factor=1.5)


async def test_release_api_and_epoch_from_latency() -> None:
    clock = FakeClock()
    lim = AdaptiveLimiter(initial=8, clock=clock)
    for _ in range(4):
        await lim.acquire()
    clock.t = 10.0
    lim.release("overload", latency_s=1.0)  # started at 9.0 → cut at 10.0
    lim.release("overload", latency_s=2.0)  # started at 8.0, before the cut → ignored
    assert lim.limit == 4.0 and lim.overloads_ignored == 1
    lim.release("error")
    lim.release("success")
    assert lim.in_flight == 0
    snap = lim.snapshot()
    assert snap["decreases"] == 1 and snap["in_flight"] == 0 and snap["max_in_flight"] == 4


async def test_waiters_are_fifo_and_shrinking_limit_holds_new_ones() -> None:
    clock = FakeClock()
    lim = AdaptiveLimiter(initial=2, clock=clock)
    await lim.acquire()
    await lim.acquire()
    order: list[int] = []

    async def waiter(i: int) -> None:
        await lim.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(4)]
    await asyncio.sleep(0)
    assert lim.waiting == 4 and lim.in_flight == 2
    clock.t = 1.0
    lim.release("overload", latency_s=0.5)  # limit 2 → 1; one in flight still holds the only slot
    await asyncio.sleep(0)
    assert order == [] and lim.in_flight == 1
    lim.release("error")
    await asyncio.sleep(0)
    assert order == [0] and lim.in_flight == 1  # one at a time now
    for expected in ([0, 1], [0, 1, 2], [0, 1, 2, 3]):
        lim.release("error")
        await asyncio.sleep(0)
        assert order == expected
    await asyncio.gather(*tasks)
    assert lim.max_in_flight == 2


async def test_slot_outcomes_and_cancellation_release_the_slot() -> None:
    lim = AdaptiveLimiter(initial=1)
    with pytest.raises(ValueError):
        async with lim.slot():
            raise ValueError("boom")
    assert lim.in_flight == 0 and lim.limit == 1.0

    started = asyncio.Event()

    async def hold() -> None:
        async with lim.slot():
            started.set()
            await asyncio.sleep(10)

    holder = asyncio.create_task(hold())
    await started.wait()
    waiter = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    waiter.cancel()  # a cancelled waiter leaves no trace
    holder.cancel()  # a cancelled holder gives its slot back
    for t in (waiter, holder):
        with pytest.raises(asyncio.CancelledError):
            await t
    assert lim.in_flight == 0
    await asyncio.wait_for(lim.acquire(), 1)  # not stuck behind the cancelled waiter
    lim.release("success")


async def test_granted_then_cancelled_waiter_returns_its_slot() -> None:
    lim = AdaptiveLimiter(initial=1)
    await lim.acquire()
    waiter = asyncio.create_task(lim.acquire())
    await asyncio.sleep(0)
    lim.release("success")  # hands the slot to the waiter ...
    waiter.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert lim.in_flight == 0


async def test_history_is_bounded() -> None:
    clock = FakeClock()
    lim = AdaptiveLimiter(initial=1, max_limit=10_000, clock=clock, history_size=64)
    for i in range(120):
        clock.t = i * 0.02
        n = int(lim.limit)
        for _ in range(n):
            await lim.acquire()
        for _ in range(n):
            lim.release("success")
    assert lim.limit > 60
    assert 2 <= len(lim.history) <= 64
    assert lim.history[-1][1] == lim.limit
    assert all(a[0] <= b[0] for a, b in zip(lim.history, lim.history[1:], strict=False))


async def test_settles_near_server_cap_of_12() -> None:
    """A fake server admits 12 requests at a time (20 ms each) and answers 429 beyond that."""
    lim = AdaptiveLimiter(initial=4, max_limit=64)
    cap = 12
    state = {"in_flight": 0, "max": 0, "rejected": 0, "served": 0}

    async def server() -> bool:
        if state["in_flight"] >= cap:
            state["rejected"] += 1
            await asyncio.sleep(0.001)
            return False
        state["in_flight"] += 1
        state["max"] = max(state["max"], state["in_flight"])
        try:
            await asyncio.sleep(0.02)
        finally:
            state["in_flight"] -= 1
        state["served"] += 1
        return True

    async def client(n: int) -> None:
        for _ in range(n):
            while True:
                async with lim.slot() as s:
                    ok = await server()
                    if not ok:
                        s.outcome = "overload"
                if ok:
                    break

    await asyncio.wait_for(asyncio.gather(*(client(20) for _ in range(50))), 30)
    hist = lim.history
    trace = [round(v, 1) for _, v in hist[:: max(1, len(hist) // 40)]]
    tail = [v for _, v in hist[len(hist) // 2 :]]
    mean_tail = statistics.mean(tail)
    msg = (
        f"final {lim.limit:.1f}, mean over second half {mean_tail:.2f}, "
        f"rejected {state['rejected']} of {state['served'] + state['rejected']}, trace {trace}"
    )
    print(msg)
    assert state["served"] == 1000
    assert 6 <= lim.limit <= 18, msg
    assert 10 <= mean_tail <= 13.5, msg
    assert state["rejected"] < 100, msg  # one small burst per congestion epoch, not a storm


async def test_slow_start_probes_on_time_while_responses_are_slow() -> None:
    lim = AdaptiveLimiter(initial=4, max_limit=64, probe_s=0.01)

    async def slow_request() -> None:
        async with lim.slot():
            await asyncio.sleep(0.4)

    tasks = [asyncio.create_task(slow_request()) for _ in range(64)]
    await asyncio.sleep(0.15)  # no response yet, no overload: 4 → 8 → 16 → 32 → 64 on time
    assert lim.in_flight == 64, lim.snapshot()
    await asyncio.gather(*tasks)


async def test_no_time_probe_after_an_overload() -> None:
    lim = AdaptiveLimiter(initial=4, max_limit=64, probe_s=0.01)
    async with lim.slot() as s:
        s.outcome = "overload"
    assert lim.limit == 2.0

    async def slow_request() -> None:
        async with lim.slot():
            await asyncio.sleep(0.2)

    tasks = [asyncio.create_task(slow_request()) for _ in range(16)]
    await asyncio.sleep(0.1)
    assert lim.in_flight == 2  # congestion avoidance: growth only from completed requests
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_expect_opens_a_fresh_limiter_to_the_batch_size_at_once() -> None:
    clock = FakeClock()
    lim = AdaptiveLimiter(initial=32, max_limit=256, clock=clock)
    slots = [lim.slot() for _ in range(40)]
    entered = [asyncio.ensure_future(s.__aenter__()) for s in slots]
    await asyncio.sleep(0)
    assert lim.in_flight == 32 and lim.waiting == 8
    lim.expect(200)  # a batch of 200 announces itself: queued requests start at once
    await asyncio.sleep(0)
    assert lim.limit == 200.0 and lim.in_flight == 40 and lim.waiting == 0
    lim.expect(1000)
    assert lim.limit == 256.0  # never past max_limit
    lim.expect(10)
    assert lim.limit == 256.0  # never lowers
    await asyncio.gather(*entered)
    for s in slots:
        await s.__aexit__(None, None, None)


async def test_expect_is_a_no_op_once_the_server_pushed_back() -> None:
    clock = FakeClock()
    lim = AdaptiveLimiter(initial=32, max_limit=256, clock=clock)
    async with lim.slot() as s:
        s.outcome = "overload"
    assert lim.limit == 16.0
    lim.expect(200)
    assert lim.limit == 16.0  # AIMD owns the limit after the first overload
    no_slow_start = AdaptiveLimiter(initial=8, max_limit=256, slow_start=False)
    no_slow_start.expect(200)
    assert no_slow_start.limit == 8.0
