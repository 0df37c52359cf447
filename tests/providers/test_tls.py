"""TLS: certificate failures are ProviderConnectionError with the reason (not BadRequestError); a
private CA is trusted through ``verify=`` (a CA file or an SSLContext) or ``SSL_CERT_FILE``."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_servers import SimOver, tls_pair

from parallelrag import LlmClient
from parallelrag.errors import ConfigError, ProviderConnectionError, TLSVerificationError
from parallelrag.providers.anthropic import AnthropicChat, AnthropicCompat
from parallelrag.providers.chat_openai import OpenAIChat
from parallelrag.providers.openai import OpenAICompat
from parallelrag.resilience import ResilienceConfig
from parallelrag.resilience.retry import RetryPolicy
from parallelrag.sim import sim_reply


@pytest.fixture
def tls_sim(tmp_path: Path) -> Iterator[tuple[SimOver, str]]:
    ctx, ca = tls_pair(tmp_path)
    with SimOver(tls=ctx) as srv:
        yield srv, ca


def _once() -> ResilienceConfig:
    return ResilienceConfig(retry=RetryPolicy(max_attempts=1))


def test_untrusted_certificate_is_a_connection_error(tls_sim: tuple[SimOver, str]) -> None:
    srv, _ = tls_sim
    llm = LlmClient(OpenAIChat(OpenAICompat(
        model="tls-a", base_url=srv.url, api_key="k", resilience=_once())))
    with pytest.raises(ProviderConnectionError) as ei:
        llm.complete("x")
    assert isinstance(ei.value, TLSVerificationError)
    msg = str(ei.value)
    assert "certificate" in msg.lower() and "verify failed" in msg.lower(), msg
    assert srv.url.split("/v1")[0] in msg  # says where
    assert srv.requests == 0
    # the same for streaming and for Anthropic
    with pytest.raises(ProviderConnectionError, match="certificate"):
        "".join(llm.stream("x"))
    anth = LlmClient(AnthropicChat(AnthropicCompat(
        model="tls-b", base_url=srv.url.removesuffix("/v1"), api_key="k", resilience=_once())))
    with pytest.raises(ProviderConnectionError, match="certificate"):
        anth.complete("x")


def test_hostname_mismatch_is_a_connection_error(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("other.example").configure_cert(ctx)
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    with SimOver(tls=ctx) as srv:
        llm = LlmClient(OpenAIChat(OpenAICompat(
            model="tls-c", base_url=srv.url, api_key="k", verify=str(pem), resilience=_once())))
        with pytest.raises(TLSVerificationError, match=r"(?i)hostname|match|certificate"):
            llm.complete("x")


def test_private_ca_through_verify_file_or_context(tls_sim: tuple[SimOver, str]) -> None:
    srv, ca = tls_sim
    llm = LlmClient(OpenAIChat(OpenAICompat(model="tls-d", base_url=srv.url, verify=ca)))
    assert llm.complete("over tls") == sim_reply("tls-d", "over tls")
    assert "".join(llm.stream("stream tls")) == sim_reply("tls-d", "stream tls")
    ctx = ssl.create_default_context(cafile=ca)
    llm2 = LlmClient(OpenAIChat(OpenAICompat(model="tls-e", base_url=srv.url, verify=ctx)))
    assert llm2.complete("ctx") == sim_reply("tls-e", "ctx")
    assert srv.requests == 3


def test_private_ca_through_ssl_cert_file(
    tls_sim: tuple[SimOver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    srv, ca = tls_sim
    monkeypatch.setenv("SSL_CERT_FILE", ca)
    llm = LlmClient(OpenAIChat(OpenAICompat(model="tls-f", base_url=srv.url)))
    assert llm.complete("env ca") == sim_reply("tls-f", "env ca")


def test_verify_false_skips_checks(tls_sim: tuple[SimOver, str]) -> None:
    srv, _ = tls_sim
    llm = LlmClient(OpenAIChat(OpenAICompat(model="tls-g", base_url=srv.url, verify=False)))
    assert llm.complete("insecure") == sim_reply("tls-g", "insecure")


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CA"):
        OpenAICompat(model="m", base_url="https://127.0.0.1:9/v1",
                     verify=str(tmp_path / "nope.pem"))


def test_an_untrusted_certificate_is_not_retried(tls_sim: tuple[SimOver, str]) -> None:
    """Default retry policy: the same handshake would fail the same way, so one attempt."""
    srv, _ = tls_sim
    llm = LlmClient(OpenAIChat(OpenAICompat(model="tls-noretry", base_url=srv.url,
                                            api_key="k")))
    with pytest.raises(TLSVerificationError):
        llm.complete("x")
    assert llm.stats()["provider"]["requests"] == 1
