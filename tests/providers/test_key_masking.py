"""The API key never shows in a repr, header dicts included: a traceback that captures local
variables (as Sentry, rich and ``TracebackException(capture_locals=True)`` do) of a failing request
(401 from the sim, connection refused, timeout), OpenAI-style and Anthropic, plain and streaming,
never contains it."""

from __future__ import annotations

import asyncio
import socket
import traceback
from collections.abc import Callable, Iterator

import pytest
from http_servers import Scripted

from parallelrag import LlmClient
from parallelrag.config import MaskedStr
from parallelrag.errors import AuthenticationError, ProviderConnectionError, ProviderTimeoutError
from parallelrag.providers.anthropic import AnthropicChat, AnthropicCompat
from parallelrag.providers.chat_openai import OpenAIChat
from parallelrag.providers.openai import OpenAICompat
from parallelrag.resilience import ResilienceConfig
from parallelrag.resilience.retry import RetryPolicy
from parallelrag.runtime import get_runtime
from parallelrag.sim import SimServer

KEY = "sk-test-SECRET123"
SECRET = "SECRET123"
_n = iter(range(10**6))


def _client(kind: str, url: str, **kw: object) -> LlmClient:
    once = ResilienceConfig(retry=RetryPolicy(max_attempts=1))
    model = f"mask-{kind}-{next(_n)}"
    if kind == "anthropic":
        return LlmClient(AnthropicChat(AnthropicCompat(
            model=model, base_url=url, api_key=KEY, resilience=once, **kw)))  # type: ignore[arg-type]
    if kind == "azure":
        return LlmClient(OpenAIChat(OpenAICompat(
            model=model, azure_endpoint=url, azure_deployment=model, api_key=KEY,
            resilience=once, **kw)))  # type: ignore[arg-type]
    return LlmClient(OpenAIChat(OpenAICompat(
        model=model, base_url=url + "/v1", api_key=KEY, resilience=once, **kw)))  # type: ignore[arg-type]


def _traceback_text(fn: Callable[[], object], expected: type[BaseException],
                    mode: str) -> str:
    with pytest.raises(expected) as ei:
        fn()
    te = traceback.TracebackException.from_exception(ei.value, capture_locals=True)
    text = "".join(te.format()).replace("\\", "/")
    # the check means something only if locals were captured: for plain calls those of the HTTP
    # layer (header dicts); a stream's error is re-raised from llm.py's and the executor's frames
    assert "self = " in text, text[-3000:]
    if mode != "stream":
        assert "providers/http.py" in text and "headers = {" in text, text[-3000:]
    return text


def _calls(llm: LlmClient) -> dict[str, Callable[[], object]]:
    return {
        "plain": lambda: llm.complete("hello"),
        "stream": lambda: "".join(llm.stream("hello")),
        "async": lambda: asyncio.run(llm.acomplete("hello")),
    }


@pytest.fixture
def refusing_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    yield port


KINDS = ["openai", "azure", "anthropic"]
MODES = ["plain", "stream", "async"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
def test_401_traceback_has_no_key(make_sim: Callable[..., SimServer], kind: str,
                                  mode: str) -> None:
    sim = make_sim(api_key="the-right-key")
    text = _traceback_text(_calls(_client(kind, sim.base))[mode], AuthenticationError, mode)
    assert SECRET not in text


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
def test_connection_refused_traceback_has_no_key(refusing_port: int, kind: str,
                                                 mode: str) -> None:
    llm = _client(kind, f"http://127.0.0.1:{refusing_port}")
    text = _traceback_text(_calls(llm)[mode], ProviderConnectionError, mode)
    assert SECRET not in text


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_timeout_traceback_has_no_key(kind: str, mode: str) -> None:
    async def silent(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(3)
        return False

    with Scripted(silent) as srv:
        llm = _client(kind, srv.url(""), timeouts=0.3)
        text = _traceback_text(_calls(llm)[mode], ProviderTimeoutError, mode)
    assert SECRET not in text


def test_header_values_and_provider_objects_mask_the_key() -> None:
    oa = OpenAICompat(model="m", base_url="http://127.0.0.1:9/v1", api_key=KEY)
    az = OpenAICompat(model="d", azure_endpoint="http://127.0.0.1:9", azure_deployment="d",
                      api_key=KEY)
    an = AnthropicCompat(model="c", base_url="http://127.0.0.1:9", api_key=KEY)
    for api in (oa, az, an):
        h = api.headers()
        for shown in (repr(h), str(h), repr(api), repr(vars(api)), repr(list(h.values()))):
            assert SECRET not in shown, shown
    assert oa.headers()["authorization"] == f"Bearer {KEY}"  # the wire value is intact
    assert az.headers()["api-key"] == KEY and an.headers()["x-api-key"] == KEY
    v = MaskedStr(f"Bearer {KEY}")
    assert repr(v) == "'***'" and f"{v}" == f"Bearer {KEY}" and v.encode() == f"Bearer {KEY}".encode()
    assert isinstance(v, str) and v == f"Bearer {KEY}"


def test_request_still_authenticates(make_sim: Callable[..., SimServer]) -> None:
    sim = make_sim(api_key=KEY)
    for kind in KINDS:
        llm = _client(kind, sim.base)
        assert llm.complete("ok?") and "".join(llm.stream("ok?"))
    api = OpenAICompat(model="emb-mask", base_url=sim.url, api_key=KEY)
    vecs, _ = get_runtime().run_sync(api.embed_once(["x"], dimensions=None))
    assert vecs.shape[0] == 1
