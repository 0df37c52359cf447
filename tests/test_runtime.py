"""The runtime: run_sync from any context, GIL-free waiting, fork, misuse, clean exit."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from parallelrag import runtime
from parallelrag.errors import RuntimeUsageError
from parallelrag.sim import SimServer
from proc_helpers import in_forked_child


async def _work(x: int, delay: float = 0.01) -> tuple[int, int | None]:
    await asyncio.sleep(delay)
    return x * 2, threading.get_ident()


def test_run_sync_from_64_threads() -> None:
    results: dict[int, int] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(64)

    def worker(i: int) -> None:
        try:
            barrier.wait()
            value, _ = runtime.run_sync(_work(i, 0.05))
            results[i] = value
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    assert not errors
    assert results == {i: 2 * i for i in range(64)}
    # all 64 waited concurrently on the one loop: far less than 64 × 50 ms
    assert elapsed < 64 * 0.05 / 4


def test_runs_on_the_runtime_thread() -> None:
    _, ident = runtime.run_sync(_work(1))
    assert ident == runtime.get_runtime().thread.ident
    assert ident != threading.get_ident()


def test_run_sync_inside_asyncio_run() -> None:
    async def main() -> int:
        # a sync call from inside the user's running loop must not raise "loop already running"
        value, _ = runtime.run_sync(_work(21))
        return value

    assert asyncio.run(main()) == 42


def test_run_sync_from_thread_started_inside_running_loop() -> None:
    async def main() -> int:
        out: list[int] = []

        def in_thread() -> None:
            out.append(runtime.run_sync(_work(5))[0])

        t = threading.Thread(target=in_thread)
        t.start()
        await asyncio.get_running_loop().run_in_executor(None, t.join)
        return out[0]

    assert asyncio.run(main()) == 10


def test_run_async_bridges_from_foreign_loop() -> None:
    async def main() -> tuple[int, int | None]:
        return await runtime.run_async(_work(4))

    value, ident = asyncio.run(main())
    assert value == 8
    assert ident == runtime.get_runtime().thread.ident


def test_blocking_call_on_runtime_thread_raises_clear_error() -> None:
    async def misuse() -> None:
        runtime.run_sync(_work(1), alternative="await client.aembed(...)")

    with pytest.raises(RuntimeUsageError) as info:
        runtime.run_sync(misuse(), timeout=5)
    assert "await client.aembed(...)" in str(info.value)
    assert "deadlock" in str(info.value)


def test_to_thread_runs_off_the_loop() -> None:
    loop_ident = runtime.get_runtime().thread.ident

    async def main() -> int | None:
        return await runtime.to_thread(threading.get_ident)

    assert runtime.run_sync(main()) != loop_ident
    assert asyncio.run(main()) != loop_ident


def test_sync_call_from_to_thread_worker_works() -> None:
    """A sync tool running in a worker thread may call any sync API (nested run_sync)."""

    def sync_tool() -> int:
        return runtime.run_sync(_work(3))[0]

    async def main() -> int:
        return await runtime.to_thread(sync_tool)

    assert runtime.run_sync(main(), timeout=10) == 6


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fresh_runtime_after_fork() -> None:
    parent_rt = runtime.get_runtime()
    runtime.run_sync(_work(1))

    def child() -> bool:
        value, ident = runtime.run_sync(_work(7), timeout=10)
        rt = runtime.get_runtime()
        return value == 14 and rt is not parent_rt and ident == rt.thread.ident

    assert in_forked_child(child)
    assert runtime.get_runtime() is parent_rt


def test_gil_released_while_8_threads_wait_on_sim(
    make_sim: Callable[..., SimServer], ticker_ratio: Callable[..., tuple[float, Any]]
) -> None:
    from parallelrag import EmbeddingClient

    srv = make_sim(latency=0.2)
    emb = EmbeddingClient.openai("text-embedding-3-small", base_url=srv.url, api_key="sk-test",
                                 dimensions=8)

    def eight_threads() -> int:
        done = []

        def call(i: int) -> None:
            for _ in range(3):
                done.append(emb.embed(f"text {i}").shape[0])

        ts = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return len(done)

    ratio, calls = ticker_ratio(eight_threads)
    print(f"ticker kept {ratio:.2f} of its idle rate while 8 threads waited on 200 ms calls")
    assert calls == 24
    assert ratio >= 0.5


def test_clean_exit_no_warnings(sim: SimServer, tmp_path: Any) -> None:
    script = tmp_path / "s.py"
    script.write_text(
        "import warnings, sys\n"
        "warnings.simplefilter('always')\n"
        "from parallelrag import EmbeddingClient\n"
        f"e = EmbeddingClient.openai('m', base_url={sim.url!r}, api_key='sk-x', dimensions=4)\n"
        "print(e.embed_many(['a', 'b']).shape)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-X", "dev", str(script)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "(2, 4)" in proc.stdout
    for bad in ("Task was destroyed", "Unclosed", "never awaited", "Traceback"):
        assert bad not in proc.stderr, proc.stderr


_LOOP_SCRIPT = """
import asyncio, os, sys, threading
from parallelrag import EmbeddingClient, LlmClient
from parallelrag.runtime import get_runtime, run_sync
url = sys.argv[1]
loop = get_runtime().loop
print("loop", type(loop).__module__.split(".")[0])
emb = EmbeddingClient.openai("m", base_url=url, api_key="sk-x", dimensions=4)
llm = LlmClient.openai("m", base_url=url, api_key="sk-x")
shapes = []
ts = [threading.Thread(target=lambda: shapes.append(emb.embed_many(["a", "b", "c"]).shape))
      for _ in range(16)]
for t in ts: t.start()
for t in ts: t.join()
print("threads", len(shapes), set(shapes))
async def inside():  # a sync call from inside a running loop, and the async twin
    return llm.complete("ping"), await llm.acomplete("pong")
print("inside", asyncio.run(inside()) == (llm.complete("ping"), llm.complete("pong")))
out = llm.complete_many([f"q{i}" for i in range(50)])
print("ordered", out == [llm.complete(f"q{i}") for i in range(50)])
pid = os.fork()
if pid == 0:
    ok = get_runtime().loop is not loop and emb.embed("x").shape == (4,)
    os._exit(0 if ok else 3)
print("fork", os.waitpid(pid, 0)[1] == 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("choice", ["asyncio", "uvloop", "auto"])
def test_each_event_loop_choice_runs_the_clients(sim: SimServer, choice: str) -> None:
    """PARALLELRAG_LOOP picks the runtime's loop; the clients work the same on each: 16
    threads, a sync call inside asyncio.run, an ordered batch and a fork."""
    uvloop_here = True
    try:
        import uvloop  # noqa: F401
    except ImportError:
        uvloop_here = False
    if choice == "uvloop" and not uvloop_here:
        pytest.skip("uvloop is not installed on this platform")
    env = dict(os.environ, PARALLELRAG_LOOP=choice)
    proc = subprocess.run([sys.executable, "-c", _LOOP_SCRIPT, sim.url], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    want = "asyncio" if choice == "asyncio" or not uvloop_here else "uvloop"
    assert f"loop {want}" in proc.stdout
    assert "threads 16 {(3, 4)}" in proc.stdout
    for line in ("inside True", "ordered True", "fork True"):
        assert line in proc.stdout, proc.stdout


def test_unknown_event_loop_choice_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from parallelrag.errors import ConfigError

    monkeypatch.setenv("PARALLELRAG_LOOP", "trio")
    with pytest.raises(ConfigError, match="PARALLELRAG_LOOP"):
        runtime.new_loop()


def test_runtime_starts_with_the_client_and_settles_the_heap() -> None:
    """Constructing a client starts the runtime (loop thread) and runs the one full collection
    a fresh process owes the GC, so neither lands inside the first call."""
    script = (
        "import gc, threading\n"
        "from parallelrag import LlmClient, runtime\n"
        "full = []\n"
        "gc.callbacks.append(lambda ph, info: ph == 'start' and info['generation'] == 2"
        " and full.append(1))\n"
        "assert runtime._runtime is None\n"
        "LlmClient.openai('m', base_url='http://127.0.0.1:9/v1', api_key='sk-x')\n"
        "names = [t.name for t in threading.enumerate()]\n"
        "print('runtime', runtime._runtime is not None, 'parallelrag-runtime' in names)\n"
        "print('full collections', len(full))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "runtime True True" in proc.stdout
    assert "full collections 1" in proc.stdout


# --------------------------------------------------------------------------- nested waits
def test_worker_pool_replaces_threads_blocked_on_the_runtime() -> None:
    """A pool of 2 runnable threads, 16 tasks that each block on runtime work which itself
    needs a thread of the same pool: all finish (blocked waiters do not count)."""
    pool = runtime.WorkerPool(2, "test-pool")
    rt = runtime.get_runtime()

    async def needs_pool() -> int:
        return await rt.loop.run_in_executor(pool, lambda: 7)

    def waiter() -> int:
        return runtime.run_sync(needs_pool(), timeout=30)

    try:
        futs = [pool.submit(waiter) for _ in range(16)]
        assert [f.result(60) for f in futs] == [7] * 16
        stats = pool.stats()
        assert stats["blocked"] == 0 and stats["queued"] == 0
    finally:
        pool.shutdown(wait=False)


def test_worker_pool_runs_at_most_limit_threads_that_do_not_block() -> None:
    pool = runtime.WorkerPool(3, "test-pool")
    running = 0
    peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    try:
        for f in [pool.submit(work) for _ in range(30)]:
            f.result(30)
        assert 1 <= peak <= 3
    finally:
        pool.shutdown(wait=False)


def test_callback_runner_runs_user_callbacks_off_the_loop_in_order() -> None:
    """Callbacks queued from the runtime loop run in order on a worker thread, where a sync
    parallelrag call (run_sync) works; aflush waits for all of them."""
    seen: list[tuple[int, int]] = []
    loop_ident = runtime.get_runtime().thread.ident

    def callback(i: int) -> None:
        assert threading.get_ident() != loop_ident
        seen.append((i, runtime.run_sync(_work(i))[0]))

    def broken(i: int) -> None:
        raise ValueError(i)

    async def on_loop() -> int:
        cb = runtime.CallbackRunner()
        for i in range(20):
            cb.call(callback, i)
            if i == 10:
                cb.call(broken, i)
        await cb.aflush()
        return cb.errors

    assert runtime.run_sync(on_loop(), timeout=30) == 1
    assert seen == [(i, 2 * i) for i in range(20)]


def test_run_sync_timeout_is_distinct_from_a_timeout_error_raised_by_the_call() -> None:
    class MyTimeout(TimeoutError):
        pass

    async def raises() -> None:
        raise MyTimeout("from the call")

    with pytest.raises(MyTimeout, match="from the call"):
        runtime.run_sync(raises(), timeout=10)
    with pytest.raises(TimeoutError, match=r"within 0\.05 s"):
        runtime.run_sync(asyncio.sleep(5), timeout=0.05)
