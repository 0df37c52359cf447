"""The runtime: one background event loop per process that owns all I/O.

Every client, limiter and HTTP session of parallelrag lives on this loop, so rate limits and
concurrency limits hold across every thread of the process. Sync methods submit a coroutine to
the loop and block on a :class:`concurrent.futures.Future`; the waiting thread sleeps on a lock
and holds no GIL. Async methods called from another event loop (the user's) bridge with
:func:`asyncio.wrap_future`, so they work from any loop.

Rules the runtime enforces:

* user code never runs on the runtime thread: blocking work goes to :func:`to_thread`
  (a thread pool owned by the runtime);
* a blocking call made *on* the runtime thread raises :class:`RuntimeUsageError` instead of
  deadlocking;
* after ``os.fork()`` the child builds a fresh runtime on first use;
* at interpreter exit, registered closers run (HTTP sessions close), pending tasks are cancelled
  and awaited, and the loop is closed cleanly.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import functools
import gc
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from .errors import ConfigError, RuntimeUsageError

__all__ = [
    "Runtime",
    "get_runtime",
    "on_runtime_thread",
    "run_async",
    "run_sync",
    "shutdown",
    "to_thread",
]

T = TypeVar("T")

_WORKER_THREADS = int(os.environ.get("PARALLELRAG_WORKER_THREADS", "64"))


def new_loop() -> asyncio.AbstractEventLoop:
    """The runtime's event loop: uvloop where it is installed, else asyncio's own.

    ``PARALLELRAG_LOOP`` chooses: ``auto`` (the default), ``uvloop`` (required: an error without
    it) or ``asyncio``. uvloop's C loop costs less per callback and per TCP connect; measured
    in ``benchmarks/runtime_overhead.py`` and ``benchmarks/llm.py`` (docs/benchmarks.md)."""
    choice = os.environ.get("PARALLELRAG_LOOP", "auto").strip().lower() or "auto"
    if choice not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(
            f"PARALLELRAG_LOOP must be 'auto', 'uvloop' or 'asyncio', not {choice!r}"
        )
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ConfigError(
                    "PARALLELRAG_LOOP=uvloop, but uvloop is not installed (pip install uvloop)"
                ) from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _settle_heap() -> None:
    """One full garbage collection when the runtime starts (client construction).

    A fresh process owes the cyclic GC a full collection of everything its imports created
    (numpy, aiohttp, tokenizers...): CPython runs it as soon as enough young objects survive,
    which is during the first burst of requests, the allocation-heavy part of a first call.
    Measured: a 25 ms full collection inside the first 200-prompt batch of a process. Paying
    it here moves that cost from the first call to the start of the runtime, once per process
    (and once in a forked child); nothing runs when the GC is disabled."""
    if gc.isenabled():
        gc.collect()


class Runtime:
    """One asyncio loop on one daemon thread, plus a thread pool for blocking work."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        _settle_heap()
        self.loop = new_loop()
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=_WORKER_THREADS, thread_name_prefix="parallelrag-worker"
        )
        self.loop.set_default_executor(self.executor)
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._state: dict[str, Any] = {}
        self._closed = False
        started = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(started,), name="parallelrag-runtime", daemon=True
        )
        self.thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(started.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            except Exception:  # pragma: no cover - best effort at exit
                pass
            self.loop.close()

    # ----------------------------------------------------------------- state per runtime
    def state(self, key: str, factory: Callable[[], T]) -> T:
        """Per-runtime singletons (HTTP session, shared limiters). Call on the runtime loop."""
        try:
            return self._state[key]  # type: ignore[no-any-return]
        except KeyError:
            value = factory()
            self._state[key] = value
            return value

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Register a coroutine function to await at shutdown (e.g. closing a session)."""
        self._closers.append(closer)

    # ----------------------------------------------------------------- entry points
    def on_thread(self) -> bool:
        return threading.get_ident() == self.thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the runtime loop from any thread; returns a thread-safe future."""
        if self._closed:
            coro.close()
            raise RuntimeUsageError("the parallelrag runtime has been shut down")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run_sync(
        self,
        coro: Coroutine[Any, Any, T],
        *,
        timeout: float | None = None,
        alternative: str | None = None,
    ) -> T:
        """Run ``coro`` on the runtime loop and wait for it without holding the GIL."""
        if self.on_thread():
            coro.close()
            hint = f" Use {alternative} instead." if alternative else " Use the async method."
            raise RuntimeUsageError(
                "a blocking parallelrag call was made on the parallelrag runtime thread, "
                "where it would deadlock (async code running on the runtime loop must await "
                "the async API)." + hint
            )
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"operation did not finish within {timeout} s") from None
        except BaseException:
            # KeyboardInterrupt / SystemExit while waiting: cancel the work on the loop.
            fut.cancel()
            raise

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the runtime loop from any loop (bridging when it's another loop)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - only called from a coroutine
            running = None
        if running is self.loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

    async def to_thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run blocking ``fn`` in the runtime's worker pool (call from the runtime loop)."""
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return await self.loop.run_in_executor(self.executor, call)

    # ----------------------------------------------------------------- shutdown
    async def _aclose(self) -> None:
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:  # pragma: no cover - best effort
                pass
        self._closers.clear()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks(self.loop) if t is not current and not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        # let aiohttp's connector finish closing transports
        await asyncio.sleep(0)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Close sessions, cancel pending tasks, stop the loop and join the thread."""
        if self._closed or os.getpid() != self.pid:
            return
        if self.on_thread():  # pragma: no cover - misuse
            raise RuntimeUsageError("shutdown() cannot be called on the runtime thread")
        try:
            fut = asyncio.run_coroutine_threadsafe(self._aclose(), self.loop)
            fut.result(timeout)
        except Exception:  # pragma: no cover - best effort at exit
            pass
        self._closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
        self.executor.shutdown(wait=False, cancel_futures=True)


_lock = threading.Lock()
_runtime: Runtime | None = None
_fork_hooks: list[Callable[[], None]] = []


def get_runtime() -> Runtime:
    """The process's runtime, created on first use (and anew in a forked child)."""
    global _runtime
    rt = _runtime
    if rt is not None and rt.pid == os.getpid() and not rt._closed:
        return rt
    with _lock:
        rt = _runtime
        if rt is None or rt.pid != os.getpid() or rt._closed:
            rt = Runtime()
            _runtime = rt
        return rt


def on_runtime_thread() -> bool:
    """True when the caller is the runtime's own thread."""
    rt = _runtime
    return rt is not None and rt.pid == os.getpid() and rt.on_thread()


def run_sync(
    coro: Coroutine[Any, Any, T], *, timeout: float | None = None, alternative: str | None = None
) -> T:
    """Run a coroutine on the runtime from sync code: any thread, even inside a running loop.

    The caller blocks on a lock (no GIL held). On the runtime thread itself this raises
    :class:`RuntimeUsageError` (``alternative`` names the async method to use instead).
    """
    return get_runtime().run_sync(coro, timeout=timeout, alternative=alternative)


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await a coroutine on the runtime loop from whatever loop the caller runs on."""
    return await get_runtime().run_async(coro)


async def to_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run blocking ``fn`` in the runtime's worker pool; awaitable from any loop."""
    rt = get_runtime()
    running = asyncio.get_running_loop()
    if running is rt.loop:
        return await rt.to_thread(fn, *args, **kwargs)
    ctx = contextvars.copy_context()
    return await running.run_in_executor(
        rt.executor, functools.partial(ctx.run, fn, *args, **kwargs)
    )


def register_fork_hook(hook: Callable[[], None]) -> None:
    """Call ``hook`` in a forked child (to drop per-process caches that belong to the parent)."""
    _fork_hooks.append(hook)


def shutdown() -> None:
    """Shut the runtime down now (also done automatically at interpreter exit)."""
    rt = _runtime
    if rt is not None:
        rt.shutdown()


def _after_fork_in_child() -> None:
    global _runtime, _lock
    _runtime = None
    _lock = threading.Lock()
    for hook in _fork_hooks:
        try:
            hook()
        except Exception:  # pragma: no cover
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(shutdown)
