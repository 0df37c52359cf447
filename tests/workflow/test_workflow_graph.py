"""Graph behaviour: validation, functions, conditions, timeouts, cancellation, events, loops."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from wf_helpers import make_llm

from parallelrag.errors import RuntimeUsageError, WorkflowError
from parallelrag.runtime import get_runtime
from parallelrag.sim import SimServer
from parallelrag.workflow import EVENT_KINDS, Node, Workflow, WorkflowEvent


# --------------------------------------------------------------------------- validation
def test_cycle_detection_names_a_node() -> None:
    wf = Workflow("cyc")
    a = wf.add(Node.function("a", lambda d: 1))
    b = wf.add(Node.function("b", lambda d: 2))
    c = wf.add(Node.function("c", lambda d: 3))
    wf.add(Node.function("tail", lambda d: 4))
    wf.chain(a, b, c, a)
    wf.connect(c, "tail")
    with pytest.raises(WorkflowError, match="cycle") as info:
        wf.validate()
    assert info.value.node in {"a", "b", "c"}
    assert "a -> b -> c -> a" in str(info.value) or "b -> c -> a -> b" in str(info.value) \
        or "c -> a -> b -> c" in str(info.value)
    with pytest.raises(WorkflowError, match="cycle"):
        wf.run(input="x")
    with pytest.raises(WorkflowError, match="itself"):
        wf.connect(a, a)


def test_bad_prompt_reference_names_the_node(llm: Any) -> None:
    wf = Workflow("w")
    p = wf.add(Node.agent("planner", prompt="{input}", llm=llm))
    w = wf.add(Node.agent("writer", prompt="Use: {planer}", llm=llm))
    wf.connect(p, w)
    with pytest.raises(WorkflowError, match="planer") as info:
        wf.validate()
    assert info.value.node == "writer"

    # a real node that is not upstream is not visible either
    wf2 = Workflow("w2")
    wf2.add(Node.agent("a", prompt="{input}", llm=llm))
    wf2.add(Node.agent("b", prompt="sibling says {a}", llm=llm))
    with pytest.raises(WorkflowError, match="not upstream") as info:
        wf2.validate()
    assert info.value.node == "b"

    # ancestors (transitively) are visible
    wf3 = Workflow("w3")
    wf3.chain(
        wf3.add(Node.agent("a", prompt="{input}", llm=llm)),
        wf3.add(Node.agent("b", prompt="{a}", llm=llm)),
        wf3.add(Node.agent("c", prompt="{a} {b} {input}", llm=llm)),
    )
    wf3.validate()


def test_graph_building_errors(llm: Any) -> None:
    wf = Workflow("w")
    wf.add(Node.function("a", lambda d: 1))
    with pytest.raises(WorkflowError, match="already exists"):
        wf.add(Node.function("a", lambda d: 1))
    with pytest.raises(WorkflowError, match="unknown node"):
        wf.connect("a", "nope")
    with pytest.raises(WorkflowError, match="reserved"):
        Node.function("input", lambda d: 1)
    with pytest.raises(WorkflowError, match="positional"):
        Node.agent("x", prompt="{}", llm=llm)
    with pytest.raises(WorkflowError, match="malformed"):
        Node.agent("x", prompt="{oops", llm=llm)
    with pytest.raises(WorkflowError, match="LlmClient"):
        Node.agent("x", prompt="hi", llm=object())
    with pytest.raises(WorkflowError, match="no nodes"):
        Workflow("empty").validate()
    bad = Workflow("bad")
    bad.add(Node.function("f", lambda x, y: 1))
    with pytest.raises(WorkflowError) as info:
        bad.validate()
    assert info.value.node == "f"
    cond = Workflow("c")
    cond.add(Node.condition("route", lambda d: "x"))
    with pytest.raises(WorkflowError, match="no downstream"):
        cond.validate()


# --------------------------------------------------------------------------- functions
def test_function_nodes_sync_and_async() -> None:
    seen_threads: list[str] = []

    def double(input: int) -> int:
        seen_threads.append(threading.current_thread().name)
        return input * 2

    async def add_one(double: int) -> int:
        await asyncio.sleep(0)
        return double + 1

    def summary(inputs: dict[str, Any]) -> str:
        return f"{inputs['input']}->{inputs['double']}->{inputs['add_one']}"

    def kw(**values: Any) -> list[str]:
        return sorted(values)

    wf = Workflow("fn")
    d = wf.add(Node.function("double", double))
    a = wf.add(Node.function("add_one", add_one))
    s = wf.add(Node.function("summary", summary))
    k = wf.add(Node.function("kw", kw))
    wf.chain(d, a, s)
    wf.connect(a, k)
    result = wf.run(input=5)
    assert result.ok, result.failed
    assert result.outputs == {
        "double": 10, "add_one": 11, "summary": "5->10->11", "kw": ["add_one", "double", "input"]
    }
    assert result.output == ["add_one", "double", "input"] or result.output == "5->10->11"
    # sync user code never runs on the runtime thread
    assert seen_threads and all(name != "parallelrag-runtime" for name in seen_threads)
    assert set(result.timings) == {"double", "add_one", "summary", "kw"}


def test_retries_with_backoff() -> None:
    calls: list[float] = []

    def flaky(input: str) -> str:
        calls.append(time.perf_counter())
        if len(calls) < 3:
            raise ConnectionError("try again")
        return input + "!"

    wf = Workflow("r")
    wf.add(Node.function("f", flaky, retries=2, retry_backoff_s=0.05))
    result = wf.run(input="ok")
    assert result.outputs["f"] == "ok!"
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.045 and calls[2] - calls[1] >= 0.095
    retried = [e for e in result.trace if e.kind == "node_failed"]
    assert [e.data["will_retry"] for e in retried] == [True, True]
    done = next(e for e in result.trace if e.kind == "node_completed")
    assert done.data["attempts"] == 3

    calls.clear()
    wf2 = Workflow("r2")
    wf2.add(Node.function("f", flaky, retries=1, retry_backoff_s=0.01))
    result = wf2.run(input="ok")
    assert isinstance(result.failed["f"], ConnectionError)


# --------------------------------------------------------------------------- conditions
def test_condition_routing_and_skips(llm: Any) -> None:
    def route(input: str) -> str:
        return "short" if len(input) < 5 else "long"

    wf = Workflow("route")
    r = wf.add(Node.condition("route", route))
    short = wf.add(Node.agent("short", prompt="ECHO:short {input}", llm=llm))
    long_ = wf.add(Node.agent("long", prompt="ECHO:long {input}", llm=llm))
    after_long = wf.add(Node.function("after_long", lambda long: long + "!"))
    merge = wf.add(Node.function("merge", lambda d: (d["short"], d["after_long"])))
    wf.connect(r, short)
    wf.connect(r, long_)
    wf.connect(long_, after_long)
    wf.connect(short, merge)
    wf.connect(after_long, merge)

    result = wf.run(input="hi")
    assert result.ok, result.failed
    assert result.outputs["route"] == "short"
    assert result.outputs["short"] == "short hi"
    assert result.skipped == ["long", "after_long"]
    assert result.outputs["merge"] == ("short hi", None)
    skipped_events = [e.node for e in result.trace if e.kind == "node_skipped"]
    assert skipped_events == ["long", "after_long"]

    result = wf.run(input="a long input")
    assert result.skipped == ["short"]
    assert result.outputs["merge"] == (None, "long a long input!")

    bad = Workflow("bad")
    c = bad.add(Node.condition("c", lambda d: "nowhere"))
    bad.connect(c, bad.add(Node.function("x", lambda d: 1)))
    result = bad.run(input=1)
    assert "nowhere" in str(result.failed["c"])
    assert "x" in result.failed  # its dependant fails, naming c
    assert "'c'" in str(result.failed["x"])


# --------------------------------------------------------------------------- timeouts
def test_node_timeout_with_retry() -> None:
    async def slow(input: Any) -> str:
        await asyncio.sleep(5)
        return "never"

    wf = Workflow("t")
    wf.add(Node.function("slow", slow, timeout_s=0.1, retries=1, retry_backoff_s=0.01))
    wf.add(Node.function("fast", lambda input: "fast"))
    t0 = time.perf_counter()
    result = wf.run(input=1)
    assert time.perf_counter() - t0 < 1.5
    err = result.failed["slow"]
    assert isinstance(err, WorkflowError) and "timed out after 0.1 s" in str(err)
    assert result.outputs == {"fast": "fast"}
    assert len([e for e in result.trace if e.kind == "node_started" and e.node == "slow"]) == 2


def test_workflow_timeout_cancels_slow_sibling_branch(
    make_sim: Callable[..., SimServer],
) -> None:
    fast_srv = make_sim(latency=0.0)
    slow_srv = make_sim(latency=3.0)
    cancelled = threading.Event()
    finished = threading.Event()

    async def slow_fn(input: Any) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finished.set()
        return "too late"

    wf = Workflow("t")
    fast = wf.add(Node.agent("fast", prompt="ECHO:fast", llm=make_llm(fast_srv)))
    wf.add(Node.function("slow_fn", slow_fn))
    wf.add(Node.agent("slow_llm", prompt="ECHO:slow", llm=make_llm(slow_srv)))
    after = wf.add(Node.function("after_fast", lambda fast: fast + "!"))
    wf.connect(fast, after)
    never = wf.add(Node.function("never", lambda d: 1))
    wf.connect("slow_fn", never)

    from parallelrag.providers import tokens

    tokens._cl100k_length()  # loaded now: the 0.5 s budget is the branches', not a cold start's
    t0 = time.perf_counter()
    result = wf.run(input=None, timeout_s=0.5)
    wall = time.perf_counter() - t0
    assert wall < 2.0
    assert result.timed_out
    assert result.outputs == {"fast": "fast", "after_fast": "fast!"}
    assert set(result.failed) == {"slow_fn", "slow_llm", "never"}
    assert "timed out" in str(result.failed["slow_fn"])
    assert "cancelled while running" in str(result.failed["slow_llm"])
    assert "before it started" in str(result.failed["never"])
    assert cancelled.is_set() and not finished.is_set()
    # the slow LLM request was abandoned, not left running: the server sees the client go
    deadline = time.monotonic() + 2.0
    while slow_srv.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert slow_srv.stats()["in_flight"] == 0
    # no task of the run outlives it
    rt = get_runtime()

    async def leftover() -> list[str]:
        return [
            t.get_name() for t in asyncio.all_tasks()
            if t.get_name().startswith(("workflow-node:", "tool:"))
        ]

    assert rt.run_sync(leftover()) == []
    failed = [e for e in result.trace if e.kind == "node_failed"]
    assert all(e.data["cancelled"] for e in failed)
    assert result.trace[-1].kind == "workflow_completed"
    assert result.trace[-1].data["timed_out"] is True


def test_fail_fast_cancels_siblings() -> None:
    cancelled = threading.Event()

    def boom(input: Any) -> None:
        raise ValueError("boom")

    async def slow(input: Any) -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "done"

    wf = Workflow("ff")
    wf.add(Node.function("boom", boom))
    wf.add(Node.function("slow", slow))
    t0 = time.perf_counter()
    result = wf.run(input=1, fail_fast=True)
    assert time.perf_counter() - t0 < 2
    assert isinstance(result.failed["boom"], ValueError)
    assert "fail_fast" in str(result.failed["slow"])
    assert cancelled.is_set()

    cancelled.clear()
    wf2 = Workflow("no-ff")
    wf2.add(Node.function("boom", boom))
    wf2.add(Node.function("ok", lambda input: "ok"))
    result = wf2.run(input=1)
    assert result.outputs == {"ok": "ok"} and list(result.failed) == ["boom"]


# --------------------------------------------------------------------------- loops & threads
def _two_step(llm: Any) -> Workflow:
    wf = Workflow("two")
    a = wf.add(Node.agent("a", prompt="ECHO:{input}", llm=llm))
    b = wf.add(Node.agent("b", prompt="ECHO:[{a}]", llm=llm))
    wf.connect(a, b)
    return wf


def test_run_inside_a_running_event_loop(llm: Any) -> None:
    wf = _two_step(llm)

    async def main() -> tuple[Any, Any]:
        sync_result = wf.run(input="sync-in-loop")          # blocking call inside a loop
        async_result = await wf.arun(input="await-foreign")  # this loop is not the runtime's
        return sync_result, async_result

    sync_result, async_result = asyncio.run(main())
    assert sync_result.outputs["b"] == "[sync-in-loop]"
    assert async_result.outputs["b"] == "[await-foreign]"


async def test_arun_from_pytest_asyncio_loop(llm: Any) -> None:
    wf = _two_step(llm)
    results = await asyncio.gather(*(wf.arun(input=f"x{i}") for i in range(5)))
    assert [r.outputs["b"] for r in results] == [f"[x{i}]" for i in range(5)]


def test_run_on_runtime_thread_is_refused(llm: Any) -> None:
    wf = _two_step(llm)

    async def on_runtime() -> None:
        wf.run(input="x")

    with pytest.raises(RuntimeUsageError, match="arun"):
        get_runtime().run_sync(on_runtime())


# --------------------------------------------------------------------------- events
def _check_order(events: list[WorkflowEvent], wf: Workflow) -> None:
    kinds = [e.kind for e in events]
    assert kinds[0] == "workflow_started" and kinds[-1] == "workflow_completed"
    assert set(kinds) <= set(EVENT_KINDS)
    idx: dict[tuple[str, str | None], int] = {}
    for i, e in enumerate(events):
        idx.setdefault((e.kind, e.node), i)
    for a, b in wf.edges:
        assert idx[("node_completed", a)] < idx[("node_started", b)]
    for name in wf.nodes:
        assert idx[("node_started", name)] < idx[("node_completed", name)]
    times = [e.elapsed_s for e in events]
    assert times == sorted(times)


def test_stream_events_in_order(llm: Any) -> None:
    wf = _two_step(llm)
    events = list(wf.stream(input="s"))
    _check_order(events, wf)
    assert [e.kind for e in events] == [
        "workflow_started", "node_started", "llm_call", "node_completed",
        "node_started", "llm_call", "node_completed", "workflow_completed",
    ]
    result = events[-1].data["result"]
    assert result.outputs["b"] == "[s]"
    assert result.trace == events
    llm_ev = events[2]
    assert llm_ev.node == "a" and llm_ev.data["usage"]["total_tokens"] > 0
    assert result.usage.total_tokens == sum(
        e.data["usage"]["total_tokens"] for e in events if e.kind == "llm_call"
    )


async def test_astream_events_in_order(llm: Any) -> None:
    wf = _two_step(llm)
    events = [e async for e in wf.astream(input="s")]
    _check_order(events, wf)
    assert events[-1].data["result"].outputs["b"] == "[s]"


def test_stream_stopped_early_cancels_the_run() -> None:
    cancelled = threading.Event()

    async def slow(input: Any) -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "x"

    wf = Workflow("s")
    wf.add(Node.function("slow", slow))
    t0 = time.perf_counter()
    for ev in wf.stream(input=1):
        if ev.kind == "node_started":
            break
    assert cancelled.wait(2.0)
    assert time.perf_counter() - t0 < 2.0
