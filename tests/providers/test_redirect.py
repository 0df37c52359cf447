"""Redirects: 307/308 are followed with the same method and body (at most MAX_REDIRECTS hops) and
credentials never go to another origin; any other 3xx is a BadRequestError naming the Location."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from http_servers import Scripted, ok

from parallelrag import LlmClient
from parallelrag.errors import BadRequestError
from parallelrag.providers.anthropic import AnthropicChat, AnthropicCompat
from parallelrag.providers.chat_openai import OpenAIChat
from parallelrag.providers.http import MAX_REDIRECTS
from parallelrag.providers.openai import OpenAICompat
from parallelrag.runtime import get_runtime
from parallelrag.sim import SimServer, sim_reply

CHAT = orjson.dumps({
    "id": "x", "model": "m", "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "moved ok"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
})


def _head(req: bytes) -> dict[str, str]:
    head = req.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in head)}


def _body(req: bytes) -> bytes:
    return req.split(b"\r\n\r\n", 1)[1]


def _line(req: bytes) -> str:
    return req.split(b"\r\n", 1)[0].decode()


def _redirect(status: str, location: str) -> bytes:
    return ok(b"", f"location: {location}\r\n", status=status)


def _llm(url: str, azure: bool = False) -> LlmClient:
    if azure:
        api = OpenAICompat(model="dep", azure_endpoint=url, azure_deployment="dep",
                           api_key="sk-test-SECRET123", headers={"x-custom": "kept"})
    else:
        api = OpenAICompat(model="m", base_url=url, api_key="sk-test-SECRET123",
                           headers={"x-custom": "kept"})
    return LlmClient(OpenAIChat(api))


@pytest.mark.parametrize("code", ["307 Temporary Redirect", "308 Permanent Redirect"])
def test_same_origin_redirect_keeps_method_body_and_key(code: str) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(_redirect(code, "/v2/chat/completions?x=1") if i == 0 else ok(CHAT))
        return True

    with Scripted(h) as srv:
        assert _llm(srv.url("/v1")).complete("hello") == "moved ok"
    first, second = srv.requests
    assert _line(first) == "POST /v1/chat/completions HTTP/1.1"
    assert _line(second) == "POST /v2/chat/completions?x=1 HTTP/1.1"
    assert _body(second) == _body(first) and b'"hello"' in _body(first)
    assert _head(second)["authorization"] == "Bearer sk-test-SECRET123"
    assert _head(second)["x-custom"] == "kept"


@pytest.mark.parametrize("azure", [False, True])
def test_cross_origin_redirect_drops_credentials(azure: bool) -> None:
    async def target(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(CHAT))
        return True

    with Scripted(target) as other:
        async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
            w.write(_redirect("307 Temporary Redirect", other.url("/elsewhere")))
            return True

        with Scripted(h) as srv:
            assert _llm(srv.url("/v1") if not azure else srv.url(""), azure).complete("q") == (
                "moved ok")
        (first,), (moved,) = srv.requests, other.requests
    key_header = "api-key" if azure else "authorization"
    assert "SECRET123" in _head(first)[key_header]
    assert _line(moved) == "POST /elsewhere HTTP/1.1" and _body(moved) == _body(first)
    hm = _head(moved)
    assert not {"authorization", "api-key", "x-api-key"} & set(hm), hm
    assert b"SECRET123" not in moved
    assert hm["x-custom"] == "kept"


def test_anthropic_cross_origin_redirect_drops_x_api_key(sim: SimServer) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(_redirect("308 Permanent Redirect", f"{sim.base}/v1/messages"))
        return True

    with Scripted(h) as srv:
        api = AnthropicCompat(model="claude-r", base_url=srv.url(""), api_key="sk-test-SECRET123")
        assert LlmClient(AnthropicChat(api)).complete("hi") == sim_reply("claude-r", "hi")
        assert _head(srv.requests[0])["x-api-key"] == "sk-test-SECRET123"


def test_streaming_follows_307(sim: SimServer) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(_redirect("307 Temporary Redirect", f"{sim.url}/chat/completions"))
        return True

    with Scripted(h) as srv:
        llm = _llm(srv.url("/v1"))
        assert "".join(llm.stream("streamed")) == sim_reply("m", "streamed")
        assert len(srv.requests) == 1


@pytest.mark.parametrize("code", ["301 Moved Permanently", "302 Found", "303 See Other",
                                  "300 Multiple Choices"])
def test_other_3xx_is_a_clear_error(code: str) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(_redirect(code, "https://new.example/v1/chat/completions?token=abc"))
        return True

    with Scripted(h) as srv:
        with pytest.raises(BadRequestError) as ei:
            _llm(srv.url("/v1")).complete("x")
        assert len(srv.requests) == 1  # not retried, not followed
    msg = str(ei.value)
    assert code.split()[0] in msg and "https://new.example/v1/chat/completions" in msg
    assert "token=abc" not in msg
    assert ei.value.status_code == int(code.split()[0])


def test_redirect_loop_is_bounded() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(_redirect("307 Temporary Redirect", f"/v1/hop{i}"))
        return True

    with Scripted(h) as srv:
        api = OpenAICompat(model="e", base_url=srv.url("/v1"), api_key="k")
        with pytest.raises(BadRequestError, match="redirect"):
            get_runtime().run_sync(api.embed_once(["a"], dimensions=None))
        assert len(srv.requests) == 1 + MAX_REDIRECTS
