"""Response bodies are bounded: a provider (or a proxy / captive portal) that sends a huge or
endless body makes the request fail with a ResponseError naming the limit, promptly and without
holding the body in memory; a stream bounds one event (line), not the whole stream.

The servers are small raw HTTP servers on 127.0.0.1 (``tests/providers/http_servers.py``); an
"endless" body stops after ``CAP`` bytes and then stalls, so a client without a limit fails by
its read timeout instead of eating the machine's memory.
"""

from __future__ import annotations

import asyncio
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent / "providers"))
from http_servers import Scripted

from parallelrag import EmbeddingClient, LlmClient
from parallelrag.errors import (
    BadRequestError,
    ConfigError,
    ParallelRagError,
    ResponseError,
)

KEY = "sk-limit-test-SECRET-0123456789"
LIMIT = 256 * 1024
CAP = 48 * 1024 * 1024  # what an "endless" server sends at most, then it stalls
PIECE = b"x" * 65536


@pytest.fixture
def limit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLELRAG_MAX_RESPONSE_BYTES", str(LIMIT))


def _llm(url: str) -> LlmClient:
    return LlmClient.openai("m", base_url=url, api_key=KEY, timeout=10.0, max_attempts=1)


class Sent:
    def __init__(self) -> None:
        self.bytes = 0


async def _endless(w: asyncio.StreamWriter, sent: Sent, head: bytes, piece: bytes,
                   chunked: bool = True) -> bool:
    w.write(head)
    try:
        while sent.bytes < CAP:
            w.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent.bytes += len(piece)
            await w.drain()
        await asyncio.sleep(3600)  # then nothing more: "endless" as far as a reader can tell
    except ConnectionError:
        pass
    return False


def _assert_too_large(err: BaseException) -> None:
    assert isinstance(err, ResponseError), repr(err)
    text = str(err)
    assert str(LIMIT) in text and "PARALLELRAG_MAX_RESPONSE_BYTES" in text, text
    assert KEY not in text and KEY not in repr(err)


def _timed(fn: object) -> tuple[BaseException | None, float, int]:
    """Run ``fn``; return (what it raised, seconds, peak traced memory in bytes)."""
    tracemalloc.start()
    t0 = time.monotonic()
    err: BaseException | None = None
    try:
        fn()  # type: ignore[operator]
    except ParallelRagError as exc:
        err = exc
    took = time.monotonic() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return err, took, peak


def test_default_limit_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    from parallelrag.providers import http

    assert http.DEFAULT_MAX_RESPONSE_BYTES == 64 * 1024 * 1024
    assert http.HttpOptions().max_response_bytes == 64 * 1024 * 1024
    assert http.HttpOptions(max_response_bytes=1000).max_response_bytes == 1000
    monkeypatch.setenv("PARALLELRAG_MAX_RESPONSE_BYTES", "12345")
    assert http.HttpOptions().max_response_bytes == 12345
    monkeypatch.setenv("PARALLELRAG_MAX_RESPONSE_BYTES", "lots")
    with pytest.raises(ConfigError, match="PARALLELRAG_MAX_RESPONSE_BYTES"):
        http.HttpOptions()
    with pytest.raises(ConfigError):
        http.HttpOptions(max_response_bytes=0)


def test_body_over_the_limit_with_content_length(limit_env: None) -> None:
    sent = Sent()

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        head = (f"HTTP/1.1 200 OK\r\ncontent-length: {8 * 1024 * 1024}\r\n"
                "content-type: application/json\r\n\r\n").encode()
        return await _endless(w, sent, head, PIECE, chunked=False)

    with Scripted(h) as srv:
        err, took, peak = _timed(lambda: _llm(srv.url()).complete("hello"))
    assert err is not None, "a body over the limit was accepted"
    assert took < 9.0, took  # failed at the limit, not by the 10 s read timeout
    _assert_too_large(err)
    assert sent.bytes < 8 * 1024 * 1024  # the client did not read it all
    assert peak < 16 * 1024 * 1024, peak


def _endless_json(sent: Sent) -> Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool]]:
    """A handler answering 200 with an endless chunked JSON body."""

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        head = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
                b"content-type: application/json\r\n\r\n")
        return await _endless(w, sent, head, PIECE)

    return h


def test_endless_chunked_body_fails_promptly_in_bounded_memory(limit_env: None) -> None:
    sent = Sent()
    with Scripted(_endless_json(sent)) as srv:
        err, took, peak = _timed(lambda: _llm(srv.url()).complete("hello"))
    assert err is not None
    assert took < 9.0, took  # failed at the limit, not by the 10 s read timeout
    _assert_too_large(err)
    assert sent.bytes < CAP, sent.bytes  # it stopped reading long before the server stalled
    assert peak < 16 * 1024 * 1024, peak


def test_embeddings_endless_body(limit_env: None) -> None:
    sent = Sent()
    with Scripted(_endless_json(sent)) as srv:
        emb = EmbeddingClient.openai("e", base_url=srv.url(), api_key=KEY, timeout=10.0,
                                     max_attempts=1)
        err, _, _ = _timed(lambda: emb.embed("hello"))
    assert err is not None
    _assert_too_large(err)


def test_error_status_with_huge_body_keeps_its_status(limit_env: None) -> None:
    sent = Sent()

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        head = (b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n"
                b"content-type: text/html\r\n\r\n")
        return await _endless(w, sent, head, PIECE)

    with Scripted(h) as srv:
        err, _, peak = _timed(lambda: _llm(srv.url()).complete("hello"))
    assert isinstance(err, BadRequestError), repr(err)  # the status decides, not the body
    assert sent.bytes < CAP and peak < 16 * 1024 * 1024


def _sse_head() -> bytes:
    return (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n"
            b"content-type: text/event-stream\r\n\r\n")


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_stream_with_an_endless_line_fails(limit_env: None) -> None:
    sent = Sent()

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(_sse_head() + _chunk(b'data: {"choices":[{"delta":{"content":"'))
        return await _endless(w, sent, b"", PIECE)  # never a newline

    with Scripted(h) as srv:
        err, _, peak = _timed(lambda: list(_llm(srv.url()).stream("hello")))
    assert err is not None
    _assert_too_large(err)
    assert sent.bytes < CAP and peak < 16 * 1024 * 1024


def test_stream_longer_than_the_limit_in_small_events_is_fine(limit_env: None) -> None:
    words = [f"w{i:05d}" + "y" * 73 + " " for i in range(4000)]  # 4000 events, > LIMIT

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(_sse_head())
        for word in words:
            ev = orjson.dumps({"choices": [{"index": 0, "delta": {"content": word}}]})
            w.write(_chunk(b"data: " + ev + b"\n\n"))
        fin = orjson.dumps({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        w.write(_chunk(b"data: " + fin + b"\n\ndata: [DONE]\n\n") + _chunk(b""))
        await w.drain()
        return False

    with Scripted(h) as srv:
        text = "".join(_llm(srv.url()).stream("hello"))
    assert len(text.encode()) > LIMIT
    assert text == "".join(words)


def test_too_large_is_not_retried(limit_env: None) -> None:
    """The same request gets the same oversized answer: one request, not the retry budget."""

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        head = (f"HTTP/1.1 200 OK\r\ncontent-length: {2 * LIMIT}\r\n"
                "content-type: application/json\r\n\r\n").encode()
        w.write(head + b"x" * (2 * LIMIT))
        return False

    with Scripted(h) as srv:
        llm = LlmClient.openai("m", base_url=srv.url(), api_key=KEY, timeout=10.0, max_attempts=4)
        with pytest.raises(ResponseError) as info:
            llm.complete("hello")
        _assert_too_large(info.value)
        assert len(srv.requests) == 1, len(srv.requests)
