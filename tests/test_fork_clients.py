"""Fork-safe clients: a client made before ``os.fork()`` works in the child although the parent
had calls queued for the rate limiter (rpm) or for a concurrency slot at fork time.

Each scenario runs in a child process (killed with its process group after a bound); inside it
the forked grandchild gets 30 s for one call with the parent's client, then is killed by
process group, so a hang fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from parallelrag.sim import SimServer
from proc_helpers import run_script

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

_SCRIPT = r"""
import gc, os, signal, sys, threading, time
from parallelrag import LlmClient

mode, url = sys.argv[1], sys.argv[2]
if mode == "rpm":
    llm = LlmClient.openai("m", base_url=url, api_key="sk-x", rpm=30)
else:
    llm = LlmClient.openai("m", base_url=url, api_key="sk-x", max_concurrency=2, adaptive=False)
for i in range(6):
    threading.Thread(target=llm.complete, args=(f"parent {i}",), daemon=True).start()

[res] = [o for o in gc.get_objects() if type(o).__name__ == "Resilience"]
def queued():
    if mode == "rpm":
        return res.rate_limiter.snapshot()["waiting"] >= 4
    return res.limiter.in_flight == 2 and res.limiter.waiting >= 4
deadline = time.monotonic() + 30
while not queued():
    if time.monotonic() > deadline:
        print("parent never queued"); sys.exit(5)
    time.sleep(0.01)

pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    try:
        out = llm.complete("child")
        os._exit(0 if isinstance(out, str) and out else 3)
    except BaseException:
        import traceback; traceback.print_exc()
        os._exit(4)
t_end = time.monotonic() + 30
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child exit", os.waitstatus_to_exitcode(status), flush=True)
        break
    if time.monotonic() > t_end:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print("child hung", flush=True)
        break
    time.sleep(0.05)
os._exit(0)
"""


@pytest.mark.parametrize("mode", ["rpm", "concurrency"])
def test_child_call_with_the_parents_client_finishes(
    mode: str, make_sim: Callable[..., SimServer]
) -> None:
    # the parent's calls stay in flight (or queued) for the whole test
    srv = make_sim(latency=5.0 if mode == "concurrency" else 0.0)
    ran = run_script(_SCRIPT, mode, srv.url, timeout=90)
    assert ran.rc == 0, (ran.out, ran.err[-3000:])
    assert "child exit 0" in ran.out, (ran.out, ran.err[-3000:])
