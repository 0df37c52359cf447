"""Run a Python script in a child process of its own group; a hang fails the test (the group is
killed), it never hangs the suite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
TESTS = str(Path(__file__).resolve().parent)


@dataclass
class Ran:
    rc: int | None  # None: killed after the timeout (a hang)
    out: str
    err: str


def run_script(script: str, *args: str, timeout: float = 120.0) -> Ran:
    """``python -c script args...``; rc None when it had to be killed after ``timeout`` s."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (env.get("PYTHONPATH"), SRC, TESTS) if p
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        return Ran(proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # pragma: no cover - ended meanwhile
            pass
        out, err = proc.communicate()
        return Ran(None, out, err)


def in_forked_child(check: Callable[[], bool]) -> bool:
    """Run ``check`` in a child of ``os.fork()`` and return what it returned there (False when
    it raised); the child always ends with ``os._exit``, so no test machinery runs twice."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(r)
            os.write(w, b"ok" if check() else b"bad")
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    msg = os.read(r, 10)
    os.close(r)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return msg == b"ok"
