"""Streaming over real SSE from the sim, both wire formats: deltas, usage, truncation, early
close, retry before the first delta (issue 4)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from parallelrag.errors import ResponseError
from parallelrag.llm import LlmClient, Usage
from parallelrag.sim import SimServer, count_tokens, sim_reply

KEY = "sk-test-0123456789"
FLAVORS = ["openai", "anthropic"]


def client(srv: SimServer, flavor: str, model: str = "m", **kw: object) -> LlmClient:
    if flavor == "openai":
        return LlmClient.openai(model, base_url=srv.url, api_key=KEY, **kw)  # type: ignore[arg-type]
    return LlmClient.anthropic(model, api_key=KEY, base_url=srv.base, **kw)  # type: ignore[arg-type]


def wait_for_disconnect(srv: SimServer, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while srv.stats()["client_disconnects"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_deltas_concatenate_to_the_full_text(sim: SimServer, flavor: str) -> None:
    sim.update(reply_words=30)
    llm = client(sim, flavor, "stream")
    full = llm.complete_full("tell me a story")
    s = llm.stream("tell me a story")
    deltas = list(s)
    assert len(deltas) > 5  # really incremental
    assert "".join(deltas) == full.text == sim_reply("stream", "tell me a story", 30)
    assert s.finish_reason == "stop"
    assert s.usage == full.usage == Usage(
        count_tokens("tell me a story"), count_tokens(full.text),
        count_tokens("tell me a story") + count_tokens(full.text),
    )
    assert llm.last_usage == s.usage
    assert s.text == full.text


@pytest.mark.parametrize("flavor", FLAVORS)
def test_stream_max_tokens_finish_length(sim: SimServer, flavor: str) -> None:
    llm = client(sim, flavor, "stream-len")
    s = llm.stream("ECHO:one two three four five", max_tokens=2)
    assert "".join(s) == "one two "
    assert s.finish_reason == "length"


@pytest.mark.parametrize("flavor", FLAVORS)
def test_truncated_stream_raises(make_sim: object, flavor: str) -> None:
    srv = make_sim(latency=0.0, fault_truncate=1.0, reply_words=30)  # type: ignore[operator]
    llm = client(srv, flavor, "trunc", max_retries=1)
    got: list[str] = []
    with pytest.raises(ResponseError) as info:
        for d in llm.stream("cut me off"):
            got.append(d)
    assert got, "some text arrived before the cut"
    assert "".join(got) != sim_reply("trunc", "cut me off", 30)
    assert "cut off" in str(info.value) or "truncated" in str(info.value)
    # nothing retried once text was delivered
    assert srv.stats()["requests"] == 1


@pytest.mark.parametrize("flavor", FLAVORS)
def test_breaking_out_closes_the_connection(make_sim: object, flavor: str) -> None:
    srv = make_sim(latency=0.0, stream_token_s=0.05, reply_words=60)  # type: ignore[operator]
    llm = client(srv, flavor, "early")
    t0 = time.perf_counter()
    for i, _ in enumerate(llm.stream("a long answer please")):
        if i == 2:
            break
    wait_for_disconnect(srv)
    elapsed = time.perf_counter() - t0
    assert srv.stats()["client_disconnects"] == 1
    assert elapsed < 1.5  # the full stream would take 60 × 50 ms = 3 s
    # the slot was released: the next call goes through
    assert llm.complete("after") == sim_reply("early", "after", 60)


def test_context_manager_and_close(make_sim: object) -> None:
    srv = make_sim(latency=0.0, stream_token_s=0.05, reply_words=60)  # type: ignore[operator]
    llm = client(srv, "openai", "close")
    with llm.stream("stop me") as s:
        first = next(s)
        assert first
    wait_for_disconnect(srv)
    assert srv.stats()["client_disconnects"] == 1
    assert list(s) == []  # closed: iteration ends


async def test_astream_aclose_closes_the_connection(make_sim: object) -> None:
    srv = make_sim(latency=0.0, stream_token_s=0.05, reply_words=60)  # type: ignore[operator]
    llm = client(srv, "anthropic", "aclose")
    async with llm.astream("stop me too") as s:
        async for _ in s:
            break
    await asyncio.to_thread(wait_for_disconnect, srv)
    assert srv.stats()["client_disconnects"] == 1


@pytest.mark.parametrize("flavor", FLAVORS)
def test_stream_is_retried_before_anything_was_yielded(make_sim: object, flavor: str) -> None:
    srv = make_sim(latency=0.0, fault_503=1.0)  # type: ignore[operator]
    llm = client(srv, flavor, "retry-stream")
    threading.Timer(0.3, lambda: srv.update(fault_503=0.0)).start()
    assert "".join(llm.stream("eventually")) == sim_reply("retry-stream", "eventually")
    assert srv.stats()["faults"]["503"] >= 1
