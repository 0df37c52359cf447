"""Helpers for workflow tests."""

from __future__ import annotations

import json
from typing import Any

from parallelrag.sim import SimServer


def make_llm(srv: SimServer, provider: str = "openai") -> Any:
    """An LlmClient pointed at the sim."""
    from parallelrag.llm import LlmClient

    if provider == "anthropic":
        return LlmClient.anthropic("claude-sim", api_key="sk-ant-test", base_url=srv.base)
    return LlmClient.openai("gpt-sim", base_url=srv.url, api_key="sk-test")


def directive(name: str, **args: Any) -> str:
    """A sim directive: the model will call tool ``name`` with ``args``."""
    return f"[[tool:{name} {json.dumps(args)}]]"
