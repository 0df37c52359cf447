"""Resilience over real HTTP against the sim: Retry-After, no retry on 400, 503 recovery,
rate limits, adaptive concurrency, circuit breaker (issue 2)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from parallelrag import EmbeddingClient
from parallelrag.errors import BadRequestError, BatchError, CircuitOpenError, ServerError
from parallelrag.sim import SimServer, sim_embedding

KEY = "sk-test-0123456789"


def client(srv: SimServer, model: str = "m", **kw: object) -> EmbeddingClient:
    kw.setdefault("dimensions", 8)
    return EmbeddingClient.openai(model, base_url=srv.url, api_key=KEY, **kw)  # type: ignore[arg-type]


def test_retry_honours_retry_after(make_sim: Callable[..., SimServer]) -> None:
    # bucket of one request refilled every 2 s: the second of two concurrent calls gets a 429
    # whose Retry-After is ~2 s; its retry must not come sooner. The 300 ms latency keeps the
    # first request open while the second goes out: with an instant answer the client could
    # read "remaining: 0" from it first and (rightly) hold the second back, so no 429 at all.
    srv = make_sim(latency=0.3, rpm=30, rate_window_s=2.0)
    emb = client(srv, "retry-after")
    out: list[object] = []
    ts = [threading.Thread(target=lambda i=i: out.append(emb.embed(f"t{i}"))) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(out) == 2
    log = sorted(srv.log, key=lambda e: e["t"])
    first_429 = next(e for e in log if e["status"] == 429)
    later = [e for e in log if e["t"] > first_429["t"]]
    assert later, log
    gap = min(e["t"] for e in later) - first_429["t"]
    print(f"429 at +0, next request after {gap:.2f} s (Retry-After ≈ 2 s)")
    assert gap >= 1.8
    assert later[-1]["status"] == 200


def test_400_is_not_retried(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.0)
    emb = client(srv, "no-retry", dimensions=0)  # the sim answers 400: dimensions must be >= 1
    with pytest.raises(BatchError) as info:
        emb.embed_many(["a"])
    err = info.value.failures[0]
    assert isinstance(err, BadRequestError)
    assert err.status_code == 400
    assert srv.stats()["requests"] == 1


def test_503_then_success_returns_the_success(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.0, fault_503=1.0)
    emb = client(srv, "flaky")
    threading.Timer(0.4, lambda: srv.update(fault_503=0.0)).start()
    vec = emb.embed("hello")
    assert srv.stats()["faults"]["503"] >= 1
    expected = sim_embedding("flaky", "hello", 8)
    assert abs(float(vec @ expected) - 1.0) < 1e-5


def test_rate_limits_2000_requests_16_threads(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.0, rpm=24_000, tpm=600_000, rate_window_s=1.0)
    emb = client(srv, "rl")
    text = "x" * 100  # 25 tokens
    failures: list[BaseException] = []
    done = [0]
    lock = threading.Lock()

    def worker(w: int) -> None:
        for i in range(125):
            try:
                v = emb.embed(f"{text} {w} {i}")
                assert v.shape == (8,)
                with lock:
                    done[0] += 1
            except BaseException as exc:
                failures.append(exc)

    ts = [threading.Thread(target=worker, args=(w,)) for w in range(16)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - t0
    stats = srv.stats()
    print(f"2000 requests in {elapsed:.2f} s, 429s: {stats['rate_limited']}")
    assert not failures
    assert done[0] == 2000
    assert stats["rate_limited"] <= 100  # few: the client paces itself from the headers


def test_oversize_request_completes(make_sim: Callable[..., SimServer]) -> None:
    # token bucket capacity 100 tokens; one request of ~2000 tokens must still get through
    srv = make_sim(latency=0.0, tpm=6000, rate_window_s=1.0)
    emb = client(srv, "big", tpm=6000)
    emb.embed("warm up")
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(emb.embed("y" * 8000)), daemon=True)
    t.start()
    t.join(timeout=60)
    assert result, "oversize request never completed"


def test_adaptive_limiter_settles_near_server_cap(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.05, max_in_flight=12, overload_status=429)
    emb = client(srv, "aimd", batch_size=1, initial_concurrency=4, max_concurrency=64)
    texts = [f"t{i}" for i in range(1500)]
    rows = emb.embed_many(texts)
    assert rows.shape == (1500, 8)
    lim = emb._backend.api.resilience.limiter  # type: ignore[attr-defined]
    history = [round(v, 1) for _, v in lim.history]
    print("limit trace:", history[:: max(1, len(history) // 40)])
    tail = [v for _, v in lim.history[len(lim.history) // 2 :]]
    mean_tail = sum(tail) / len(tail)
    print(f"final limit {lim.limit:.1f}, mean over second half {mean_tail:.1f}, "
          f"server max in flight {srv.stats()['max_in_flight']}")
    assert 6 <= mean_tail <= 20
    assert srv.stats()["max_in_flight"] <= 12


def test_circuit_breaker_opens_and_recovers(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.0, fault_500=1.0)
    emb = client(srv, "breaker", breaker_threshold=5, breaker_reset_s=0.5, max_retries=1,
                 base_delay_s=0.01)
    seen_open = None
    for _ in range(10):
        try:
            emb.embed("x")
        except CircuitOpenError as exc:
            seen_open = exc
            break
        except ServerError:
            pass
    assert seen_open is not None
    assert "circuit" in str(seen_open).lower() and "open" in str(seen_open).lower()
    sent = srv.stats()["requests"]
    with pytest.raises(CircuitOpenError):
        emb.embed("still open")
    assert srv.stats()["requests"] == sent  # nothing sent while open
    srv.update(fault_500=0.0)
    time.sleep(0.6)
    assert emb.embed("recovered").shape == (8,)


def test_a_burst_of_503s_from_one_wave_does_not_open_the_breaker(
    make_sim: Callable[..., SimServer],
) -> None:
    """complete_many opens a fresh limiter to the batch size at once; a server that takes only
    12 answers the rest of the wave with 503 at the same moment. That is one overload signal
    (one congestion epoch), so the breaker (threshold 20) stays closed and nothing fails."""
    from parallelrag import LlmClient
    from parallelrag.sim import sim_reply

    srv = make_sim(latency=0.3, max_in_flight=12, overload_status=503)
    llm = LlmClient.openai("wave", base_url=srv.url, api_key="sk-test")
    prompts = [f"q{i}" for i in range(120)]
    out = llm.complete_many(prompts)
    assert out == [sim_reply("wave", p) for p in prompts]
    res = llm._api.resilience  # type: ignore[attr-defined]
    assert res.limiter.max_in_flight == 120  # the wave really went out at once
    assert res.stats.overloads >= 100 and res.breaker.opens == 0
    assert srv.stats()["max_in_flight"] <= 12


def test_a_server_that_only_answers_503_still_opens_the_breaker(
    make_sim: Callable[..., SimServer],
) -> None:
    srv = make_sim(latency=0.0, fault_503=1.0)
    emb = client(srv, "down", breaker_threshold=5, max_retries=50, base_delay_s=0.001,
                 max_delay_s=0.002)
    with pytest.raises(CircuitOpenError):
        emb.embed("x")
    assert srv.stats()["requests"] <= 10
