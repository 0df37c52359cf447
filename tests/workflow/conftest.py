"""Fixtures for workflow tests: a sim LLM server and clients pointed at it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from wf_helpers import make_llm

from parallelrag.sim import SimServer


@pytest.fixture
def fast_sim(make_sim: Callable[..., SimServer]) -> SimServer:
    return make_sim(latency=0.01)


@pytest.fixture
def llm(fast_sim: SimServer) -> Any:
    return make_llm(fast_sim)
