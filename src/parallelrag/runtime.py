"""The runtime: one background event loop per process that owns all I/O.

Every client, limiter and HTTP session of parallelrag lives on this loop, so rate limits and
concurrency limits hold across every thread of the process. Sync methods submit a coroutine to
the loop and block on a :class:`concurrent.futures.Future`; the waiting thread sleeps on a lock
and holds no GIL. Async methods called from another event loop (the user's) bridge with
:func:`asyncio.wrap_future`, so they work from any loop.

Rules the runtime enforces:

* user code never runs on the runtime thread: blocking work goes to :func:`to_thread`
  (a thread pool owned by the runtime, :class:`WorkerPool`);
* nested sync calls never deadlock: a worker thread that blocks waiting for the runtime
  (``run_sync`` from a sync tool, a store read inside a tool, a nested workflow) stops counting
  against the pool's bound, and the pool starts a replacement thread if work is queued. So no
  bounded pool is ever needed both by a waiting caller and by the work it waits for (DNS
  look-ups, store reads and user tools may all share the pool);
* a blocking call made *on* the runtime thread raises :class:`RuntimeUsageError` instead of
  deadlocking;
* after ``os.fork()`` the child builds a fresh runtime on first use;
* at interpreter exit, registered closers run (HTTP sessions close), pending tasks are cancelled
  and awaited, and the loop is closed cleanly. A call cancelled by a shutdown raises
  :class:`RuntimeShutdownError`; daemon threads still waiting at interpreter exit (sync
  callers, and coroutines on a daemon thread's own event loop) are left asleep (the
  interpreter ends them) instead of each printing a traceback. An atexit handler that runs
  after that shutdown (one registered before parallelrag was imported) still gets its calls
  served, each by a short-lived runtime of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import contextvars
import functools
import gc
import os
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from .errors import ConfigError, RuntimeShutdownError, RuntimeUsageError

__all__ = [
    "CallbackRunner",
    "Runtime",
    "WorkerPool",
    "blocking",
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


_IDLE_S = 60.0
_local = threading.local()

_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()
_WorkItem = tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class WorkerPool(concurrent.futures.ThreadPoolExecutor):
    """Daemon threads for blocking work, started on demand, at most ``max_workers`` *runnable*.

    A worker that blocks waiting for the runtime (inside :func:`blocking`, which
    :func:`run_sync` uses) does not count against ``max_workers`` while it waits: if work is
    queued, a replacement thread starts. The work a waiter waits for can therefore always get a
    thread, however deep the nesting (a sync tool calling ``index.search``, which reads the
    store in this same pool). Threads retire after 60 s idle; they are daemons, so a call that
    never returns does not hold up interpreter exit.

    A :class:`~concurrent.futures.ThreadPoolExecutor` subclass only so that asyncio accepts it
    as the loop's default executor (DNS look-ups); none of the base class's machinery is used.
    Unlike the base class it keeps taking work while the interpreter exits (a
    ``ThreadPoolExecutor`` refuses new work as soon as the main thread returns, before the
    non-daemon threads that may still need it are joined), and it works in a child of
    ``os.fork()`` (the parent's threads do not exist there: the child starts its own, and the
    work queued in the parent is dropped). So it is also the executor to use for a dedicated
    pool (``WorkerPool(1, "name")`` for calls that must never overlap; ``idle_s=None`` keeps
    its threads instead of retiring them when idle, for work tied to a thread such as a SQLite
    connection). ``shutdown(wait=True)`` waits until the queued work has run and the threads
    have ended, as the base class does.
    """

    def __init__(
        self,
        max_workers: int,
        thread_name_prefix: str = "parallelrag-worker",
        *,
        idle_s: float | None = _IDLE_S,
    ) -> None:
        super().__init__(max_workers=1, thread_name_prefix=thread_name_prefix)
        self.limit = max(1, max_workers)
        self._idle_s = idle_s
        self._prefix = thread_name_prefix
        self._cv = threading.Condition(threading.Lock())
        self._queue: deque[_WorkItem] = deque()
        self._nthreads = 0
        self._idle = 0
        self._blocked = 0
        self._started = 0
        self._closed = False
        _pools.add(self)

    def _after_fork(self) -> None:
        """In a forked child (one thread runs): forget the parent's threads, locks and queue."""
        self._cv = threading.Condition(threading.Lock())
        self._queue = deque()
        self._nthreads = self._idle = self._blocked = 0

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cv:
            if self._closed:
                raise RuntimeShutdownError("the parallelrag runtime has been shut down")
            self._queue.append((fut, fn, args, kwargs))
            if self._idle >= len(self._queue):
                self._cv.notify()
            else:
                self._maybe_start()
        return fut

    def _maybe_start(self) -> None:
        """Start a thread if work waits and fewer than ``limit`` threads can run (lock held)."""
        if self._queue and self._idle < len(self._queue) and (
            self._nthreads - self._blocked < self.limit
        ):
            self._nthreads += 1
            self._started += 1
            t = threading.Thread(
                target=self._work, name=f"{self._prefix}-{self._started}", daemon=True
            )
            t.start()

    def _work(self) -> None:
        _local.pool = self
        cv = self._cv
        while True:
            with cv:
                while not self._queue:
                    if self._closed:
                        self._nthreads -= 1
                        return
                    self._idle += 1
                    woke = cv.wait(self._idle_s)
                    self._idle -= 1
                    if not woke and not self._queue:
                        self._nthreads -= 1
                        return
                fut, fn, args, kwargs = self._queue.popleft()
            if fut.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as e:
                    fut.set_exception(e)
                else:
                    fut.set_result(result)
            del fut, fn, args, kwargs

    @contextlib.contextmanager
    def _blocked_section(self) -> Iterator[None]:
        with self._cv:
            self._blocked += 1
            self._maybe_start()
        try:
            yield
        finally:
            with self._cv:
                self._blocked -= 1

    def stats(self) -> dict[str, int]:
        """Threads alive, idle, blocked on the runtime, and queued items (tests, diagnostics)."""
        with self._cv:
            return {
                "threads": self._nthreads,
                "idle": self._idle,
                "blocked": self._blocked,
                "queued": len(self._queue),
            }

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cv:
            self._closed = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[0].cancel()
            self._cv.notify_all()
            if wait and getattr(_local, "pool", None) is not self:
                # the queued work runs first, then each thread sees the pool closed and ends
                while self._nthreads:
                    self._cv.wait(0.05)
        # the runtime passes wait=False: its threads may be blocked in user code (daemons)


@contextlib.contextmanager
def blocking() -> Iterator[None]:
    """Mark the calling thread as blocked waiting for the runtime.

    Inside a :class:`WorkerPool` thread this lets the pool start a replacement thread, so the
    work being waited for is never starved of threads; elsewhere it does nothing. :func:`run_sync`
    uses it; use it around any other wait on parallelrag work made from a worker thread (a
    sync iterator over a stream, a queue fed by the runtime)."""
    pool: WorkerPool | None = getattr(_local, "pool", None)
    if pool is None:
        yield
        return
    with pool._blocked_section():
        yield


class CallbackRunner:
    """Runs user callbacks (progress reports) in order, one at a time, on a worker thread.

    Code on the runtime loop must not call user callbacks itself: a callback that makes a sync
    parallelrag call (``emb.embed``, ``index.search``, ``wf.run``) would block the very loop
    that has to serve it. ``call`` queues the callback and returns at once; a worker thread of
    the runtime's :class:`WorkerPool` runs the queue. An exception from a callback is counted
    in ``errors`` and otherwise ignored (a progress callback must never break the work it
    reports on). ``await aflush()`` / ``flush()`` wait until every queued callback has run::

        cb = CallbackRunner()
        cb.call(progress, report)     # from a coroutine on the runtime loop
        await cb.aflush()             # before returning the final result
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._done: concurrent.futures.Future[None] | None = None
        self.errors = 0

    def call(self, fn: Callable[..., Any], /, *args: Any) -> None:
        """Queue ``fn(*args)``; it runs after every callback queued before it."""
        with self._lock:
            self._queue.append((fn, args))
            if self._done is not None:
                return
            self._done = concurrent.futures.Future()
        get_runtime().executor.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    done, self._done = self._done, None
                    break
                fn, args = self._queue.popleft()
            try:
                fn(*args)
            except Exception:
                self.errors += 1
        if done is not None:
            done.set_result(None)

    async def aflush(self) -> None:
        """Wait (without blocking the loop) until every queued callback has run."""
        with self._lock:
            done = self._done
        if done is not None:
            await asyncio.wrap_future(done)

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued callback has run (not on the runtime thread)."""
        with self._lock:
            done = self._done
        if done is not None:
            with blocking():
                done.result(timeout)


def _park_forever() -> None:
    """A daemon thread woken by the interpreter-exit shutdown: sleep until the interpreter
    ends it, rather than raise (and print) in a process that is finishing."""
    threading.Event().wait()


def _settle_heap() -> None:
    """One full garbage collection when the runtime starts (client construction).

    A fresh process owes the cyclic GC a full collection of everything its imports created
    (numpy, aiohttp, tokenizers...): CPython runs it as soon as enough young objects survive,
    which is during the first burst of requests, the allocation-heavy part of a first call,
    where a full collection shows up as a stall of tens of milliseconds. Paying it here moves that cost from the first call to the start of the runtime, once per process
    (and once in a forked child); nothing runs when the GC is disabled."""
    if gc.isenabled():
        gc.collect()


class Runtime:
    """One asyncio loop on one daemon thread, plus a thread pool for blocking work."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        _settle_heap()
        self.loop = new_loop()
        self.executor = WorkerPool(_WORKER_THREADS, "parallelrag-worker")
        self.loop.set_default_executor(self.executor)
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._state: dict[str, Any] = {}
        self._closed = False
        self._closing = False
        self._exiting = False
        self._late = False  # made for an atexit handler after the exit shutdown
        self._late_calls = 0
        self._pending: set[concurrent.futures.Future[Any]] = set()
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
        if self._closed or self._closing:
            coro.close()
            if self._exiting and threading.current_thread().daemon and not self.on_thread():
                _park_forever()  # a daemon thread calling in during interpreter exit
            raise RuntimeShutdownError("the parallelrag runtime has been shut down")
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)
        return fut

    def _shutdown_error(self) -> RuntimeShutdownError:
        why = "at interpreter exit" if self._exiting else "by runtime.shutdown()"
        return RuntimeShutdownError(
            f"the call was cancelled because the parallelrag runtime was shut down {why}"
        )

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
        # Wait first, then take the result: ``fut.result(timeout)`` raises the same
        # ``TimeoutError`` class for "the wait ran out" and for "the coroutine raised a
        # TimeoutError" (ProviderTimeoutError is one), and the two must not be confused.
        # The wake-up is our own event so that the interpreter-exit shutdown can leave waiting
        # daemon threads asleep: woken while the interpreter finalizes, each would print a
        # traceback (or be torn down mid-way).
        woke = threading.Event()

        def wake(f: concurrent.futures.Future[T]) -> None:
            if not (self._exiting and f.cancelled()):
                woke.set()

        fut.add_done_callback(wake)
        try:
            with blocking():
                done = woke.wait(timeout)
        except BaseException:
            # KeyboardInterrupt / SystemExit while waiting: cancel the work on the loop.
            fut.cancel()
            raise
        if not done:
            fut.cancel()
            raise TimeoutError(f"operation did not finish within {timeout} s")
        if fut.cancelled() and (self._closing or self._closed):
            if self._exiting and threading.current_thread().daemon:
                _park_forever()
            raise self._shutdown_error()
        return fut.result()

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the runtime loop from any loop (bridging when it's another loop)."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - only called from a coroutine
            running = None
        if running is self.loop:
            return await coro
        cfut = self.submit(coro)
        try:
            return await asyncio.wrap_future(cfut)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            own = task is not None and task.cancelling() > 0
            if not own and cfut.cancelled() and (self._closing or self._closed):
                if self._exiting and threading.current_thread().daemon:
                    # a daemon thread's own loop awaiting us at interpreter exit: wait for
                    # good, as sync callers there do, rather than raise (and print)
                    await asyncio.get_running_loop().create_future()
                raise self._shutdown_error() from None
            raise

    async def to_thread(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run blocking ``fn`` in the runtime's worker pool (call from the runtime loop)."""
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return await self.loop.run_in_executor(self.executor, call)

    # ----------------------------------------------------------------- shutdown
    async def _aclose(self) -> None:
        # Cancel the work first, then close sessions: closed first, a session would fail the
        # requests in flight with errors of its own (and retries) instead of a cancellation.
        current = asyncio.current_task()
        end = self.loop.time() + 2.0
        while True:
            tasks = [t for t in asyncio.all_tasks(self.loop) if t is not current and not t.done()]
            left = end - self.loop.time()
            if not tasks or left <= 0:
                break
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=left)
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:  # pragma: no cover - best effort
                pass
        self._closers.clear()
        # let aiohttp's connector finish closing transports
        await asyncio.sleep(0)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Close sessions, cancel pending tasks, stop the loop and join the thread.

        Calls still pending raise :class:`RuntimeShutdownError` in their callers."""
        if self._closed or os.getpid() != self.pid:
            return
        if self.on_thread():  # pragma: no cover - misuse
            raise RuntimeUsageError("shutdown() cannot be called on the runtime thread")
        self._closing = True
        try:
            fut = asyncio.run_coroutine_threadsafe(self._aclose(), self.loop)
            fut.result(timeout)
        except Exception:  # pragma: no cover - best effort at exit
            pass
        self._closed = True
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
        if not self._exiting:  # at exit, idle workers are left asleep (daemons, see run_sync)
            self.executor.shutdown(wait=False, cancel_futures=True)
        # whatever the loop did not finish (a task that ignored its cancellation): wake its
        # waiters, who raise RuntimeShutdownError, rather than leave them blocked for good
        for f in list(self._pending):
            f.cancel()


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
        if rt is not None and rt._exiting and rt.pid == os.getpid():
            if rt._closed and threading.get_ident() == threading.main_thread().ident:
                # an atexit handler registered before ours (atexit runs last-in, first-out)
                # calls in after the exit shutdown: a runtime of its own, closed when that
                # call returns (see _late_call)
                rt = Runtime()
                rt._late = True
                _runtime = rt
            return rt  # interpreter exit: no new runtime for other threads (they raise or park)
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
    rt = get_runtime()
    if not rt._late:
        return rt.run_sync(coro, timeout=timeout, alternative=alternative)
    with _late_call(rt):
        return rt.run_sync(coro, timeout=timeout, alternative=alternative)


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await a coroutine on the runtime loop from whatever loop the caller runs on."""
    rt = get_runtime()
    if not rt._late:
        return await rt.run_async(coro)
    with _late_call(rt):
        return await rt.run_async(coro)


@contextlib.contextmanager
def _late_call(rt: Runtime) -> Iterator[None]:
    """Close a runtime made for a call from an atexit handler when that call returns.

    Nothing runs after the atexit handlers that could close it later, so each such call gets
    a runtime of its own (its HTTP sessions close, nothing is left running); concurrent calls
    of one handler (``asyncio.gather``) share it until the last returns, and so do calls made
    from its worker threads (a sync tool)."""
    if threading.get_ident() != threading.main_thread().ident:
        yield
        return
    rt._late_calls += 1
    try:
        yield
    finally:
        rt._late_calls -= 1
        if rt._late_calls == 0:  # the last of the handler's concurrent calls (a gather)
            rt._exiting = True  # the next call from the main thread gets a fresh one
            rt.shutdown()


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


def _shutdown_at_exit() -> None:
    rt = _runtime
    if rt is not None:
        rt._exiting = True
        rt.shutdown()


def _after_fork_in_child() -> None:
    global _runtime, _lock
    _runtime = None
    _lock = threading.Lock()
    for pool in list(_pools):
        pool._after_fork()
    for hook in _fork_hooks:
        try:
            hook()
        except Exception:  # pragma: no cover
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown_at_exit)
