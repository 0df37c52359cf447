"""Hostile-network probes of the HTTP stack and resilience layer over real sockets on 127.0.0.1:
absurd Retry-After values, redirect loops and cross-port redirects, half bodies, gzip bodies,
huge headers and slowloris responses. Each asserts what the client raised and what the server saw."""

from __future__ import annotations

import asyncio
import gzip
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent / "providers"))
from http_servers import Scripted, ok

from parallelrag import LlmClient
from parallelrag.config import Timeouts
from parallelrag.errors import (
    BadRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ResponseError,
)
from parallelrag.providers.chat_openai import OpenAIChat
from parallelrag.providers.openai import OpenAICompat
from parallelrag.resilience import ResilienceConfig, RetryPolicy, reset_shared

CHAT = orjson.dumps({
    "id": "x", "model": "m", "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
})


@pytest.fixture(autouse=True)
def _fresh_registry() -> None:
    reset_shared()


def _llm(url: str, *, timeouts: Timeouts | float | None = None,
         retry: RetryPolicy | None = None) -> LlmClient:
    res = ResilienceConfig(retry=retry) if retry is not None else None
    api = OpenAICompat(model="m", base_url=url, api_key="sk-test-SECRET123",
                       timeouts=timeouts, resilience=res)
    return LlmClient(OpenAIChat(api))


def test_huge_retry_after_does_not_stall_the_key_beyond_the_cap() -> None:
    """A 429 with ``Retry-After: 99999`` waits at most ``max_retry_after_s``: neither the retry
    nor the key's rate limiter (which every other call on the key shares) may sleep 27 hours."""
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        if i == 0:
            w.write(ok(b'{"error": {"message": "slow down"}}', "retry-after: 99999\r\n",
                       status="429 Too Many Requests"))
        else:
            w.write(ok(CHAT))
        return True

    with Scripted(h) as srv:
        llm = _llm(srv.url(), retry=RetryPolicy(base_delay_s=0.01, max_retry_after_s=0.3))
        out: list[object] = []

        def call() -> None:
            try:
                out.append(llm.complete("hi"))
            except BaseException as exc:
                out.append(exc)

        t = threading.Thread(target=call, daemon=True)
        t0 = time.perf_counter()
        t.start()
        t.join(20)
        assert not t.is_alive(), "complete() still waiting 20 s after a capped 0.3 s Retry-After"
        assert len(srv.requests) == 2, out
        assert out == ["fine"]
        assert time.perf_counter() - t0 < 20


def test_redirect_loop_is_bounded_and_named() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(b"", "location: /v1/chat/completions\r\n", status="307 Temporary Redirect"))
        return True

    with Scripted(h) as srv:
        with pytest.raises(BadRequestError, match="too many redirects"):
            _llm(srv.url()).complete("hi")
        assert 1 < len(srv.requests) <= 6 * 8  # bounded hops (and bounded retries of them)


def test_redirect_to_another_port_drops_the_key_and_keeps_the_body() -> None:
    async def target(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(CHAT))
        return True

    with Scripted(target) as dst:
        async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
            w.write(ok(b"", f"location: {dst.url()}/chat/completions\r\n",
                       status="308 Permanent Redirect"))
            return True

        with Scripted(h) as src:
            assert _llm(src.url()).complete("hi") == "fine"
        assert b"SECRET123" in src.requests[0]
        assert b"SECRET123" not in dst.requests[0]
        assert dst.requests[0].startswith(b"POST ")
        assert b'"hi"' in dst.requests[0]


def test_gzip_body_is_decoded() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(gzip.compress(CHAT), "content-encoding: gzip\r\n"))
        return True

    with Scripted(h) as srv:
        assert _llm(srv.url()).complete("hi") == "fine"


def test_half_body_then_stall_is_a_typed_timeout_and_few_resends() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n" + CHAT[:20])
        await w.drain()
        await asyncio.sleep(30)
        return False

    with Scripted(h) as srv:
        llm = _llm(srv.url(), timeouts=Timeouts(connect=2, read=0.3, total=20),
                   retry=RetryPolicy(base_delay_s=0.01))
        with pytest.raises(ProviderTimeoutError) as info:
            llm.complete("hi")
        assert "read timeout" in str(info.value)
        assert len(srv.requests) == 3  # the first try and at most two timeout retries


def test_huge_response_headers_are_a_typed_error() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(CHAT, "x-junk: " + "a" * 200_000 + "\r\n"))
        return False

    with Scripted(h) as srv:
        with pytest.raises(ProviderError) as info:
            _llm(srv.url(), retry=RetryPolicy(max_attempts=1)).complete("hi")
        assert isinstance(info.value, ResponseError), repr(info.value)


def test_slowloris_response_is_bounded_by_the_total_timeout() -> None:
    """A server that trickles one header byte every 0.1 s never trips the read timeout; the
    total timeout must still end the call."""
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        for b in b"HTTP/1.1 200 OK\r\nx-slow: " + b"a" * 10_000:
            w.write(bytes([b]))
            await w.drain()
            await asyncio.sleep(0.1)
        return False

    with Scripted(h) as srv:
        llm = _llm(srv.url(), timeouts=Timeouts(connect=2, read=1.0, total=1.5),
                   retry=RetryPolicy(max_attempts=1))
        t0 = time.perf_counter()
        with pytest.raises(ProviderTimeoutError):
            llm.complete("hi")
        assert time.perf_counter() - t0 < 10


def test_proxy_that_closes_mid_connect_is_a_connection_error() -> None:
    """A proxy that reads the CONNECT and hangs up (or answers half a status line) fails the call
    as a ProviderConnectionError, retried a bounded number of times."""
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        assert req.startswith(b"CONNECT 127.0.0.1:9 ")
        if i % 2:
            w.write(b"HTTP/1.1 200 Conn")
        return False

    with Scripted(h) as proxy:
        api = OpenAICompat(model="m", base_url="https://127.0.0.1:9/v1", api_key="sk-test-SECRET",
                           proxy=proxy.url(""),
                           resilience=ResilienceConfig(retry=RetryPolicy(max_attempts=3,
                                                                         base_delay_s=0.01)))
        with pytest.raises(ProviderConnectionError) as info:
            LlmClient(OpenAIChat(api)).complete("hi")
        assert "SECRET" not in str(info.value)
        assert len(proxy.requests) == 3


async def _until_peer_closes(w: asyncio.StreamWriter, limit: float = 60.0) -> None:
    """Answer nothing; return once the client hung up (a peek sees EOF) or after ``limit``."""
    sock = socket.socket(fileno=os.dup(w.get_extra_info("socket").fileno()))
    try:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    return
            except BlockingIOError:
                pass
            except OSError:
                return
            await asyncio.sleep(0.02)
    finally:
        sock.close()


def _stalling() -> tuple[Scripted, threading.Event]:
    got = threading.Event()

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        got.set()
        await _until_peer_closes(w)
        return False

    return Scripted(h), got


def test_task_cancel_drops_the_request_and_frees_the_slot() -> None:
    srv, got = _stalling()
    with srv:
        llm = _llm(srv.url(), timeouts=Timeouts(connect=2, read=60, total=60))

        async def main() -> None:
            task = asyncio.ensure_future(llm.acomplete("hi"))
            assert await asyncio.to_thread(got.wait, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)

        asyncio.run(main())
        deadline = time.monotonic() + 5
        while srv.open_connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.open_connections == 0  # the server saw the request abandoned
        assert llm.stats()["provider"]["in_flight"] == 0


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """Python's own Ctrl-C handler for the test: a process started in the background by a
    non-interactive shell (as CI jobs often are) inherits SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler at all."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def test_keyboard_interrupt_in_a_sync_call_cancels_it(default_sigint: None) -> None:
    """Ctrl-C (SIGINT delivered to the main thread) while the main thread waits in a sync
    call raises KeyboardInterrupt promptly, the request is abandoned, and the client still works."""
    calls = {"n": 0}

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        calls["n"] += 1
        if i == 0:
            await _until_peer_closes(w)
            return False
        w.write(ok(CHAT))
        return True

    with Scripted(h) as srv:
        llm = _llm(srv.url(), timeouts=Timeouts(connect=2, read=60, total=60))
        main = threading.main_thread().ident
        assert main is not None and threading.current_thread() is threading.main_thread()
        threading.Timer(0.5, signal.pthread_kill, (main, signal.SIGINT)).start()
        t0 = time.perf_counter()
        try:
            got = llm.complete("hi")
        except KeyboardInterrupt:
            pass
        else:  # say what happened instead of interrupting (the handler in force, the requests)
            pytest.fail(f"no KeyboardInterrupt: returned {got!r} after {time.perf_counter() - t0:.1f} s, "
                        f"server saw {calls['n']} requests, SIGINT handler "
                        f"{signal.getsignal(signal.SIGINT)!r}")
        assert time.perf_counter() - t0 < 5
        deadline = time.monotonic() + 5
        while srv.open_connections and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.open_connections == 0
        assert llm.complete("again") == "fine"
        assert calls["n"] == 2  # the interrupted call was not resent behind the user's back


def _sse_head() -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n")


def _sse_chunk(text: str) -> bytes:
    event = orjson.dumps({"id": "x", "object": "chat.completion.chunk", "model": "m", "choices": [
        {"index": 0, "delta": {"content": text}, "finish_reason": None}]})
    data = b"data: " + event + b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


@pytest.mark.parametrize("how", ["stall", "cut"])
def test_stream_that_stalls_or_is_cut_mid_way_is_a_typed_error(how: str) -> None:
    """A stream that sends one event and then stalls (read timeout) or drops the connection
    without the terminating chunk fails with a ProviderError, after the first text arrived."""
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(_sse_head() + _sse_chunk("first "))
        await w.drain()
        if how == "stall":
            await _until_peer_closes(w)
        return False

    with Scripted(h) as srv:
        llm = _llm(srv.url(), timeouts=Timeouts(connect=2, read=0.5, total=20),
                   retry=RetryPolicy(max_attempts=1))
        got: list[str] = []
        with pytest.raises(ProviderError) as info:
            for piece in llm.stream("hi"):
                got.append(piece)
        assert got == ["first "]
        if how == "stall":
            # text was already yielded, so llm.py reports a cut-off stream (ResponseError) with
            # the timeout's detail in the message
            assert isinstance(info.value, ResponseError), repr(info.value)
            assert "read timeout" in str(info.value) and "0.5 s" in str(info.value)
            # and code can tell why it was cut: the timeout is its cause
            assert isinstance(info.value.__cause__, ProviderTimeoutError), info.value.__cause__
        assert "SECRET" not in str(info.value)
