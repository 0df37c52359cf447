"""``proxy=`` on the client constructors reaches every request (issue 13).

Uses the forward proxy of ``tests/providers/http_servers.py`` (it records each request it
forwards); the targets are sims on 127.0.0.1.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "providers"))
from http_servers import Proxy

from parallelrag import EmbeddingClient, LlmClient
from parallelrag.sim import SimServer, sim_embedding, sim_reply

KEY = "sk-proxy-client-test-123456"


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    with Proxy() as p:
        yield p


def test_llm_constructors_take_proxy(proxy: Proxy, sim: SimServer) -> None:
    oa = LlmClient.openai("px-openai", base_url=sim.url, api_key=KEY, proxy=proxy.url)
    assert oa.complete("hello") == sim_reply("px-openai", "hello")
    assert "".join(oa.stream("streamed")) == sim_reply("px-openai", "streamed")
    az = LlmClient.azure("px-dep", endpoint=sim.base, api_key=KEY, proxy=proxy.url)
    assert az.complete("hi azure") == sim_reply("px-dep", "hi azure")
    an = LlmClient.anthropic("px-claude", api_key=KEY, base_url=sim.base, proxy=proxy.url)
    assert an.complete("hi claude", max_tokens=50) == sim_reply("px-claude", "hi claude")
    targets = [t for _, t, _ in proxy.seen]
    assert targets[:2] == [f"{sim.url}/chat/completions"] * 2
    assert targets[2].startswith(f"{sim.base}/openai/deployments/px-dep/chat/completions")
    assert targets[3] == f"{sim.base}/v1/messages"
    assert len(targets) == 4


def test_embedding_constructors_take_proxy(proxy: Proxy, sim: SimServer) -> None:
    emb = EmbeddingClient.openai("px-emb", base_url=sim.url, api_key=KEY, dimensions=8,
                                 proxy=proxy.url)
    assert np.allclose(emb.embed("x"), sim_embedding("px-emb", "x", 8), atol=1e-6)
    az = EmbeddingClient.azure("px-edep", endpoint=sim.base, api_key=KEY, dimensions=8,
                               proxy=proxy.url)
    assert np.allclose(az.embed("y"), sim_embedding("px-edep", "y", 8), atol=1e-6)
    targets = [t for _, t, _ in proxy.seen]
    assert targets[0] == f"{sim.url}/embeddings"
    assert targets[1].startswith(f"{sim.base}/openai/deployments/px-edep/embeddings")
    # the spec keeps a proxy without credentials, and never one with them
    assert f"proxy={proxy.url}" in emb.spec
    again = EmbeddingClient.from_url(emb.spec, api_key=KEY)
    again.embed("through the rebuilt client")
    assert len(proxy.seen) == 3
    secret = EmbeddingClient.openai("px-emb2", base_url=sim.url, api_key=KEY,
                                    proxy=f"http://user:pw-secret@127.0.0.1:{proxy.port}")
    assert "pw-secret" not in secret.spec and "proxy" not in secret.spec
