"""Provider clients at the network edges a user meets, over real sockets on 127.0.0.1.

Each test starts a small scripted server (or a proxy, or nothing at a port) and checks what the
client returns or raises and what the server saw: embeddings answers with bad indices or
vectors are refused instead of being stored in the wrong order, an open circuit says what
failed, a proxy that wants credentials says so (and is not retried), ``NO_PROXY`` takes CIDR
ranges as curl does.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent / "providers"))

from http_servers import Scripted, ok

from parallelrag import EmbeddingClient, LlmClient
from parallelrag.errors import (
    AuthenticationError,
    BatchError,
    CircuitOpenError,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    ResponseError,
)
from parallelrag.providers.http import HttpOptions
from parallelrag.resilience import reset_shared

KEY = "sk-test-NETDEFECT-SECRET"


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    reset_shared()
    yield
    reset_shared()


def _emb_body(items: list[tuple[object, object]]) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in items]
    return orjson.dumps({"object": "list", "data": data, "model": "m",
                         "usage": {"prompt_tokens": 2, "total_tokens": 2}})


def _answer(body: bytes, content_type: str = "application/json") -> Scripted:
    """A server that answers every request with 200, ``body`` and ``content_type``."""
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(body).replace(b"application/json", content_type.encode(), 1))
        return True

    return Scripted(h)


def _embedder(url: str) -> EmbeddingClient:
    return EmbeddingClient.openai("m", base_url=url, api_key=KEY, max_retries=1,
                                  base_delay_s=0.01)


def _embed_error(body: bytes) -> tuple[BaseException, int]:
    with _answer(body) as srv:
        with pytest.raises((ProviderError, BatchError)) as info:
            _embedder(srv.url()).embed_many(["a", "b"])
        return info.value, len(srv.requests)


# --------------------------------------------------------------------------- embeddings shape
@pytest.mark.parametrize(("items", "words"), [
    # a negative index used to land on rows[-1]: the two vectors silently swapped places
    ([(-1, [1.0, 0.0]), (0, [0.0, 1.0])], "index -1"),
    # a repeated index left a row unset; the error was numpy's "array dimensions" ValueError
    ([(0, [1.0, 0.0]), (0, [0.0, 1.0])], "index 0 twice"),
    ([(0, [1.0, 0.0]), (2, [0.0, 1.0])], "index 2"),
    ([(True, [1.0, 0.0]), (False, [0.0, 1.0])], "index True"),
    # empty vectors were accepted as a (2, 0) array: an index of dimension 0
    ([(0, []), (1, [])], "empty"),
    ([(0, [1.0, 0.0]), (1, [0.0, 1.0, 2.0])], "dimension"),
    ([(0, [[1.0], [0.0]]), (1, [[0.0], [1.0]])], "not a flat list"),
])
def test_embeddings_with_bad_indices_or_vectors_are_refused(
        items: list[tuple[object, object]], words: str) -> None:
    err, _ = _embed_error(_emb_body(items))
    text = str(err)
    assert isinstance(err, (BatchError, ResponseError)), text
    assert words in text, text
    assert "ValueError" not in text and "array dimensions" not in text, text
    assert KEY not in text


def test_embeddings_with_nan_values_are_refused() -> None:
    """Base64 vectors can carry NaN / inf, which JSON cannot: stored, they poison every
    similarity score of a search."""
    nan = base64.b64encode(struct.pack("<2f", float("nan"), 1.0)).decode()
    good = base64.b64encode(struct.pack("<2f", 0.0, 1.0)).decode()
    err, _ = _embed_error(_emb_body([(0, good), (1, nan)]))
    assert "not finite" in str(err), str(err)


def test_embeddings_out_of_order_indices_are_put_back_in_input_order() -> None:
    body = _emb_body([(1, [0.0, 1.0]), (0, [1.0, 0.0])])
    with _answer(body) as srv:
        out = _embedder(srv.url()).embed_many(["a", "b"])
    assert out.tolist() == [[1.0, 0.0], [0.0, 1.0]]


# --------------------------------------------------------------------------- outages
def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_open_circuit_names_the_failure_that_opened_it() -> None:
    """Connection refused three times opens the breaker; the single call that opened it and the
    calls after it used to say only "circuit open after 3 consecutive failures", never what
    failed (refused? DNS? 502?), so a user could not tell a typo'd port from an outage."""
    port = _free_port()
    llm = LlmClient.openai("m", base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY,
                           base_delay_s=0.01, max_delay_s=0.02, breaker_threshold=3,
                           breaker_reset_s=30)
    for _ in range(2):
        with pytest.raises(CircuitOpenError) as info:
            llm.complete("hi")
        text = str(info.value)
        assert "3 consecutive failures" in text, text
        assert "cannot connect to" in text and f"127.0.0.1:{port}" in text, text
        assert KEY not in text


# --------------------------------------------------------------------------- proxies
def test_proxy_407_for_an_http_target_says_proxy_authentication_and_is_not_retried() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b"proxy-authenticate: Basic realm=\"corp\"\r\ncontent-length: 0\r\n\r\n")
        return False

    with Scripted(h) as proxy:
        llm = LlmClient.openai("m", base_url="http://127.0.0.2:9/v1", api_key=KEY,
                               proxy=proxy.url(""), max_retries=3, base_delay_s=0.01)
        with pytest.raises(AuthenticationError) as info:
            llm.complete("hi")
        assert len(proxy.requests) == 1
    text = str(info.value)
    assert "proxy" in text.lower() and "407" in text, text
    assert KEY not in text


def test_proxy_407_on_connect_for_an_https_target_is_not_retried() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
        return False

    with Scripted(h) as proxy:
        llm = LlmClient.openai("m", base_url="https://api.example.invalid/v1", api_key=KEY,
                               proxy=proxy.url(""), max_retries=3, base_delay_s=0.01)
        with pytest.raises(AuthenticationError) as info:
            llm.complete("hi")
        assert len(proxy.requests) == 1
        assert proxy.requests[0].startswith(b"CONNECT ")
    assert "407" in str(info.value) and KEY not in str(info.value)


@pytest.mark.parametrize(("no_proxy", "url", "bypass"), [
    ("127.0.0.0/8", "http://127.0.0.1:8080/v1", True),
    ("10.0.0.0/8,192.168.0.0/16", "http://192.168.4.7/v1", True),
    ("10.0.0.0/8", "http://11.0.0.1/v1", False),
    ("10.0.0.0/8", "http://api.example.com/v1", False),
    ("::1/128", "http://[::1]:8000/v1", True),
    ("127.0.0.1:8080", "http://127.0.0.1:8080/v1", True),
    ("127.0.0.1:8080", "http://127.0.0.1:9090/v1", False),
    (".example.com", "http://api.example.com/v1", True),
])
def test_no_proxy_takes_cidr_ranges_and_ports(no_proxy: str, url: str, bypass: bool,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """curl (7.86+) and httpx read ``NO_PROXY=10.0.0.0/8``; urllib's matcher does not, so a
    private vLLM server was reached through the corporate proxy."""
    from yarl import URL

    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    proxy, _ = HttpOptions().proxy_for(URL(url))
    assert (proxy is None) is bypass, proxy


def test_no_proxy_cidr_reaches_the_server_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: with the proxy port dead, a call to 127.0.0.1 listed by CIDR in NO_PROXY
    still gets its answer."""
    chat = orjson.dumps({"id": "x", "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "direct"}, "finish_reason": "stop"}]})
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.0/8")
    with _answer(chat) as srv:
        llm = LlmClient.openai("m", base_url=srv.url(), api_key=KEY, max_retries=0)
        assert llm.complete("hi") == "direct"
        assert len(srv.requests) == 1


# --------------------------------------------------------------------------- 200s that are not answers
def test_embeddings_200_with_an_error_object_says_the_providers_message() -> None:
    """Some gateways answer 200 with ``{"error": {...}}``; the user saw
    "unexpected embeddings response shape: KeyError: 'data'" instead of the message."""
    body = b'{"error": {"message": "model is loading, try later", "type": "server_error"}}'
    with _answer(body) as srv, pytest.raises(ProviderError) as info:
        _embedder(srv.url()).embed("hi")
    assert "model is loading" in str(info.value), str(info.value)
    assert "KeyError" not in str(info.value)


def _html_answer() -> Scripted:
    page = b"<html><head><title>Guest Wi-Fi</title></head><body>Please log in</body></html>"
    return _answer(page, "text/html; charset=utf-8")


def test_html_200_names_the_content_type_and_shows_the_page() -> None:
    """A captive portal or a proxy's login page answers 200 text/html; "malformed JSON ...
    line 1 column 1" did not say that the answer was a web page, nor which."""
    with _html_answer() as srv:
        llm = LlmClient.openai("m", base_url=srv.url(), api_key=KEY, max_retries=0)
        with pytest.raises(ResponseError) as info:
            llm.complete("hi")
    text = str(info.value)
    assert "text/html" in text and "Guest Wi-Fi" in text, text
    assert KEY not in text


def _stream_of(consume_to: list[str], llm: LlmClient) -> BaseException | None:
    try:
        for delta in llm.stream("hi"):
            consume_to.append(delta)
    except Exception as exc:
        return exc
    return None


def test_stream_answered_with_a_plain_json_completion_yields_its_text() -> None:
    """A compatible server that ignores ``stream: true`` answers application/json; the stream
    said "truncated after 0 characters" and was retried, though the whole answer had arrived."""
    chat = orjson.dumps({"id": "x", "model": "m", "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "whole answer"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 2, "total_tokens": 4}})
    with _answer(chat) as srv:
        llm = LlmClient.openai("m", base_url=srv.url(), api_key=KEY, max_retries=2,
                               base_delay_s=0.01)
        got: list[str] = []
        err = _stream_of(got, llm)
        assert err is None, err
        assert "".join(got) == "whole answer"
        assert len(srv.requests) == 1


def test_stream_answered_with_html_says_so() -> None:
    with _html_answer() as srv:
        llm = LlmClient.openai("m", base_url=srv.url(), api_key=KEY, max_retries=0)
        got: list[str] = []
        err = _stream_of(got, llm)
    assert isinstance(err, ResponseError), err
    assert "text/html" in str(err) and "event stream" in str(err), str(err)


def test_stream_that_ends_after_its_finish_reason_without_done_is_complete() -> None:
    """The last chunk carries ``finish_reason``, then the server closes the body without
    ``data: [DONE]`` (older llama.cpp / proxy setups): every token arrived, yet the user got a
    ResponseError after the full text."""
    body = (b'data: {"choices":[{"index":0,"delta":{"content":"hel"}}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}\n\n')

    with _answer(body, "text/event-stream") as srv:
        llm = LlmClient.openai("m", base_url=srv.url(), api_key=KEY, max_retries=0)
        got: list[str] = []
        stream = llm.stream("hi")
        for delta in stream:
            got.append(delta)
        assert "".join(got) == "hello"
        assert stream.finish_reason == "stop"


def test_stream_cut_before_its_finish_reason_is_still_an_error() -> None:
    body = b'data: {"choices":[{"index":0,"delta":{"content":"hel"}}]}\n\n'

    with _answer(body, "text/event-stream") as srv:
        llm = LlmClient.openai("m", base_url=srv.url(), api_key=KEY, max_retries=0)
        got: list[str] = []
        err = _stream_of(got, llm)
    assert got == ["hel"]
    assert isinstance(err, ResponseError) and "truncated" in str(err), err


# --------------------------------------------------------------------------- quota
def test_429_insufficient_quota_is_not_retried_and_says_so() -> None:
    """OpenAI answers an account without credit with 429 ``insufficient_quota``: waiting does
    not help, yet every call was retried with backoff (8 attempts, up to the 300 s deadline,
    per call of a batch) before it failed."""
    body = (b'{"error": {"message": "You exceeded your current quota, please check your plan '
            b'and billing details.", "type": "insufficient_quota", "code": "insufficient_quota"}}')

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(body, "retry-after: 20\r\n", status="429 Too Many Requests"))
        return True

    with Scripted(h) as srv:
        llm = LlmClient.openai("m", base_url=srv.url(), api_key=KEY, max_retries=4,
                               base_delay_s=0.01, max_retry_after_s=0.05)
        with pytest.raises(QuotaExceededError) as info:
            llm.complete("hi")
        assert len(srv.requests) == 1
    assert isinstance(info.value, RateLimitError)  # existing handlers of 429 still catch it
    assert "quota" in str(info.value) and info.value.status_code == 429
    assert KEY not in str(info.value)


def test_ordinary_429_is_still_retried() -> None:
    body = b'{"error": {"message": "Rate limit reached", "type": "requests"}}'

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        if i == 0:
            w.write(ok(body, "retry-after: 0\r\n", status="429 Too Many Requests"))
        else:
            w.write(ok(orjson.dumps({"id": "x", "choices": [{"index": 0, "message": {
                "role": "assistant", "content": "later"}, "finish_reason": "stop"}]})))
        return True

    with Scripted(h) as srv:
        llm = LlmClient.openai("m", base_url=srv.url(), api_key=KEY, max_retries=2,
                               base_delay_s=0.01)
        assert llm.complete("hi") == "later"
        assert len(srv.requests) == 2


# --------------------------------------------------------------------------- redirects
def test_https_redirect_to_plain_http_is_refused_and_the_body_stays_encrypted(
        tmp_path: Path) -> None:
    """A 307 from an https endpoint to ``http://`` was followed: the key was dropped (another
    origin), but the prompt (the user's documents) went out unencrypted."""
    from http_servers import tls_pair

    from parallelrag.errors import BadRequestError
    from parallelrag.providers.chat_openai import OpenAIChat
    from parallelrag.providers.openai import OpenAICompat

    chat = orjson.dumps({"id": "x", "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "plain"}, "finish_reason": "stop"}]})
    ctx, ca = tls_pair(tmp_path)
    with _answer(chat) as plain:
        async def redirect(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
            w.write(ok(b"", f"location: {plain.url()}/chat/completions\r\n",
                       status="307 Temporary Redirect"))
            return True

        with Scripted(redirect, tls=ctx) as secure:
            api = OpenAICompat(model="m", base_url=secure.url(), api_key=KEY, verify=ca)
            with pytest.raises(BadRequestError) as info:
                LlmClient(OpenAIChat(api)).complete("my private document")
            assert len(secure.requests) == 1
        assert plain.requests == []
    text = str(info.value)
    assert "http://" in text and "unencrypted" in text, text
    assert KEY not in text


def test_event_stream_labelled_application_json_still_streams() -> None:
    """Some gateways label the event stream ``application/json``: it must still be read as
    events (the whole-answer fallback applies only to a body that is one JSON object)."""
    body = (b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}]}\n\n'
            b"data: [DONE]\n\n")

    with _answer(body, "application/json") as srv:
        llm = LlmClient.openai("m", base_url=srv.url(), api_key=KEY, max_retries=0)
        got: list[str] = []
        assert _stream_of(got, llm) is None
    assert got == ["a", "b"]


def test_anthropic_stream_that_ends_after_its_stop_reason_without_message_stop_is_complete(
) -> None:
    def sse(kind: str, data: dict[str, object]) -> bytes:
        return f"event: {kind}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"

    body = (sse("message_start", {"type": "message_start", "message": {
                "id": "m", "model": "c", "usage": {"input_tokens": 1, "output_tokens": 0}}})
            + sse("content_block_start", {"type": "content_block_start", "index": 0,
                                          "content_block": {"type": "text", "text": ""}})
            + sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": "ok"}})
            + sse("message_delta", {"type": "message_delta", "delta": {
                "stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}))

    with _answer(body, "text/event-stream") as srv:
        llm = LlmClient.anthropic("c", base_url=srv.url(""), api_key=KEY, max_retries=0)
        stream = llm.stream("hi")
        assert "".join(stream) == "ok"
        assert stream.finish_reason == "stop"
        assert len(srv.requests) == 1


# --------------------------------------------------------------------------- rate-limit headers
@pytest.mark.parametrize("headers", [
    "x-ratelimit-limit-requests: 6000\r\nx-ratelimit-remaining-requests: -50000\r\n",
    "x-ratelimit-limit-tokens: 1000000\r\nx-ratelimit-remaining-tokens: -200000000\r\n",
])
def test_negative_remaining_in_rate_limit_headers_does_not_stall_the_key(headers: str) -> None:
    """A 200 that reports a negative ``remaining`` (an over-drawn window) drove the local bucket
    below zero: at 6000 rpm, -50000 held the next call on the key for over 8 minutes, silently."""
    import threading

    chat = orjson.dumps({"id": "x", "choices": [{"index": 0, "message": {
        "role": "assistant", "content": "fine"}, "finish_reason": "stop"}]})

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(chat, headers))
        return True

    with Scripted(h) as srv:
        llm = LlmClient.openai("m", base_url=srv.url(), api_key=KEY, max_retries=0)
        assert llm.complete("a") == "fine"
        out: list[object] = []
        t = threading.Thread(target=lambda: out.append(llm.complete("b")), daemon=True)
        t.start()
        t.join(20)
        assert not t.is_alive(), "the second call still waits for the over-drawn window"
        assert out == ["fine"] and len(srv.requests) == 2
