"""Worker threads for user code in workflows (sync tools, sync function and condition nodes).

Why not the runtime's own worker pool: a sync tool may block on a *nested* workflow
(``wf.run(...)`` inside the tool) whose own sync tools need threads too. With one bounded pool,
enough such waits exhaust it and everything deadlocks. Here every nesting level gets its own
pool: code running at depth ``d`` (a tool of a workflow started at depth ``d``) runs in pool
``d`` and can only wait on work of depth ``d + 1``, so the waits form a chain that always ends in
a level that makes progress. The depth travels in a context variable, which the workflow entry
points (``run`` from a worker thread, ``arun`` from an async tool) read.

Threads are daemons, created on demand up to ``PARALLELRAG_TOOL_THREADS`` (default 64) per level
and retired after 60 s idle, so a tool thread that ignores a timeout never blocks interpreter
exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from ..runtime import register_fork_hook

__all__ = ["MAX_DEPTH", "current_depth", "depth_var", "run_in_pool"]

T = TypeVar("T")

MAX_DEPTH = 32
_THREADS_PER_LEVEL = int(os.environ.get("PARALLELRAG_TOOL_THREADS", "64"))
_IDLE_S = 60.0

#: nesting depth of the workflow whose user code is running (0 = not inside a workflow)
depth_var: contextvars.ContextVar[int] = contextvars.ContextVar(
    "parallelrag_workflow_depth", default=0
)


def current_depth() -> int:
    """The workflow nesting depth of the caller (0 outside any workflow)."""
    return depth_var.get()


_Item = tuple[concurrent.futures.Future[Any], Callable[[], Any]]


class _LevelPool:
    """A growable pool of daemon threads (one per nesting level)."""

    def __init__(self, level: int, max_workers: int) -> None:
        self.level = level
        self.max_workers = max(1, max_workers)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._pending = 0

    def submit(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            self._pending += 1
            start = self._pending > self._idle and self._threads < self.max_workers
            if start:
                self._threads += 1
        self._queue.put((fut, fn))
        if start:
            t = threading.Thread(
                target=self._worker,
                name=f"parallelrag-tool-L{self.level}-{self._threads}",
                daemon=True,
            )
            t.start()
        return fut

    def _worker(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            try:
                item = self._queue.get(timeout=_IDLE_S)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if self._pending == 0:
                        self._threads -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._pending -= 1
            if item is None:  # pragma: no cover - not used
                return
            fut, fn = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as e:
                fut.set_exception(e)
            else:
                fut.set_result(result)
            del item, fut, fn

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"threads": self._threads, "idle": self._idle, "pending": self._pending}


_pools_lock = threading.Lock()
_pools: dict[int, _LevelPool] = {}


def _pool(level: int) -> _LevelPool:
    pool = _pools.get(level)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(level)
            if pool is None:
                pool = _LevelPool(level, _THREADS_PER_LEVEL)
                _pools[level] = pool
    return pool


def pool_stats() -> dict[int, dict[str, int]]:
    """Threads per nesting level (for tests and diagnostics)."""
    with _pools_lock:
        return {level: pool.stats() for level, pool in sorted(_pools.items())}


async def run_in_pool(level: int, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run blocking ``fn`` in the pool of nesting ``level``; the call sees depth ``level + 1``.

    Awaiting it can be cancelled; a call already running keeps its thread until it returns
    (Python cannot interrupt a thread) but its result is dropped.
    """
    ctx = contextvars.copy_context()
    ctx.run(depth_var.set, level + 1)
    call = functools.partial(ctx.run, fn, *args, **kwargs)
    return await asyncio.wrap_future(_pool(level).submit(call))


def _after_fork() -> None:
    global _pools_lock
    _pools.clear()
    _pools_lock = threading.Lock()


register_fork_hook(_after_fork)
