"""The executor: runs a compiled workflow graph on the runtime loop.

Structure (trio-like): one :class:`asyncio.TaskGroup` holds a task per node; a node's task
waits for its parents, then runs, is skipped or fails. Nothing outlives the run: a workflow
timeout or ``fail_fast`` cancels the group, every task records how it ended, and the group is
awaited before the result is returned. Agents run their parallel tool calls in a nested task
group of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import string
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import (
    BadRequestError,
    ConfigError,
    RuntimeUsageError,
    WorkflowError,
)
from .events import EventKind, TokenUsage, WorkflowEvent, WorkflowResult
from .nodes import CallPlan, Node, call_args
from .threads import MAX_DEPTH, depth_var, run_in_pool

__all__ = ["CompiledWorkflow", "RunOptions", "execute"]

_MAX_BACKOFF_S = 30.0
_RESULT_PREVIEW = 500
_NOT_RETRYABLE: tuple[type[BaseException], ...] = (BadRequestError, ConfigError, RuntimeUsageError)


@dataclass
class CompiledWorkflow:
    """A validated graph, ready to execute (built by ``Workflow.validate``)."""

    name: str
    order: list[str]
    nodes: dict[str, Node]
    parents: dict[str, list[str]]
    children: dict[str, list[str]]
    ancestors: dict[str, list[str]]
    call_plans: dict[str, CallPlan] = field(default_factory=dict)
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class RunOptions:
    max_concurrency: int | None = None
    max_concurrency_by_kind: Mapping[str, int] | None = None
    timeout_s: float | None = None
    fail_fast: bool = False


class _FailFast(Exception):
    def __init__(self, node: str) -> None:
        super().__init__(node)
        self.node = node


class _NodeFailure(Exception):
    """Internal: an attempt failed with ``error`` (the exception to record)."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _error_text(exc: BaseException) -> str:
    return f"Error: {type(exc).__name__}: {exc}"


def _as_text(value: Any) -> str:
    """A tool's return value as the text sent back to the model."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _usage_dict(usage: Any) -> dict[str, int]:
    return {
        "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
        "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
        "total_tokens": int(getattr(usage, "total_tokens", 0) or 0),
    }


class _Run:
    """State of one execution."""

    def __init__(
        self,
        wf: CompiledWorkflow,
        input: Any,
        opts: RunOptions,
        depth: int,
        sink: Callable[[WorkflowEvent], None] | None,
    ) -> None:
        self.wf = wf
        self.input = input
        self.opts = opts
        self.depth = depth
        self.sink = sink
        self.t0 = time.perf_counter()
        self.result = WorkflowResult(workflow=wf.name, input=input)
        self.state: dict[str, str] = {name: "pending" for name in wf.order}
        self.done: dict[str, asyncio.Event] = {name: asyncio.Event() for name in wf.order}
        self.selected: dict[str, set[str]] = {}
        self.origin: dict[str, str] = {}  # failed node -> the node whose failure caused it
        self.cancel_reason: str | None = None
        self.timeout_cm: asyncio.Timeout | None = None
        self.global_sem = (
            asyncio.Semaphore(opts.max_concurrency) if opts.max_concurrency else None
        )
        self.kind_sems = {
            kind: asyncio.Semaphore(limit)
            for kind, limit in (opts.max_concurrency_by_kind or {}).items()
            if limit
        }

    # ------------------------------------------------------------------ events
    def emit(self, kind: EventKind, node: str | None, /, **data: Any) -> None:
        ev = WorkflowEvent(
            kind=kind,
            node=node,
            time=time.time(),
            data=data,
            elapsed_s=time.perf_counter() - self.t0,
            workflow=self.wf.name,
        )
        self.result.trace.append(ev)
        if self.sink is not None:
            try:
                self.sink(ev)
            except Exception:  # pragma: no cover - a consumer that went away
                pass

    # ------------------------------------------------------------------ the run
    async def run(self) -> WorkflowResult:
        if self.depth >= MAX_DEPTH:
            raise WorkflowError(
                f"workflow {self.wf.name!r}: nested workflows deeper than {MAX_DEPTH} levels "
                "(a tool that runs its own workflow recursively?)"
            )
        self.emit(
            "workflow_started", None, input=_jsonable(self.input), nodes=list(self.wf.order)
        )
        cancelled_from_outside = False
        try:
            async with asyncio.timeout(self.opts.timeout_s) as tcm:
                self.timeout_cm = tcm
                try:
                    async with asyncio.TaskGroup() as tg:
                        for name in self.wf.order:
                            tg.create_task(self.run_node(name), name=f"workflow-node:{name}")
                except* _FailFast:
                    pass
        except TimeoutError:
            if self.timeout_cm is None or not self.timeout_cm.expired():
                raise
            self.result.timed_out = True
        except asyncio.CancelledError:
            cancelled_from_outside = True
            raise
        finally:
            self.finish(cancelled_from_outside)
        return self.result

    def finish(self, cancelled: bool) -> None:
        res = self.result
        res.wall_s = time.perf_counter() - self.t0
        order = self.wf.order
        res.outputs = {n: res.outputs[n] for n in order if n in res.outputs}
        res.failed = {n: res.failed[n] for n in order if n in res.failed}
        res.skipped = [n for n in order if n in set(res.skipped)]
        res.timings = {n: res.timings[n] for n in order if n in res.timings}
        res.node_usage = {n: res.node_usage[n] for n in order if n in res.node_usage}
        total = TokenUsage()
        for u in res.node_usage.values():
            total.merge(u)
        res.usage = total
        self.emit(
            "workflow_completed",
            None,
            ok=res.ok and not cancelled,
            wall_s=res.wall_s,
            failed=list(res.failed),
            skipped=list(res.skipped),
            timed_out=res.timed_out,
            cancelled=cancelled,
            usage=total.as_dict(),
            result=res,
        )

    def _reason(self) -> str:
        if self.timeout_cm is not None and self.timeout_cm.expired():
            return f"workflow timed out after {self.opts.timeout_s} s"
        return self.cancel_reason or "workflow cancelled"

    # ------------------------------------------------------------------ one node
    async def run_node(self, name: str) -> None:
        depth_var.set(self.depth + 1)
        node = self.wf.nodes[name]
        parents = self.wf.parents[name]
        started = False
        t_start = 0.0
        try:
            for p in parents:
                await self.done[p].wait()
            failed_parents = [p for p in parents if self.state[p] == "failed"]
            if failed_parents:
                p = failed_parents[0]
                root = self.origin.get(p, p)
                cause = self.result.failed.get(root)
                err = WorkflowError(
                    f"node {name!r} did not run: upstream node {root!r} failed"
                    + (f" ({type(cause).__name__}: {cause})" if cause is not None else ""),
                    node=name,
                )
                err.__cause__ = cause
                self.origin[name] = root
                self.fail(name, err, upstream=root)
                return
            if parents:
                unselected = [
                    p for p in parents if p in self.selected and name not in self.selected[p]
                ]
                if unselected:
                    self.skip(name, f"condition {unselected[0]!r} chose another branch")
                    return
                if all(self.state[p] == "skipped" for p in parents):
                    self.skip(name, "every upstream node was skipped")
                    return
            values = self.visible_values(name)
            started = True
            t_start = time.perf_counter()
            await self.attempts(node, values)
        except asyncio.CancelledError:
            reason = self._reason()
            where = "while running" if started else "before it started"
            err = WorkflowError(f"node {name!r} cancelled {where}: {reason}", node=name)
            self.fail(
                name, err, cancelled=True,
                duration_s=(time.perf_counter() - t_start) if started else None,
            )
            raise
        finally:
            if started:
                self.result.timings[name] = time.perf_counter() - t_start
            self.done[name].set()

    def visible_values(self, name: str) -> dict[str, Any]:
        values: dict[str, Any] = {"input": self.input}
        for a in self.wf.ancestors[name]:
            values[a] = self.result.outputs.get(a)
        return values

    def skip(self, name: str, reason: str) -> None:
        self.state[name] = "skipped"
        self.result.skipped.append(name)
        self.emit("node_skipped", name, reason=reason)

    def fail(
        self,
        name: str,
        err: BaseException,
        *,
        cancelled: bool = False,
        upstream: str | None = None,
        duration_s: float | None = None,
        attempt: int | None = None,
    ) -> None:
        if self.state[name] in ("completed", "failed", "skipped"):
            return
        self.state[name] = "failed"
        self.result.failed[name] = err
        data: dict[str, Any] = {
            "error": str(err),
            "error_type": type(err).__name__,
            "cancelled": cancelled,
            "will_retry": False,
        }
        if upstream is not None:
            data["upstream"] = upstream
        if duration_s is not None:
            data["duration_s"] = duration_s
        if attempt is not None:
            data["attempt"] = attempt
        self.emit("node_failed", name, **data)

    async def attempts(self, node: Node, values: dict[str, Any]) -> None:
        name = node.name
        usage = self.result.node_usage.setdefault(name, TokenUsage())
        attempt = 0
        while True:
            attempt += 1
            t0 = 0.0
            try:
                async with contextlib.AsyncExitStack() as stack:
                    kind_sem = self.kind_sems.get(node.kind)
                    if kind_sem is not None:
                        await stack.enter_async_context(kind_sem)
                    if self.global_sem is not None:
                        await stack.enter_async_context(self.global_sem)
                    t0 = time.perf_counter()
                    self.emit("node_started", name, kind=node.kind, attempt=attempt)
                    output = await self.attempt(node, values, usage)
            except _NodeFailure as f:
                err = f.error
            except Exception as e:
                err = e
            else:
                self.result.outputs[name] = output
                self.state[name] = "completed"
                data: dict[str, Any] = {
                    "duration_s": time.perf_counter() - t0,
                    "attempts": attempt,
                    "output": _preview(output),
                }
                if node.kind == "condition":
                    data["branch"] = output
                if node.kind == "agent":
                    data["usage"] = usage.as_dict()
                self.emit("node_completed", name, **data)
                return
            duration = time.perf_counter() - t0 if t0 else 0.0
            will_retry = attempt <= node.retries and not isinstance(err, _NOT_RETRYABLE)
            if will_retry:
                self.emit(
                    "node_failed", name, error=str(err), error_type=type(err).__name__,
                    cancelled=False, will_retry=True, attempt=attempt, duration_s=duration,
                )
                delay = min(_MAX_BACKOFF_S, node.retry_backoff_s * (2 ** (attempt - 1)))
                await asyncio.sleep(delay)
                continue
            self.fail(name, err, duration_s=duration, attempt=attempt)
            if self.opts.fail_fast:
                self.cancel_reason = f"fail_fast: node {name!r} failed"
                raise _FailFast(name)
            return

    async def attempt(self, node: Node, values: dict[str, Any], usage: TokenUsage) -> Any:
        if node.timeout_s is None:
            return await self.body(node, values, usage)
        try:
            async with asyncio.timeout(node.timeout_s) as tcm:
                return await self.body(node, values, usage)
        except TimeoutError as e:
            if tcm.expired():
                raise WorkflowError(
                    f"node {node.name!r} timed out after {node.timeout_s} s", node=node.name
                ) from e
            raise

    async def body(self, node: Node, values: dict[str, Any], usage: TokenUsage) -> Any:
        if node.kind == "agent":
            return await _Agent(self, node, usage).run(values)
        value = await self.call_fn(node, values)
        if node.kind == "condition":
            return self.route(node, value)
        return value

    async def call_fn(self, node: Node, values: dict[str, Any]) -> Any:
        assert node.fn is not None
        args, kwargs = call_args(self.wf.call_plans[node.name], values)
        if node.is_async:
            return await node.fn(*args, **kwargs)
        value = await run_in_pool(self.depth, node.fn, *args, **kwargs)
        if asyncio.iscoroutine(value):  # a sync callable that returned a coroutine
            return await value
        return value

    def route(self, node: Node, value: Any) -> Any:
        children = self.wf.children[node.name]
        if value is None:
            chosen: list[str] = []
        elif isinstance(value, str):
            chosen = [value]
        elif isinstance(value, list | tuple | set | frozenset):
            chosen = [str(v) for v in value]
        else:
            raise WorkflowError(
                f"condition {node.name!r} returned {type(value).__name__}; return the name of a "
                f"downstream node ({children}), a list of names, or None",
                node=node.name,
            )
        bad = [c for c in chosen if c not in children]
        if bad:
            raise WorkflowError(
                f"condition {node.name!r} chose {bad[0]!r}, which is not one of its downstream "
                f"nodes {children}",
                node=node.name,
            )
        self.selected[node.name] = set(chosen)
        return value


def _preview(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _RESULT_PREVIEW else text[:_RESULT_PREVIEW] + "…"


class _Agent:
    """The tool loop of one agent attempt."""

    def __init__(self, run: _Run, node: Node, usage: TokenUsage) -> None:
        self.run_ = run
        self.node = node
        self.usage = usage
        self.tools: dict[str, Any] = run.wf.tools.get(node.name, {})

    async def run(self, values: Mapping[str, Any]) -> str:
        from ..llm import Message

        node = self.node
        assert node.prompt is not None
        prompt = string.Formatter().vformat(node.prompt, (), _PromptValues(values))
        messages: list[Any] = [Message(role="user", content=prompt)]
        kwargs: dict[str, Any] = dict(node.llm_options)
        if node.system is not None:
            kwargs["system"] = node.system
        if self.tools:
            kwargs["tools"] = list(self.tools.values())
        if node.max_tokens is not None:
            kwargs["max_tokens"] = node.max_tokens
        last_text = ""
        for iteration in range(1, node.max_iterations + 1):
            t0 = time.perf_counter()
            resp = await node.llm.acomplete_full(messages, **kwargs)
            self.usage.add(resp.usage)
            calls = list(resp.tool_calls or [])
            self.run_.emit(
                "llm_call",
                node.name,
                iteration=iteration,
                duration_s=time.perf_counter() - t0,
                usage=_usage_dict(resp.usage),
                finish_reason=resp.finish_reason,
                tool_calls=[c.name for c in calls],
                model=getattr(resp, "model", None),
            )
            last_text = resp.text or ""
            if not calls:
                return last_text
            messages.append(
                Message(role="assistant", content=resp.text or "", tool_calls=calls)
            )
            results = await self.run_tools(calls)
            for call, text in zip(calls, results, strict=True):
                messages.append(
                    Message(role="tool", content=text, tool_call_id=call.id, name=call.name)
                )
        if node.on_max_iterations == "last":
            return last_text
        raise WorkflowError(
            f"agent {node.name!r} gave no final answer within max_iterations="
            f"{node.max_iterations} LLM calls (the model kept asking for tools); raise "
            "max_iterations or pass on_max_iterations='last'",
            node=node.name,
        )

    async def run_tools(self, calls: Sequence[Any]) -> list[str]:
        if len(calls) == 1:
            return [await self.run_tool(calls[0])]
        results: list[str] = [""] * len(calls)

        async def one(i: int, call: Any) -> None:
            results[i] = await self.run_tool(call)

        try:
            async with asyncio.TaskGroup() as tg:
                for i, call in enumerate(calls):
                    tg.create_task(one(i, call), name=f"tool:{call.name}")
        except BaseExceptionGroup as eg:
            # tool_errors="raise": surface the first failure, not the group
            first = eg.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        return results

    async def run_tool(self, call: Any) -> str:
        node = self.node
        name = call.name
        args = call.arguments if isinstance(call.arguments, dict) else {}
        tool = self.tools.get(name)
        t0 = time.perf_counter()
        timed_out = False
        ok = False
        error: BaseException | None = None
        if tool is None:
            error = WorkflowError(
                f"unknown tool {name!r}; this agent has {sorted(self.tools)}", node=node.name
            )
            text = _error_text(error)
        else:
            timeout = _tool_timeout(tool, node.tool_timeout_s)
            try:
                async with asyncio.timeout(timeout) as tcm:
                    if getattr(tool, "is_async", False):
                        value = await tool.ainvoke(args)
                    else:
                        value = await run_in_pool(self.run_.depth, tool.invoke, args)
                text = _as_text(value)
                ok = True
            except TimeoutError as e:
                if tcm.expired():
                    timed_out = True
                    error = TimeoutError(f"tool {name!r} timed out after {timeout} s")
                    error.__cause__ = e
                else:
                    error = e
                text = _error_text(error)
            except Exception as e:
                error = e
                text = _error_text(e)
        self.run_.emit(
            "tool_call",
            node.name,
            tool=name,
            call_id=getattr(call, "id", None),
            arguments=_jsonable(args),
            duration_s=time.perf_counter() - t0,
            ok=ok,
            timed_out=timed_out,
            result=_preview(text),
        )
        if error is not None and node.tool_errors == "raise":
            raise WorkflowError(
                f"agent {node.name!r}: tool {name!r} failed: {type(error).__name__}: {error}",
                node=node.name,
            ) from error
        return text


def _tool_timeout(tool: Any, node_timeout: float | None) -> float | None:
    own = getattr(tool, "timeout_s", None)
    if own is None:
        return node_timeout
    if node_timeout is None:
        return float(own)
    return min(float(own), node_timeout)


class _PromptValues(dict[str, Any]):
    """Prompt values: skipped ancestors (None) render as ''."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__({k: ("" if v is None else v) for k, v in values.items()})


async def execute(
    wf: CompiledWorkflow,
    input: Any,
    opts: RunOptions,
    *,
    depth: int = 0,
    sink: Callable[[WorkflowEvent], None] | None = None,
) -> WorkflowResult:
    """Run ``wf`` on the current loop (the runtime loop) and return its result."""
    return await _Run(wf, input, opts, depth, sink).run()
