"""Proxies: HTTP(S)_PROXY / ALL_PROXY / NO_PROXY from the environment (either case) and an explicit
``proxy=`` on the provider classes, through a small forward proxy on 127.0.0.1 (absolute-form for
http:// targets, CONNECT for https:// targets)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from http_servers import Proxy, SimOver, tls_pair

from parallelrag import LlmClient
from parallelrag.errors import ConfigError
from parallelrag.providers.anthropic import AnthropicChat, AnthropicCompat
from parallelrag.providers.chat_openai import OpenAIChat
from parallelrag.providers.openai import OpenAICompat
from parallelrag.runtime import get_runtime
from parallelrag.sim import SimServer, sim_reply

_PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
               "ALL_PROXY", "no_proxy", "NO_PROXY")


@pytest.fixture(autouse=True)
def _clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    with Proxy() as p:
        yield p


def _llm(base_url: str, model: str = "m", **kw: object) -> LlmClient:
    return LlmClient(OpenAIChat(OpenAICompat(model=model, base_url=base_url, api_key="sk-x", **kw)))  # type: ignore[arg-type]


def _targets(p: Proxy) -> list[tuple[str, str]]:
    return [(m, t) for m, t, _ in p.seen]


@pytest.mark.parametrize("var", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
def test_env_proxy_for_http_target_uses_absolute_form(
    proxy: Proxy, sim: SimServer, monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    monkeypatch.setenv(var, proxy.url)
    llm = _llm(sim.url, model=f"proxied-{var}")
    assert llm.complete("through the proxy") == sim_reply(f"proxied-{var}", "through the proxy")
    # streaming goes the same way
    assert "".join(llm.stream("streamed too")) == sim_reply(f"proxied-{var}", "streamed too")
    assert _targets(proxy) == [("POST", f"{sim.url}/chat/completions")] * 2


def test_env_proxy_for_https_target_uses_connect(
    proxy: Proxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server_ctx, ca = tls_pair(tmp_path)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # not for https targets
    with SimOver(tls=server_ctx) as srv:
        llm = _llm(srv.url, model="tls-model", verify=ca)
        assert llm.complete("secret question") == sim_reply("tls-model", "secret question")
        assert "".join(llm.stream("again")) == sim_reply("tls-model", "again")
        assert srv.requests == 2
    # one tunnel (the connection is kept alive for the second request) or two: always CONNECT
    assert proxy.seen and all(t == ("CONNECT", f"127.0.0.1:{srv.port}") for t in _targets(proxy))


def test_no_proxy_bypasses(proxy: Proxy, sim: SimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
    assert _llm(sim.url, model="np").complete("direct") == sim_reply("np", "direct")
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.setenv("no_proxy", "*")
    assert _llm(sim.url, model="np").complete("direct2") == sim_reply("np", "direct2")
    assert proxy.seen == []
    monkeypatch.setenv("no_proxy", "example.com")  # not ours: proxied again
    assert _llm(sim.url, model="np").complete("proxied") == sim_reply("np", "proxied")
    assert _targets(proxy) == [("POST", f"{sim.url}/chat/completions")]


def test_explicit_proxy_wins_over_env(
    proxy: Proxy, sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    llm = _llm(sim.url, model="explicit", proxy=proxy.url)
    assert llm.complete("hi") == sim_reply("explicit", "hi")
    assert _targets(proxy) == [("POST", f"{sim.url}/chat/completions")]


def test_proxy_credentials_go_to_the_proxy_only(proxy: Proxy, sim: SimServer) -> None:
    url = f"http://user:p%40ss@127.0.0.1:{proxy.port}"
    api = OpenAICompat(model="emb", base_url=sim.url, api_key="sk-x", proxy=url)
    vecs, _ = get_runtime().run_sync(api.embed_once(["a", "b"], dimensions=None))
    assert vecs.shape[0] == 2
    (method, target, headers), = proxy.seen
    assert (method, target) == ("POST", f"{sim.url}/embeddings")
    assert headers["proxy-authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss
    assert headers["authorization"] == "Bearer sk-x"


def test_anthropic_provider_takes_proxy(proxy: Proxy, sim: SimServer) -> None:
    api = AnthropicCompat(model="claude-x", base_url=sim.base, api_key="k", proxy=proxy.url)
    llm = LlmClient(AnthropicChat(api))
    assert llm.complete("hola") == sim_reply("claude-x", "hola")
    assert _targets(proxy) == [("POST", f"{sim.base}/v1/messages")]


def test_unsupported_proxy_scheme_is_a_config_error(
    sim: SimServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALL_PROXY", "socks5://127.0.0.1:9")
    with pytest.raises(ConfigError, match="ALL_PROXY"):
        _llm(sim.url).complete("x")
    with pytest.raises(ConfigError, match="proxy"):
        OpenAICompat(model="m", base_url=sim.url, proxy="ftp://127.0.0.1:9")


def test_proxy_credentials_ride_on_connect_for_https(proxy: Proxy, tmp_path: Path) -> None:
    server_ctx, ca = tls_pair(tmp_path)
    with SimOver(tls=server_ctx) as srv:
        url = f"http://u:secret-pw@127.0.0.1:{proxy.port}"
        llm = _llm(srv.url, model="tls-auth", verify=ca, proxy=url)
        assert llm.complete("q") == sim_reply("tls-auth", "q")
    (method, target, headers), = proxy.seen
    assert (method, target) == ("CONNECT", f"127.0.0.1:{srv.port}")
    assert headers["proxy-authorization"] == "Basic dTpzZWNyZXQtcHc="  # u:secret-pw
    assert "secret-pw" not in repr(OpenAICompat(model="m", base_url=srv.url, proxy=url).http)
