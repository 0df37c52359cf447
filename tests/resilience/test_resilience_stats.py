"""ProviderStats: counters, latency percentiles, copy/diff, merge."""

from __future__ import annotations

from parallelrag.resilience import AdaptiveLimiter, ProviderStats, diff_counters


def test_percentiles_and_window() -> None:
    st = ProviderStats(window=100)
    assert st.snapshot()["latency_p50"] is None
    for i in range(1, 101):
        st.observe_latency(i / 100)
    snap = st.snapshot()
    assert snap["latency_p50"] == 0.51 and snap["latency_p90"] == 0.91
    assert snap["latency_p99"] == 1.0
    for _ in range(100):  # the window keeps only the most recent samples
        st.observe_latency(5.0)
    snap = st.snapshot()
    assert snap["latency_p50"] == 5.0 and snap["latency_samples"] == 200


def test_copy_diff_merge_and_limit() -> None:
    lim = AdaptiveLimiter(initial=7)
    st = ProviderStats(limiter=lim)
    before = st.copy_counters()
    st.requests += 3
    st.retries += 1
    st.tokens += 40
    delta = diff_counters(before, st.copy_counters())
    assert delta["requests"] == 3 and delta["retries"] == 1 and delta["tokens"] == 40
    assert delta["successes"] == 0
    assert st.snapshot()["concurrency_limit"] == 7.0
    other = ProviderStats()
    other.requests = 5
    other.max_in_flight = 9
    other.observe_latency(0.1)
    st.merge(other)
    assert st.requests == 8 and st.max_in_flight == 9 and st.snapshot()["latency_samples"] == 1
