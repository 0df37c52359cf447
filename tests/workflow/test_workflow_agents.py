"""Agents with tools against the sim LLM: the seed's nested-client scenario, nesting, concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from wf_helpers import directive, make_llm

from parallelrag.embeddings import EmbeddingClient
from parallelrag.errors import WorkflowError
from parallelrag.sim import SimServer
from parallelrag.tools import tool
from parallelrag.workflow import Node, Workflow
from parallelrag.workflow import threads as wf_threads


# --------------------------------------------------------------------------- the seed scenario
def _research_workflow(srv: SimServer) -> Workflow:
    emb = EmbeddingClient.openai(
        "text-embedding-3-small", base_url=srv.url, api_key="sk-test", dimensions=8
    )
    llm = make_llm(srv)

    @tool
    def research(topic: str) -> str:
        """Embed the topic and ask a (sync) LLM about it: blocking clients inside a tool."""
        vec = emb.embed(topic)
        reply = llm.complete("ECHO:" + topic.upper())
        return f"{topic}|dim={len(vec)}|{reply}"

    wf = Workflow("seed")
    wf.add(Node.agent("agent", prompt="{input}", llm=llm, tools=[research]))
    return wf


def test_tool_calls_sync_embed_and_complete(fast_sim: SimServer) -> None:
    wf = _research_workflow(fast_sim)
    result = wf.run(input=directive("research", topic="gil"))
    assert result.ok, result.failed
    assert result.outputs["agent"] == "final: gil|dim=8|GIL"
    tool_events = [e for e in result.trace if e.kind == "tool_call"]
    assert [e.data["tool"] for e in tool_events] == ["research"]
    assert tool_events[0].data["arguments"] == {"topic": "gil"}
    assert tool_events[0].data["ok"] is True
    assert result.usage.total_tokens > 0
    assert result.usage.llm_calls == 2


def test_50_workflows_from_8_threads(fast_sim: SimServer) -> None:
    wf = _research_workflow(fast_sim)

    def one(i: int) -> str:
        r = wf.run(input=directive("research", topic=f"topic{i}"))
        assert r.ok, r.failed
        return str(r.outputs["agent"])

    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(one, range(50)))
    assert outputs == [f"final: topic{i}|dim=8|TOPIC{i}" for i in range(50)]
    stats = fast_sim.stats()
    # per workflow: 2 agent LLM calls + 1 complete() in the tool + 1 embedding request
    assert stats["requests"] >= 200


def test_parallel_tool_calls_run_concurrently(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.01)
    llm = make_llm(srv)
    running = 0
    peak = 0
    lock = threading.Lock()

    @tool
    def slow(n: int) -> int:
        """Sleep a little and return n squared."""
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.3)
        with lock:
            running -= 1
        return n * n

    @tool
    async def aslow(n: int) -> int:
        """Async: sleep a little and return n + 100."""
        await asyncio.sleep(0.3)
        return n + 100

    wf = Workflow("fanout")
    wf.add(Node.agent("a", prompt="{input}", llm=llm, tools=[slow, aslow]))
    prompt = " ".join([directive("slow", n=i) for i in range(4)] + [directive("aslow", n=1)])
    t0 = time.perf_counter()
    result = wf.run(input=prompt)
    wall = time.perf_counter() - t0
    assert result.outputs["a"] == "final: 0 | 1 | 4 | 9 | 101"
    assert peak == 4
    assert wall < 0.3 * 5 * 0.67  # well under the serial time (1.5 s)


def test_anthropic_route_tool_loop(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.0)
    llm = make_llm(srv, "anthropic")

    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    wf = Workflow("anthropic")
    wf.add(Node.agent("a", prompt="{input}", llm=llm, tools=[add]))
    result = wf.run(input=directive("add", a=2, b=40) + directive("add", a=1, b=1))
    assert result.ok, result.failed
    assert result.outputs["a"] == "final: 42 | 2"


# --------------------------------------------------------------------------- index & nesting
def test_tool_searches_a_real_embedded_index(fast_sim: SimServer, tmp_path: Path) -> None:
    from parallelrag.pipeline import Index

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "cats.txt").write_text("Cats are small felines that purr and chase mice.\n")
    (docs / "rockets.txt").write_text("Rockets burn liquid oxygen and kerosene to reach orbit.\n")
    (docs / "bread.txt").write_text("Bread is baked from flour, water, yeast and salt.\n")
    index = Index.open(tmp_path / "idx", embedder=EmbeddingClient.local("wordllama"))
    try:
        index.ingest(docs)

        @tool
        def lookup(query: str, k: int = 1) -> list[str]:
            """Search the knowledge base."""
            return [h.text for h in index.search(query, k=k)]

        wf = Workflow("rag")
        wf.add(Node.agent("a", prompt="{input}", llm=make_llm(fast_sim), tools=[lookup]))
        result = wf.run(input=directive("lookup", query="kerosene rockets orbit"))
        assert result.ok, result.failed
        out = str(result.outputs["a"])
        assert out.startswith("final: ")
        assert "kerosene" in out
    finally:
        index.close()


def _inner_workflow(srv: SimServer) -> Workflow:
    @tool
    def shout(text: str) -> str:
        """Upper-case text (sync, in a worker thread)."""
        time.sleep(0.02)
        return text.upper()

    inner = Workflow("inner")
    inner.add(Node.agent("i", prompt="{input}", llm=make_llm(srv), tools=[shout]))
    return inner


def test_nested_workflow_in_sync_and_async_tools(fast_sim: SimServer) -> None:
    inner = _inner_workflow(fast_sim)

    @tool
    def sync_nested(text: str) -> str:
        """Run a nested workflow synchronously inside a sync tool."""
        r = inner.run(input=directive("shout", text=text))
        r.raise_for_errors()
        return str(r.outputs["i"])

    @tool
    async def async_nested(text: str) -> str:
        """Await a nested workflow inside an async tool."""
        r = await inner.arun(input=directive("shout", text=text))
        r.raise_for_errors()
        return str(r.outputs["i"])

    wf = Workflow("outer")
    wf.add(Node.agent("o", prompt="{input}", llm=make_llm(fast_sim),
                      tools=[sync_nested, async_nested]))
    result = wf.run(
        input=directive("sync_nested", text="abc") + directive("async_nested", text="xyz")
    )
    assert result.ok, result.failed
    assert result.outputs["o"] == "final: final: ABC | final: XYZ"


def test_nested_waits_cannot_exhaust_tool_threads(
    fast_sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 2 threads per nesting level, 6 concurrent outer runs whose sync tools block on a
    nested workflow (whose own sync tools need threads) still finish: one pool per level."""
    monkeypatch.setattr(wf_threads, "_THREADS_PER_LEVEL", 2)
    monkeypatch.setattr(wf_threads, "_pools", {})
    inner = _inner_workflow(fast_sim)

    @tool
    def nested(text: str) -> str:
        """Run the inner workflow (blocks this worker thread)."""
        return str(inner.run(input=directive("shout", text=text)).outputs["i"])

    wf = Workflow("outer")
    wf.add(Node.agent("o", prompt="{input}", llm=make_llm(fast_sim), tools=[nested]))

    def one(i: int) -> Any:
        return wf.run(input=directive("nested", text=f"t{i}"), timeout_s=20).outputs.get("o")

    with ThreadPoolExecutor(6) as pool:
        outs = list(pool.map(one, range(6)))
    assert outs == [f"final: final: T{i}" for i in range(6)]
    stats = wf_threads.pool_stats()
    assert set(stats) == {0, 1}
    assert all(s["threads"] <= 2 for s in stats.values())


def test_sync_run_inside_async_tool_is_a_tool_error_not_a_crash(fast_sim: SimServer) -> None:
    inner = _inner_workflow(fast_sim)

    @tool
    async def wrong(text: str) -> str:
        """Calls the blocking API from the runtime loop: must be refused, not deadlock."""
        return str(inner.run(input=text).outputs)

    wf = Workflow("w")
    wf.add(Node.agent("o", prompt="{input}", llm=make_llm(fast_sim), tools=[wrong]))
    result = wf.run(input=directive("wrong", text="x"), timeout_s=10)
    assert result.ok
    assert "RuntimeUsageError" in str(result.outputs["o"])
    assert "arun" in str(result.outputs["o"])


# --------------------------------------------------------------------------- parallel branches
def _eight_agents(srv: SimServer) -> Workflow:
    llm = make_llm(srv)
    wf = Workflow("eight")
    for i in range(8):
        wf.add(Node.agent(f"a{i}", prompt=f"ECHO:{i} {{input}}", llm=llm))
    return wf


def test_eight_independent_agents_run_in_parallel(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.2)
    wf = _eight_agents(srv)
    t0 = time.perf_counter()
    result = wf.run(input="go")
    wall = time.perf_counter() - t0
    assert result.ok, result.failed
    assert result.outputs == {f"a{i}": f"{i} go" for i in range(8)}
    assert srv.stats()["max_in_flight"] == 8
    assert wall < 0.2 * 4


def test_max_concurrency_is_respected(make_sim: Callable[..., SimServer]) -> None:
    srv = make_sim(latency=0.1)
    wf = _eight_agents(srv)
    result = wf.run(input="go", max_concurrency=4)
    assert result.ok
    assert srv.stats()["max_in_flight"] == 4
    srv.reset_stats()
    result = wf.run(input="go", max_concurrency_by_kind={"agent": 2})
    assert result.ok
    assert srv.stats()["max_in_flight"] == 2


# --------------------------------------------------------------------------- tool failures
def test_tool_error_goes_back_to_the_model(fast_sim: SimServer) -> None:
    @tool
    def broken(x: int) -> int:
        """Always fails."""
        raise ValueError(f"bad x={x}")

    wf = Workflow("w")
    wf.add(Node.agent("a", prompt="{input}", llm=make_llm(fast_sim), tools=[broken]))
    result = wf.run(input=directive("broken", x=3))
    assert result.ok
    assert result.outputs["a"] == "final: Error: ValueError: bad x=3"
    ev = next(e for e in result.trace if e.kind == "tool_call")
    assert ev.data["ok"] is False


def test_tool_error_raise_fails_node_and_dependants(fast_sim: SimServer) -> None:
    @tool
    def broken(x: int) -> int:
        """Always fails."""
        raise ValueError("kaput")

    llm = make_llm(fast_sim)
    wf = Workflow("w")
    a = wf.add(Node.agent("a", prompt="{input}", llm=llm, tools=[broken], tool_errors="raise"))
    b = wf.add(Node.agent("b", prompt="after {a}", llm=llm))
    wf.add(Node.agent("c", prompt="ECHO:independent", llm=llm))
    wf.connect(a, b)
    result = wf.run(input=directive("broken", x=1))
    assert set(result.failed) == {"a", "b"}
    err_a = result.failed["a"]
    assert isinstance(err_a, WorkflowError) and err_a.node == "a"
    assert "kaput" in str(err_a) and isinstance(err_a.__cause__, ValueError)
    err_b = result.failed["b"]
    assert isinstance(err_b, WorkflowError) and err_b.node == "b"
    assert "'a'" in str(err_b)
    assert result.outputs == {"c": "independent"}
    with pytest.raises(WorkflowError):
        result.raise_for_errors()


def test_bad_tool_arguments_are_reported(fast_sim: SimServer) -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    wf = Workflow("w")
    wf.add(Node.agent("a", prompt="{input}", llm=make_llm(fast_sim), tools=[add]))
    result = wf.run(input=directive("add", a="not a number", b=1))
    out = str(result.outputs["a"])
    assert out.startswith("final: Error: ToolArgumentError")


def test_tool_timeout(fast_sim: SimServer) -> None:
    cancelled = threading.Event()

    @tool
    def sleepy(s: float) -> str:
        """Sleeps (sync)."""
        time.sleep(s)
        return "woke"

    @tool
    async def asleepy(s: float) -> str:
        """Sleeps (async)."""
        try:
            await asyncio.sleep(s)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "woke"

    wf = Workflow("w")
    wf.add(Node.agent("a", prompt="{input}", llm=make_llm(fast_sim),
                      tools=[sleepy, asleepy], tool_timeout_s=0.2))
    t0 = time.perf_counter()
    result = wf.run(
        input=directive("sleepy", s=1.5) + directive("asleepy", s=5) + directive("sleepy", s=0)
    )
    wall = time.perf_counter() - t0
    assert result.ok
    out = str(result.outputs["a"])
    parts = out.removeprefix("final: ").split(" | ")
    assert parts[0] == "Error: TimeoutError: tool 'sleepy' timed out after 0.2 s"
    assert parts[1] == "Error: TimeoutError: tool 'asleepy' timed out after 0.2 s"
    assert parts[2] == "woke"
    assert cancelled.is_set()
    assert wall < 1.2  # did not wait for the 1.5 s sync tool
    timed = [e.data["timed_out"] for e in result.trace if e.kind == "tool_call"]
    assert sorted(timed) == [False, True, True]


def test_max_iterations(fast_sim: SimServer) -> None:
    @tool
    def noop() -> str:
        """Nothing."""
        return "ok"

    llm = make_llm(fast_sim)
    wf = Workflow("w")
    wf.add(Node.agent("a", prompt="{input}", llm=llm, tools=[noop], max_iterations=1))
    result = wf.run(input=directive("noop"))
    err = result.failed["a"]
    assert isinstance(err, WorkflowError) and "max_iterations=1" in str(err)

    wf2 = Workflow("w2")
    wf2.add(Node.agent("a", prompt="{input}", llm=llm, tools=[noop], max_iterations=1,
                       on_max_iterations="last"))
    result = wf2.run(input=directive("noop"))
    assert result.ok and result.outputs["a"] == ""
