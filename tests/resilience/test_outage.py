"""Outages over real sockets: a batch with ``outage_wait_s`` waits a stopped sim out and
finishes once it is back on the same port; without it, calls fail fast. A half-open probe
cancelled while queued gives its slot back."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import aiohttp
import pytest
from servers import SimProcess, free_port, post_embedding

from parallelrag.errors import CircuitOpenError, ProviderConnectionError, ProviderError
from parallelrag.resilience import Resilience, ResilienceConfig, RetryPolicy


@pytest.fixture
def sim_proc() -> Iterator[SimProcess]:
    proc = SimProcess(None, "--latency", "0.05").start()
    yield proc
    proc.stop()


def _config(**kw: object) -> ResilienceConfig:
    base: dict[str, object] = dict(
        adaptive=False, max_concurrency=4, breaker_threshold=5, breaker_reset_s=0.5,
        retry=RetryPolicy(base_delay_s=0.05, max_delay_s=0.3),
    )
    base.update(kw)
    return ResilienceConfig(**base)  # type: ignore[arg-type]


async def _batch(
    r: Resilience, url: str, n: int, outage_wait_s: float | None
) -> list[object]:
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> object:
            return await r.execute(
                lambda: post_embedding(session, url, f"doc {i}"), outage_wait_s=outage_wait_s
            )

        return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)


def test_default_outage_deadline_is_configurable() -> None:
    assert ResilienceConfig().outage_deadline_s == 300.0
    assert ResilienceConfig(outage_deadline_s=12.5).outage_deadline_s == 12.5


def test_a_batch_waits_out_a_stopped_sim_and_finishes(sim_proc: SimProcess) -> None:
    r = Resilience("outage", _config())

    async def main() -> list[object]:
        batch = asyncio.create_task(_batch(r, sim_proc.url, 60, outage_wait_s=30.0))
        await asyncio.sleep(0.3)  # some calls done, many queued
        sim_proc.stop()
        t_down = time.monotonic()
        await asyncio.sleep(3.0)  # the outage: every connection refused
        sim_proc.start()  # same port
        outs = await batch
        assert time.monotonic() - t_down >= 3.0
        return outs

    outs = asyncio.run(main())
    failed = [o for o in outs if isinstance(o, BaseException)]
    assert not failed, failed[:3]
    assert outs == [200] * 60
    assert r.breaker.opens >= 1  # the outage opened the circuit; the probe closed it again
    assert r.breaker.state == "closed"
    assert r.stats.outage_wait_s > 0
    assert r.stats.successes == 60 and r.stats.failures == 0


def test_without_outage_wait_calls_fail_fast(sim_proc: SimProcess) -> None:
    r = Resilience("outage-fast", _config())

    async def main() -> tuple[list[object], float]:
        batch = asyncio.create_task(_batch(r, sim_proc.url, 60, outage_wait_s=None))
        await asyncio.sleep(0.3)
        sim_proc.stop()
        t0 = time.monotonic()
        outs = await batch
        return outs, time.monotonic() - t0

    outs, took = asyncio.run(main())
    failed = [o for o in outs if isinstance(o, BaseException)]
    assert failed and all(isinstance(o, ProviderError) for o in failed), failed[:3]
    assert any(isinstance(o, CircuitOpenError) for o in failed)
    assert took < 10.0  # nobody waited for a server that was not coming back


def test_outage_wait_is_bounded(sim_proc: SimProcess) -> None:
    """A server that stays down: the calls fail once outage_wait_s has passed, naming it."""
    r = Resilience("outage-bounded", _config())
    sim_proc.stop()

    async def main() -> tuple[list[object], float]:
        t0 = time.monotonic()
        outs = await _batch(r, sim_proc.url, 20, outage_wait_s=1.5)
        return outs, time.monotonic() - t0

    outs, took = asyncio.run(main())
    assert all(isinstance(o, ProviderError) for o in outs), outs[:3]
    assert any("outage_wait_s=1.5" in str(o) for o in outs), [str(o) for o in outs[:3]]
    assert 1.5 <= took < 15.0


def test_a_cancelled_half_open_probe_lets_the_next_call_probe(sim_proc: SimProcess) -> None:
    """The probe queues for the rate limiter and is cancelled there: the next call must probe
    (and succeed), not meet CircuitOpenError until the probe is presumed lost."""
    r = Resilience("probe", ResilienceConfig(
        rpm=60, breaker_threshold=1, breaker_reset_s=0.3, retry=RetryPolicy(max_attempts=1),
    ))
    dead = f"http://127.0.0.1:{free_port()}/v1"

    async def main() -> object:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(ProviderConnectionError):  # takes the only token; opens
                await r.execute(lambda: post_embedding(session, dead))
            assert r.breaker.state == "open"
            await asyncio.sleep(0.35)
            assert r.breaker.state == "half_open"
            probe = asyncio.create_task(r.execute(lambda: post_embedding(session, sim_proc.url)))
            await asyncio.sleep(0.05)  # the probe now waits for the rate limiter
            assert not probe.done() and r.stats.requests == 1
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
            return await r.execute(lambda: post_embedding(session, sim_proc.url))

    assert asyncio.run(main()) == 200
    assert r.breaker.state == "closed"
