"""GIL release (ticker), concurrency the server actually saw, and a 500-prompt batch under RPM
limits with faults, in order (issue 4)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from parallelrag.llm import LlmClient
from parallelrag.sim import SimServer, sim_reply

KEY = "sk-test-0123456789"


@pytest.mark.parametrize("flavor", ["openai", "anthropic"])
def test_ticker_runs_while_calls_wait(
    make_sim: Callable[..., SimServer],
    ticker_ratio: Callable[..., tuple[float, Any]],
    flavor: str,
) -> None:
    srv = make_sim(latency=0.2)
    if flavor == "openai":
        llm = LlmClient.openai("gil", base_url=srv.url, api_key=KEY)
    else:
        llm = LlmClient.anthropic("gil", api_key=KEY, base_url=srv.base)
    llm.complete("warm up")  # session, runtime, limiter created

    def calls(fn: Callable[[int], object]) -> Callable[[], list[object]]:
        return lambda: [fn(i) for i in range(3)]

    def measure(fn: Callable[[], list[object]]) -> tuple[float, list[object]]:
        # the machine is shared: a noisy neighbour can depress one window, so take the best of
        # up to 3 (a call that held the GIL would keep the ticker near 0 in every window)
        best, out = ticker_ratio(fn)
        for _ in range(2):
            if best >= 0.5:
                break
            r, out = ticker_ratio(fn)
            best = max(best, r)
        return best, out

    ratios = {}
    ratios["complete"], out = measure(calls(lambda i: llm.complete(f"c{i}")))
    assert out == [sim_reply("gil", f"c{i}") for i in range(3)]
    ratios["complete_full"], _ = measure(calls(lambda i: llm.complete_full(f"f{i}")))
    ratios["stream"], out2 = measure(calls(lambda i: "".join(llm.stream(f"s{i}"))))
    assert out2 == [sim_reply("gil", f"s{i}") for i in range(3)]
    print(f"{flavor}: ticker rate during call / idle rate: "
          + ", ".join(f"{k}={v:.2f}" for k, v in ratios.items()))
    for name, r in ratios.items():
        assert r >= 0.5, (name, r)


def test_32_threads_reach_24_in_flight(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.2)
    llm = LlmClient.openai("threads32", base_url=srv.url, api_key=KEY)
    errors: list[BaseException] = []
    done = [0]
    lock = threading.Lock()

    def worker(w: int) -> None:
        for i in range(12):
            try:
                assert llm.complete(f"{w}-{i}") == sim_reply("threads32", f"{w}-{i}")
                with lock:
                    done[0] += 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(w,)) for w in range(32)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    st = srv.stats()
    print(f"32 threads x 12 calls: {time.perf_counter() - t0:.2f} s, "
          f"server max_in_flight={st['max_in_flight']}")
    assert not errors, errors[:3]
    assert done[0] == 32 * 12
    assert st["max_in_flight"] >= 24


def test_complete_many_500_under_rpm_with_faults_in_order(
    make_sim: Callable[..., SimServer],
) -> None:
    # 6000 RPM = 100 requests/s on both sides; 2 % of requests fail with 500 and are retried
    srv = make_sim(latency=0.05, rpm=6000, rate_window_s=1.0, fault_500=0.02, seed=7)
    llm = LlmClient.openai("many500", base_url=srv.url, api_key=KEY, rpm=6000)
    prompts = [f"question number {i}" for i in range(500)]
    t0 = time.perf_counter()
    out = llm.complete_many(prompts)
    wall = time.perf_counter() - t0
    st = srv.stats()
    print(f"500 prompts: {wall:.2f} s, faults={st['faults']}, 429s={st['rate_limited']}, "
          f"requests={st['requests']}")
    assert out == [sim_reply("many500", p) for p in prompts]
    assert st["faults"]["500"] >= 1  # faults really happened and were retried
    assert st["requests"] >= 500 + st["faults"]["500"]
    assert wall < 20
