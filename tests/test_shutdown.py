"""Runtime shutdown: calls it cancels raise RuntimeShutdownError (a ParallelRagError that says
so), and calls still in flight on daemon threads at interpreter exit print nothing."""

from __future__ import annotations

import re
from collections.abc import Callable

from parallelrag.errors import ParallelRagError, RuntimeUsageError
from parallelrag.sim import SimServer
from proc_helpers import run_script

_EXIT_SCRIPT = r"""
import sys, threading, time
from parallelrag import LlmClient
llm = LlmClient.openai("m", base_url=sys.argv[1], api_key="sk-x")
def call():
    llm.complete("hello")  # the sim holds it for 30 s: still in flight at exit
for _ in range(41):
    threading.Thread(target=call, daemon=True).start()
deadline = time.monotonic() + 30
while llm.stats()["provider"]["in_flight"] < 32 and time.monotonic() < deadline:
    time.sleep(0.01)  # 32 sent (the initial concurrency limit), 9 queued behind them
print("exiting", llm.stats()["provider"]["in_flight"], flush=True)
"""

_SHUTDOWN_SCRIPT = r"""
import asyncio, sys, threading, time
from parallelrag import LlmClient, runtime
llm = LlmClient.openai("m", base_url=sys.argv[1], api_key="sk-x")
seen = {}
def sync_call():
    try:
        llm.complete("hello")
    except BaseException as e:
        seen["sync"] = e
def async_call():
    try:
        asyncio.run(llm.acomplete("hello"))
    except BaseException as e:
        seen["async"] = e
ts = [threading.Thread(target=sync_call), threading.Thread(target=async_call)]
for t in ts: t.start()
deadline = time.monotonic() + 30
while llm.stats()["provider"]["in_flight"] < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
runtime.shutdown()
for t in ts: t.join(10)
for k in ("sync", "async"):
    e = seen.get(k)
    print(k, type(e).__module__ + "." + type(e).__name__, str(e).replace("\n", " "))
"""


def test_calls_in_flight_on_daemon_threads_at_exit_print_nothing(
    make_sim: Callable[..., SimServer],
) -> None:
    srv = make_sim(latency=30.0)
    ran = run_script(_EXIT_SCRIPT, srv.url, timeout=60)
    assert ran.rc == 0, ran.err[-3000:]
    # at least the initial limit of 32 in flight at exit (the adaptive limit may have grown)
    m = re.search(r"exiting (\d+)", ran.out)
    assert m is not None and int(m.group(1)) >= 32, ran.out
    assert "Traceback" not in ran.err, ran.err[-3000:]
    assert len(ran.err.splitlines()) <= 2, ran.err[-3000:]


def test_a_call_cancelled_by_shutdown_raises_runtime_shutdown_error(
    make_sim: Callable[..., SimServer],
) -> None:
    from parallelrag.errors import RuntimeShutdownError

    srv = make_sim(latency=30.0)
    ran = run_script(_SHUTDOWN_SCRIPT, srv.url, timeout=60)
    assert ran.rc == 0, ran.err[-3000:]
    lines = dict(line.split(" ", 1) for line in ran.out.splitlines())
    for kind in ("sync", "async"):
        assert lines[kind].startswith("parallelrag.errors.RuntimeShutdownError "), ran.out
        assert "shut down" in lines[kind]
    assert issubclass(RuntimeShutdownError, RuntimeUsageError)
    assert issubclass(RuntimeShutdownError, ParallelRagError)
