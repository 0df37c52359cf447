"""The :class:`Workflow` graph: build, validate, run (sync, async, streamed)."""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from ..errors import WorkflowError
from ..runtime import get_runtime, run_async, run_sync
from .engine import CompiledWorkflow, RunOptions, execute
from .events import WorkflowEvent, WorkflowResult
from .nodes import Node, plan_call
from .threads import current_depth

__all__ = ["Workflow"]

_DONE = object()


def _as_tool(obj: Any, node: str) -> Any:
    """A :class:`~parallelrag.tools.Tool` for ``obj`` (a Tool, a function or a schema dict)."""
    from ..tools import as_tool

    try:
        return as_tool(obj)
    except Exception as e:
        raise WorkflowError(f"node {node!r}: bad tool {obj!r}: {e}", node=node) from e


class Workflow:
    """A directed acyclic graph of nodes (agents, functions, conditions).

    ::

        wf = Workflow("research")
        planner = wf.add(Node.agent("planner", prompt="Plan: {input}", llm=llm, tools=[lookup]))
        writer = wf.add(Node.agent("writer", prompt="Write from: {planner}", llm=llm))
        wf.connect(planner, writer)
        result = wf.run(input="What is X?")
        result.outputs["writer"]

    Nodes whose inputs are ready run concurrently on the parallelrag runtime loop. A node sees
    the workflow input (``{input}``) and the outputs of its ancestors (nodes upstream of it,
    transitively), by node name. A workflow object is reusable and may be run from many
    threads and loops at once; each run has its own state.
    """

    def __init__(self, name: str = "workflow") -> None:
        self.name = name
        self._nodes: dict[str, Node] = {}
        self._edges: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._compiled: CompiledWorkflow | None = None

    # ------------------------------------------------------------------ building
    def add(self, node: Node) -> Node:
        """Add ``node``; returns it (for ``connect``). Names are unique within a workflow."""
        if not isinstance(node, Node):
            raise WorkflowError(
                f"workflow {self.name!r}: add() takes a Node (Node.agent / Node.function / "
                f"Node.condition), got {type(node).__name__}"
            )
        with self._lock:
            if node.name in self._nodes:
                raise WorkflowError(
                    f"workflow {self.name!r}: a node named {node.name!r} already exists",
                    node=node.name,
                )
            self._nodes[node.name] = node
            self._edges[node.name] = []
            self._compiled = None
        return node

    def connect(self, upstream: Node | str, downstream: Node | str) -> Workflow:
        """Add the edge ``upstream → downstream`` (nodes or node names); returns self."""
        a = self._name_of(upstream)
        b = self._name_of(downstream)
        if a == b:
            raise WorkflowError(f"node {a!r} cannot be connected to itself (a cycle)", node=a)
        with self._lock:
            if b not in self._edges[a]:
                self._edges[a].append(b)
            self._compiled = None
        return self

    def chain(self, *nodes: Node | str) -> Workflow:
        """Connect ``nodes`` in sequence: ``wf.chain(a, b, c)`` = a → b → c."""
        for a, b in itertools.pairwise(nodes):
            self.connect(a, b)
        return self

    def _name_of(self, node: Node | str) -> str:
        name = node.name if isinstance(node, Node) else node
        known = self._nodes.get(name)
        if known is None:
            raise WorkflowError(
                f"workflow {self.name!r}: unknown node {name!r} (add it before connecting); "
                f"nodes: {sorted(self._nodes)}",
                node=name,
            )
        if isinstance(node, Node) and known is not node:
            raise WorkflowError(
                f"workflow {self.name!r}: a different node named {name!r} was added", node=name
            )
        return name

    @property
    def nodes(self) -> dict[str, Node]:
        """Nodes by name, in the order they were added."""
        return dict(self._nodes)

    @property
    def edges(self) -> list[tuple[str, str]]:
        return [(a, b) for a, bs in self._edges.items() for b in bs]

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check the graph; raises :class:`WorkflowError` naming the offending node for a
        cycle, a prompt ``{reference}`` that is neither ``input`` nor an upstream node, a
        function whose parameters can't be matched, a condition without downstream nodes, a
        duplicate tool name or a tool that is not a Tool/function."""
        self._compile()

    def _compile(self) -> CompiledWorkflow:
        compiled = self._compiled
        if compiled is not None:
            return compiled
        with self._lock:
            nodes = dict(self._nodes)
            children = {n: list(bs) for n, bs in self._edges.items()}
        if not nodes:
            raise WorkflowError(f"workflow {self.name!r} has no nodes")
        parents: dict[str, list[str]] = {n: [] for n in nodes}
        for a, bs in children.items():
            for b in bs:
                parents[b].append(a)
        order = _topological_order(nodes, children)
        ancestors: dict[str, list[str]] = {}
        for n in order:
            seen: dict[str, None] = {}
            for p in parents[n]:
                for a in ancestors[p]:
                    seen[a] = None
                seen[p] = None
            ancestors[n] = [a for a in order if a in seen]
        wf = CompiledWorkflow(
            name=self.name, order=order, nodes=nodes, parents=parents,
            children=children, ancestors=ancestors,
        )
        for n in order:
            node = nodes[n]
            visible = ["input", *ancestors[n]]
            if node.kind == "agent":
                for ref in node.references():
                    if ref in visible:
                        continue
                    if ref in nodes:
                        why = f"{ref!r} is not upstream of {n!r} (connect it first)"
                    else:
                        why = f"there is no node named {ref!r}"
                        if not ref.replace("-", "_").isidentifier():
                            why += " (write literal braces as {{ and }})"
                    raise WorkflowError(
                        f"node {n!r}: prompt references {{{ref}}} but {why}; visible: "
                        f"{visible}",
                        node=n,
                    )
                tools: dict[str, Any] = {}
                for obj in node.tools:
                    t = _as_tool(obj, n)
                    if t.name in tools:
                        raise WorkflowError(
                            f"node {n!r}: two tools are named {t.name!r}", node=n
                        )
                    tools[t.name] = t
                wf.tools[n] = tools
            else:
                wf.call_plans[n] = plan_call(node, visible)
                if node.kind == "condition" and not children[n]:
                    raise WorkflowError(
                        f"condition {n!r} has no downstream nodes to choose from", node=n
                    )
        self._compiled = wf
        return wf

    # ------------------------------------------------------------------ running
    def _options(
        self,
        max_concurrency: int | None,
        max_concurrency_by_kind: Mapping[str, int] | None,
        timeout_s: float | None,
        fail_fast: bool,
    ) -> RunOptions:
        if max_concurrency is not None and max_concurrency < 1:
            raise WorkflowError("max_concurrency must be >= 1 (or None for no limit)")
        for kind, limit in (max_concurrency_by_kind or {}).items():
            if kind not in ("agent", "function", "condition"):
                raise WorkflowError(f"max_concurrency_by_kind: unknown node kind {kind!r}")
            if limit < 1:
                raise WorkflowError(f"max_concurrency_by_kind[{kind!r}] must be >= 1")
        if timeout_s is not None and timeout_s <= 0:
            raise WorkflowError("timeout_s must be > 0 (or None)")
        return RunOptions(
            max_concurrency=max_concurrency,
            max_concurrency_by_kind=dict(max_concurrency_by_kind or {}),
            timeout_s=timeout_s,
            fail_fast=fail_fast,
        )

    def run(
        self,
        input: Any = None,
        *,
        max_concurrency: int | None = None,
        max_concurrency_by_kind: Mapping[str, int] | None = None,
        timeout_s: float | None = None,
        fail_fast: bool = False,
    ) -> WorkflowResult:
        """Run the workflow and wait for it (from any thread, inside a running event loop, or
        inside a workflow tool); returns a :class:`WorkflowResult`.

        Node failures don't raise: they are in ``result.failed`` (``result.raise_for_errors()``
        raises the first). Dependants of a failed node fail naming it; independent branches
        keep running unless ``fail_fast=True``, which cancels everything still running.
        ``timeout_s`` bounds the whole run: running nodes are cancelled and recorded as failed,
        and ``result.timed_out`` is True. ``max_concurrency`` caps the nodes running at once;
        ``max_concurrency_by_kind`` caps per kind, e.g. ``{"agent": 4}``.

        Raises :class:`WorkflowError` for an invalid graph, and
        :class:`~parallelrag.errors.RuntimeUsageError` when called on the runtime thread
        (from async code running there: ``await wf.arun(...)``).
        """
        compiled = self._compile()
        opts = self._options(max_concurrency, max_concurrency_by_kind, timeout_s, fail_fast)
        return run_sync(
            execute(compiled, input, opts, depth=current_depth()),
            alternative="await workflow.arun(...)",
        )

    async def arun(
        self,
        input: Any = None,
        *,
        max_concurrency: int | None = None,
        max_concurrency_by_kind: Mapping[str, int] | None = None,
        timeout_s: float | None = None,
        fail_fast: bool = False,
    ) -> WorkflowResult:
        """Async twin of :meth:`run`, awaitable from any event loop."""
        compiled = self._compile()
        opts = self._options(max_concurrency, max_concurrency_by_kind, timeout_s, fail_fast)
        return await run_async(execute(compiled, input, opts, depth=current_depth()))

    def stream(
        self,
        input: Any = None,
        *,
        max_concurrency: int | None = None,
        max_concurrency_by_kind: Mapping[str, int] | None = None,
        timeout_s: float | None = None,
        fail_fast: bool = False,
    ) -> Iterator[WorkflowEvent]:
        """Run the workflow, yielding :class:`WorkflowEvent` s as they happen (sync iterator).

        The last event is ``workflow_completed`` whose ``data["result"]`` is the
        :class:`WorkflowResult`. Leaving the loop early cancels the run.
        """
        compiled = self._compile()
        opts = self._options(max_concurrency, max_concurrency_by_kind, timeout_s, fail_fast)
        rt = get_runtime()
        if rt.on_thread():
            from ..errors import RuntimeUsageError

            raise RuntimeUsageError(
                "Workflow.stream() blocks and was called on the parallelrag runtime thread; "
                "use `async for event in workflow.astream(...)` instead."
            )
        events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        fut = rt.submit(execute(compiled, input, opts, depth=current_depth(), sink=events.put))
        fut.add_done_callback(lambda _f: events.put(_DONE))
        try:
            while True:
                item = events.get()
                if item is _DONE:
                    break
                yield item
            fut.result()
        finally:
            if not fut.done():
                fut.cancel()

    async def astream(
        self,
        input: Any = None,
        *,
        max_concurrency: int | None = None,
        max_concurrency_by_kind: Mapping[str, int] | None = None,
        timeout_s: float | None = None,
        fail_fast: bool = False,
    ) -> AsyncIterator[WorkflowEvent]:
        """Async twin of :meth:`stream`, usable from any event loop."""
        compiled = self._compile()
        opts = self._options(max_concurrency, max_concurrency_by_kind, timeout_s, fail_fast)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()

        def sink(ev: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ev)

        rt = get_runtime()
        coro = execute(compiled, input, opts, depth=current_depth(), sink=sink)
        task: asyncio.Future[WorkflowResult]
        if loop is rt.loop:
            task = asyncio.ensure_future(coro)
        else:
            task = asyncio.wrap_future(rt.submit(coro))
        task.add_done_callback(lambda _t: sink(_DONE))
        try:
            while True:
                item = await events.get()
                if item is _DONE:
                    break
                yield item
            await task
        finally:
            if not task.done():
                task.cancel()
                try:
                    await task
                except BaseException:
                    pass

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, nodes={list(self._nodes)}, edges={self.edges})"


def _topological_order(nodes: Mapping[str, Node], children: Mapping[str, list[str]]) -> list[str]:
    """Kahn's algorithm, stable in insertion order; a cycle raises naming its nodes."""
    indegree = {n: 0 for n in nodes}
    for bs in children.values():
        for b in bs:
            indegree[b] += 1
    ready = [n for n in nodes if indegree[n] == 0]
    order: list[str] = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for b in children[n]:
            indegree[b] -= 1
            if indegree[b] == 0:
                ready.append(b)
    if len(order) == len(nodes):
        return order
    cycle = _find_cycle([n for n in nodes if indegree[n] > 0], children)
    raise WorkflowError(
        f"workflow has a cycle: {' -> '.join(cycle)} (node {cycle[0]!r})", node=cycle[0]
    )


def _find_cycle(candidates: list[str], children: Mapping[str, list[str]]) -> list[str]:
    """A cycle among the nodes Kahn's algorithm could not order.

    Each of them has a parent among them, so walking parents backwards must revisit a node.
    """
    remaining = set(candidates)
    parents: dict[str, list[str]] = {n: [] for n in candidates}
    for a, bs in children.items():
        if a in remaining:
            for b in bs:
                if b in remaining:
                    parents[b].append(a)
    seen: dict[str, int] = {}
    path: list[str] = []
    node = candidates[0]
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = parents[node][0]
    cycle = list(reversed(path[seen[node]:]))
    return [*cycle, cycle[0]]
