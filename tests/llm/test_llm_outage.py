"""``complete_many`` waits out a provider outage; a single ``complete`` fails fast (issue 13).

The sim runs in its own process, is stopped for a few seconds while ``complete_many`` runs and
restarted on the same port.
"""

from __future__ import annotations

import threading
import time

import pytest

from parallelrag import LlmClient
from parallelrag.errors import ProviderError
from parallelrag.sim import SimConfig, SimProcess, sim_reply

OUTAGE_S = 6.0
pytestmark = pytest.mark.slow


def test_complete_many_waits_out_an_outage_single_calls_fail_fast() -> None:
    sim = SimProcess(SimConfig(latency=0.05)).start()
    try:
        llm = LlmClient.openai("outage-llm", base_url=sim.url, api_key="sk-outage-test-1234",
                               max_concurrency=2, adaptive=False, breaker_threshold=3,
                               breaker_reset_s=1.0, outage_deadline_s=60)
        prompts = [f"question {i}" for i in range(60)]
        single: dict[str, object] = {}

        def outage() -> None:
            while sim.stats()["requests"] < 8:
                time.sleep(0.01)
            port = sim.port
            sim.stop()
            time.sleep(2.0)  # the batch has hit the closed port and opened the circuit
            t0 = time.monotonic()
            try:
                single["result"] = llm.complete("a single interactive call")
            except ProviderError as exc:
                single["error"] = exc
            single["elapsed"] = time.monotonic() - t0
            time.sleep(OUTAGE_S - 2.0)
            fresh = SimProcess(sim.config, port=port or 0)
            for _ in range(50):
                try:
                    fresh.start()
                    break
                except Exception:
                    time.sleep(0.2)
            sim.__dict__.update(fresh.__dict__)

        t = threading.Thread(target=outage, daemon=True)
        t.start()
        t0 = time.monotonic()
        replies = llm.complete_many(prompts)
        elapsed = time.monotonic() - t0
        t.join(60)
        print(f"complete_many took {elapsed:.1f} s; single call: {single}")
        assert replies == [sim_reply("outage-llm", p) for p in prompts]
        assert elapsed >= OUTAGE_S - 1
        assert "error" in single, single
        assert float(single["elapsed"]) < 2.0  # type: ignore[arg-type]
    finally:
        sim.stop()
