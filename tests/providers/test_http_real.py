"""The one HTTP stack (aiohttp) for plain and streaming requests, against small servers on
127.0.0.1 over real sockets: pooling, idle keep-alive sockets closed, no silent resend, strict
response parsing, timeouts and connection failures with their detail."""

from __future__ import annotations

import asyncio
import gzip
import importlib.util
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from http_servers import Scripted, ok

from parallelrag import LlmClient
from parallelrag.config import Timeouts
from parallelrag.errors import (
    ProviderConnectionError,
    ProviderTimeoutError,
    ResponseError,
)
from parallelrag.providers import http
from parallelrag.providers.chat_openai import OpenAIChat
from parallelrag.providers.openai import OpenAICompat
from parallelrag.resilience import ResilienceConfig
from parallelrag.resilience.retry import RetryPolicy
from parallelrag.runtime import get_runtime

CHAT = orjson.dumps({
    "id": "x", "model": "m", "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
})


def _req(url: str, timeouts: Timeouts | None = None, body: Any = None) -> http.HttpResponse:
    return get_runtime().run_sync(http.request(
        "POST", url, provider="t", json_body=body if body is not None else {},
        timeouts=timeouts or Timeouts()))


def test_hand_written_transport_and_switch_are_gone() -> None:
    assert importlib.util.find_spec("parallelrag.providers.transport") is None
    assert not hasattr(http, "use_lean_transport")


def test_keep_alive_reuses_one_connection_and_decodes_gzip() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(gzip.compress(b'{"n": %d}' % i), "content-encoding: gzip\r\nx-request-id: r\r\n"))
        return True

    with Scripted(h) as srv:
        for i in range(5):
            r = _req(srv.url("/v1/x"))
            assert r.status == 200 and r.json("t") == {"n": i}
            assert r.headers.get("X-Request-Id") == "r"
        assert srv.connections == 1
    head = srv.requests[0].split(b"\r\n\r\n")[0].lower()
    assert b"content-type: application/json" in head and b"user-agent: parallelrag/" in head


def test_idle_keepalive_sockets_are_closed_after_the_timeout() -> None:
    """A burst of 100 concurrent requests leaves 100 idle pooled sockets; with nothing reusing
    them, the server sees every one closed within the keep-alive timeout (+ a few s) while the
    client process is still alive."""

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.3)  # all 100 in flight at once: 100 connections
        w.write(ok(b"{}"))
        return True

    keepalive = 1.5
    with Scripted(h) as srv:
        script = textwrap.dedent(f"""
            import asyncio, sys, time
            from parallelrag.config import Timeouts
            from parallelrag.providers import http
            from parallelrag.runtime import get_runtime
            http.KEEPALIVE_TIMEOUT_S = {keepalive}
            async def burst():
                await asyncio.gather(*(http.request("POST", "{srv.url('/v1/x')}", provider="t",
                    json_body={{}}, timeouts=Timeouts()) for _ in range(100)))
            get_runtime().run_sync(burst())
            print("done", flush=True)
            time.sleep(30)
        """)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "done"
            t0 = time.monotonic()
            assert srv.connections == 100
            assert srv.open_connections >= 90  # idle in the client's pool now
            while srv.open_connections and time.monotonic() - t0 < 2 * keepalive + 8:
                time.sleep(0.1)
            closed_after = time.monotonic() - t0
            assert srv.open_connections == 0, (srv.open_connections, closed_after)
            assert proc.poll() is None  # closed by the idle timeout, not by the process exiting
        finally:
            proc.kill()
            proc.wait()


def test_connection_closed_after_request_is_a_counted_retry() -> None:
    """The server reads the second request on a kept-alive connection and closes it without an
    answer. aiohttp does not resend a POST by itself; the failure reaches the resilience
    executor, whose retry is the third POST: counted in stats, behind the limiter."""

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        if i == 1:
            return False  # read the request, answer nothing, close
        w.write(ok(CHAT))
        return True

    with Scripted(h) as srv:
        api = OpenAICompat(model="resend", base_url=srv.url("/v1"), api_key="k",
                           resilience=ResilienceConfig(retry=RetryPolicy(base_delay_s=0.01)))
        llm = LlmClient(OpenAIChat(api))
        assert llm.complete("one") == "fine"
        assert llm.complete("two") == "fine"
        posts = [r for r in srv.requests if r.startswith(b"POST ")]
        stats = llm.stats()["provider"]
    assert len(posts) == 3
    assert stats["requests"] == 3 and stats["retries"] == 1 and stats["errors"] == 1, stats
    assert srv.connections == 2


def test_fresh_connection_closed_without_answer_is_one_post_per_attempt() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        return False

    with Scripted(h) as srv:
        with pytest.raises(ProviderConnectionError, match=r"127\.0\.0\.1"):
            _req(srv.url("/v1/x"))
        assert len(srv.requests) == 1


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\ncontent-length: 2, 164\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nno colon here\r\n\r\n{}",
])
def test_malformed_response_heads_are_refused(head: bytes) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(head)
        return False

    with Scripted(h) as srv, pytest.raises(ResponseError, match=r"malformed|invalid|cut off"):
        _req(srv.url("/v1/x"))


def test_cut_off_body_is_a_response_error() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        return False

    with Scripted(h) as srv, pytest.raises(ResponseError, match="cut off"):
        _req(srv.url("/v1/x"))


@pytest.fixture
def refusing_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    yield port


def test_connection_refused_names_the_url(refusing_port: int) -> None:
    with pytest.raises(ProviderConnectionError, match=f"127.0.0.1:{refusing_port}"):
        _req(f"http://127.0.0.1:{refusing_port}/v1/x")


def test_read_timeout_says_read_the_seconds_and_the_url_without_secrets() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(3)
        return False

    with Scripted(h) as srv:
        url = srv.url("/v1/x") + "?api-version=2024&api-key=hunter2hunter2&sig=abcdef"
        t0 = time.perf_counter()
        with pytest.raises(ProviderTimeoutError) as ei:
            _req(url, Timeouts(connect=2.0, read=0.3, total=10.0))
        assert time.perf_counter() - t0 < 2.5
    msg = str(ei.value)
    assert "read" in msg and "0.3" in msg and srv.url("/v1/x") in msg, msg
    assert "api-version=2024" in msg and "hunter2" not in msg and "abcdef" not in msg, msg


def test_total_timeout_says_total() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        for _ in range(60):  # bytes keep coming: only the total timeout ends it
            w.write(b"z")
            await w.drain()
            await asyncio.sleep(0.05)
        return False

    with Scripted(h) as srv, pytest.raises(ProviderTimeoutError, match=r"total.*0\.6") as ei:
        _req(srv.url("/v1/x"), Timeouts(connect=2.0, read=0.5, total=0.6))
    assert srv.url("/v1/x") in str(ei.value)


def test_connect_timeout_says_connect() -> None:
    # a listener whose accept queue is full: further SYNs are dropped, connect() hangs
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.1)
        with pytest.raises(ProviderTimeoutError, match=r"connect.*0\.4") as ei:
            _req(f"http://127.0.0.1:{port}/v1/x", Timeouts(connect=0.4, read=5.0, total=10.0))
        assert f"127.0.0.1:{port}" in str(ei.value)
    finally:
        for s in fillers:
            s.close()
        lsock.close()


def test_small_json_bodies_are_held_at_their_size() -> None:
    import tracemalloc

    payload = {"model": "m", "messages": [{"role": "user", "content": "q 1"}]}
    big = {"input": ["x" * 50_000]}
    assert http.json_bytes(payload) == orjson.dumps(payload)
    assert http.json_bytes(big) == orjson.dumps(big)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [http.json_bytes(payload) for _ in range(200)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept) == 200
    # orjson's own buffer is 4 KiB per body (800 KiB for these); at their size: < 40 KiB
    assert held < 40_000, held


def test_many_concurrent_requests_each_get_their_answer() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        body = req.split(b"\r\n\r\n", 1)[1]
        await asyncio.sleep(0.02 if len(body) % 2 else 0.0)
        w.write(ok(b'{"echo": ' + body + b"}"))
        return True

    async def many(url: str) -> list[Any]:
        rs = await asyncio.gather(*(http.request(
            "POST", url, provider="t", json_body={"i": i}, timeouts=Timeouts())
            for i in range(64)))
        return [r.json("t") for r in rs]

    run: Callable[[Any], list[Any]] = get_runtime().run_sync
    with Scripted(h) as srv:
        assert run(many(srv.url("/v1/x"))) == [{"echo": {"i": i}} for i in range(64)]
        first = srv.connections
        assert run(many(srv.url("/v1/x"))) == [{"echo": {"i": i}} for i in range(64)]
        assert srv.connections == first  # the second wave reused the pool
