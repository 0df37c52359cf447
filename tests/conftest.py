"""Shared fixtures: a simulated provider server on 127.0.0.1 (real HTTP, no mocks)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
for _name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
              # a developer's proxy settings must not route the tests' 127.0.0.1 traffic
              "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
              "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
    os.environ.pop(_name, None)

from parallelrag.sim import SimConfig, SimServer  # noqa: E402


@pytest.fixture
def make_sim() -> Iterator[Callable[..., SimServer]]:
    """Factory: ``srv = make_sim(latency=0.2, rpm=600)`` starts a sim; all stop at teardown."""
    servers: list[SimServer] = []

    def factory(**cfg: Any) -> SimServer:
        srv = SimServer(SimConfig(**cfg))
        srv.start()
        servers.append(srv)
        return srv

    yield factory
    for srv in servers:
        srv.stop()


@pytest.fixture
def sim(make_sim: Callable[..., SimServer]) -> SimServer:
    """A zero-latency sim."""
    return make_sim(latency=0.0)


class Ticker:
    """A pure-Python counter thread: measures how much the GIL lets other Python code run."""

    def __init__(self) -> None:
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            for _ in range(1000):
                n += 1
            self.count = n

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def ticker_rate(seconds: float) -> float:
    """The ticker's rate (counts/s) with nothing else running."""
    with Ticker() as t:
        time.sleep(seconds)
        return t.count / seconds


def ticker_ratio_during(fn: Callable[[], object], idle_seconds: float = 0.5) -> tuple[float, Any]:
    """Run ``fn`` while a ticker runs; returns (ticker rate during fn / idle rate, fn's result)."""
    idle = ticker_rate(idle_seconds)
    with Ticker() as t:
        t0 = time.perf_counter()
        c0 = t.count
        result = fn()
        elapsed = time.perf_counter() - t0
        busy = (t.count - c0) / elapsed
    return busy / idle, result


@pytest.fixture
def ticker_ratio() -> Callable[..., tuple[float, Any]]:
    return ticker_ratio_during
