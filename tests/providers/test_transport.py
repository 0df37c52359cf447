"""The lean HTTP/1.1 transport against small scripted servers on 127.0.0.1 (real sockets)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import pytest

from parallelrag import LlmClient
from parallelrag.config import Timeouts
from parallelrag.errors import ProviderConnectionError, ProviderTimeoutError, ResponseError
from parallelrag.providers.http import request as http_request
from parallelrag.providers.transport import Headers, IncompleteResponse, Pool
from parallelrag.runtime import get_runtime
from parallelrag.sim import SimServer, sim_reply

Handler = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool]]


class Scripted:
    """A server that reads whole requests and answers request number i with ``handler``;
    the handler returns False to close the connection afterwards."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                i = len(self.requests)
                self.requests.append(head + body)
                keep = await self.handler(i, head + body, writer)
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Scripted:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1/x"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def ok(body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n{extra}\r\n").encode() + body


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    p = Pool()
    yield p
    p.close()


async def test_keep_alive_reuses_one_connection(pool: Pool) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(b'{"n": %d}' % i, "X-Request-Id: abc\r\n"))
        return True

    async with Scripted(h) as srv:
        for i in range(5):
            r = await pool.request("POST", srv.url, {"authorization": "Bearer k"}, b"{}")
            assert (r.status, r.body) == (200, b'{"n": %d}' % i)
            assert r.headers.get("X-REQUEST-ID") == "abc" and "x-request-id" in r.headers
        assert srv.connections == 1 and pool.connections_opened == 1
        first = srv.requests[0]
        assert first.startswith(b"POST /v1/x HTTP/1.1\r\n")
        assert b"\r\nauthorization: Bearer k\r\n" in first and b"content-length: 2\r\n" in first


async def test_concurrent_requests_get_their_own_responses(pool: Pool) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        body = req.split(b"\r\n\r\n", 1)[1]
        await asyncio.sleep(0.02 if int(body) % 2 else 0.0)
        w.write(ok(b"echo " + body))
        return True

    async with Scripted(h) as srv:
        rs = await asyncio.gather(
            *(pool.request("POST", srv.url, {}, str(i).encode()) for i in range(50))
        )
        assert [r.body for r in rs] == [b"echo %d" % i for i in range(50)]
        assert srv.connections == 50
        rs = await asyncio.gather(
            *(pool.request("POST", srv.url, {}, str(i).encode()) for i in range(50))
        )
        assert [r.body for r in rs] == [b"echo %d" % i for i in range(50)]
        assert srv.connections == 50  # the second wave reused the pool


async def test_chunked_with_extensions_and_trailers(pool: Pool) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"5;ext=1\r\nhello\r\n", b"1", b"\r\n ", b"\r\n", b"6\r\nworld!\r\n",
                      b"0\r\nx-trailer: 1\r\n\r\n"):
            w.write(piece)
            await w.drain()
            await asyncio.sleep(0.001)
        return True

    async with Scripted(h) as srv:
        for _ in range(2):
            r = await pool.request("POST", srv.url, {}, b"x")
            assert r.body == b"hello world!"
        assert srv.connections == 1


async def test_connection_close_and_read_to_eof(pool: Pool) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        if i == 0:
            w.write(ok(b"closing", "connection: close\r\n"))
        else:  # HTTP/1.0 style: no length, body ends at EOF
            w.write(b"HTTP/1.0 200 OK\r\n\r\nbody until eof")
        return False

    async with Scripted(h) as srv:
        assert (await pool.request("POST", srv.url, {}, b"")).body == b"closing"
        assert (await pool.request("POST", srv.url, {}, b"")).body == b"body until eof"
        assert srv.connections == 2 and pool.idle_count() == 0


async def test_gzip_body_is_decoded(pool: Pool) -> None:
    payload = b'{"data": "' + b"x" * 5000 + b'"}'

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        assert b"accept-encoding: gzip, deflate" in req
        w.write(ok(gzip.compress(payload), "Content-Encoding: gzip\r\n"))
        return True

    async with Scripted(h) as srv:
        assert (await pool.request("POST", srv.url, {}, b"")).body == payload


async def test_truncated_body_raises_and_is_not_retried(pool: Pool) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"y" * 50)
        return False

    async with Scripted(h) as srv:
        with pytest.raises(IncompleteResponse):
            await pool.request("POST", srv.url, {}, b"")
        assert len(srv.requests) == 1


async def test_stale_reused_connection_is_resent_once(pool: Pool) -> None:
    """The server closes a kept-alive connection right as the next request is written: that
    request goes out again on a fresh connection (nothing of a response had arrived)."""

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        if i == 1:
            return False  # read the request, answer nothing, close
        w.write(ok(b"fine %d" % i))
        return True

    async with Scripted(h) as srv:
        assert (await pool.request("POST", srv.url, {}, b"")).body == b"fine 0"
        assert (await pool.request("POST", srv.url, {}, b"")).body == b"fine 2"
        assert srv.connections == 2 and len(srv.requests) == 3


async def test_fresh_connection_closed_without_response_raises(pool: Pool) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        return False

    async with Scripted(h) as srv:
        with pytest.raises(ConnectionError):
            await pool.request("POST", srv.url, {}, b"")
        assert len(srv.requests) == 1  # a fresh connection is not retried here


async def test_idle_connection_closed_by_server_is_dropped(pool: Pool) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(b"r%d" % i))
        return False  # close after every response, without saying so

    async with Scripted(h) as srv:
        assert (await pool.request("POST", srv.url, {}, b"")).body == b"r0"
        await asyncio.sleep(0.05)  # the FIN arrives: the pooled connection knows it is closed
        assert (await pool.request("POST", srv.url, {}, b"")).body == b"r1"
        assert srv.connections == 2 and len(srv.requests) == 2


async def test_read_timeout_and_total_timeout(pool: Pool) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        if i == 0:
            await asyncio.sleep(5)
        else:  # trickle: bytes keep coming, so only the total timeout ends it
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
            for _ in range(50):
                w.write(b"z")
                await w.drain()
                await asyncio.sleep(0.05)
        return False

    async with Scripted(h) as srv:
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError):
            await pool.request("POST", srv.url, {}, b"", read_timeout=0.2)
        assert 0.15 < time.perf_counter() - t0 < 2.0
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError):
            await pool.request("POST", srv.url, {}, b"", read_timeout=0.2, total_timeout=0.5)
        assert 0.4 < time.perf_counter() - t0 < 2.0
        assert pool.idle_count() == 0


async def test_cancel_mid_response_discards_the_connection(pool: Pool) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        if i == 0:
            await asyncio.sleep(1.0)
        w.write(ok(b"late %d" % i))
        return True

    async with Scripted(h) as srv:
        task = asyncio.ensure_future(pool.request("POST", srv.url, {}, b""))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert pool.idle_count() == 0
        r = await pool.request("POST", srv.url, {}, b"")
        assert r.body == b"late 1" and srv.connections == 2


async def test_header_injection_is_refused(pool: Pool) -> None:
    with pytest.raises(ValueError, match="line break"):
        await pool.request("POST", "http://127.0.0.1:9/x", {"x-a": "v\r\nx-evil: 1"}, b"")


async def test_connection_refused_maps_to_provider_error() -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ProviderConnectionError):
        await asyncio.wrap_future(_submit(http_request(
            "POST", f"http://127.0.0.1:{port}/x", provider="t", json_body={}, timeouts=Timeouts()
        )))


def _submit(coro: Coroutine[Any, Any, object]) -> concurrent.futures.Future[object]:
    return get_runtime().submit(coro)


async def test_http_request_maps_cut_off_and_timeouts() -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        if i == 0:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            return False
        await asyncio.sleep(3)
        return False

    # the server runs on this test's loop; http.request runs on the runtime loop
    async with Scripted(h) as srv:
        with pytest.raises(ResponseError, match="cut off"):
            await asyncio.wrap_future(_submit(http_request(
                "POST", srv.url, provider="t", json_body={}, timeouts=Timeouts()
            )))
        with pytest.raises(ProviderTimeoutError):
            await asyncio.wrap_future(_submit(http_request(
                "POST", srv.url, provider="t", json_body={},
                timeouts=Timeouts(connect=1.0, read=0.3, total=5.0),
            )))


def test_headers_mapping_is_case_insensitive() -> None:
    h = Headers()
    dict.__setitem__(h, "retry-after-ms", "20")
    assert h["Retry-After-Ms"] == "20" and h.get("RETRY-AFTER-MS") == "20"
    assert "Retry-After-MS" in h and h.get("missing", "d") == "d"


def test_aiohttp_fallback_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLELRAG_HTTP", "aiohttp")
    with SimServer() as srv:
        llm = LlmClient.openai("fallback-model", base_url=srv.url, api_key="sk-test")
        assert llm.complete("hello there") == sim_reply("fallback-model", "hello there")


async def test_response_header_block_parsing(pool: Pool) -> None:
    head = ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A:  b  c \t\r\nno colon here\r\n"
            " X-Folded: y\r\nEmpty:\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n"
            "Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n{}")

    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(head.encode())
        return True

    async with Scripted(h) as srv:
        r = await pool.request("GET", srv.url, {}, None)
    assert r.status == 200 and r.body == b"{}"
    # names lower-cased, values stripped (case kept), repeats joined, colon-less lines skipped
    assert dict(r.headers) == {
        "content-length": "2", "x-a": "b  c", "x-folded": "y", "empty": "",
        "set-cookie": "a=1, b=2", "retry-after": "Wed, 21 Oct 2015 07:28:00 GMT",
    }
    assert r.headers.get("Retry-After") == "Wed, 21 Oct 2015 07:28:00 GMT"


async def test_request_line_is_parsed_once_and_checked(pool: Pool) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(ok(b"%d" % i))
        return True

    async with Scripted(h) as srv:
        for method in ("POST", "PUT", "POST"):
            await pool.request(method, srv.url + "?a=1", {"x-k": "v"}, b"{}")
        assert [q.split(b"\r\n", 1)[0] for q in srv.requests] == [
            b"POST /v1/x?a=1 HTTP/1.1", b"PUT /v1/x?a=1 HTTP/1.1", b"POST /v1/x?a=1 HTTP/1.1"]
        assert all(b"\r\nhost: 127.0.0.1:" in q and b"\r\nx-k: v\r\n" in q for q in srv.requests)
        # a line break in the URL never reaches the wire as a header line
        await pool.request("POST", srv.url + "\r\nx-evil: 1", {}, b"")
        assert b"\r\nx-evil" not in srv.requests[-1]
    with pytest.raises(ValueError, match="scheme"):
        await pool.request("POST", "ftp://127.0.0.1:9/x", {}, b"")


def test_small_json_bodies_are_held_at_their_size() -> None:
    import tracemalloc

    import orjson

    from parallelrag.providers.http import json_bytes

    payload = {"model": "m", "messages": [{"role": "user", "content": "q 1"}]}
    big = {"input": ["x" * 50_000]}
    assert json_bytes(payload) == orjson.dumps(payload) and json_bytes(big) == orjson.dumps(big)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [json_bytes(payload) for _ in range(200)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept) == 200
    # orjson's own buffer is 4 KiB per body (800 KiB for these); at their size: < 40 KiB
    assert held < 40_000, held


@pytest.mark.parametrize("what,reply", [
    ("response header block", b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * 300_000),
    ("chunk size line", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"f" * 5000),
    ("trailer line", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx-t: "
     + b"b" * 300_000),
])
async def test_endless_lines_are_refused_not_buffered(pool: Pool, what: str, reply: bytes) -> None:
    async def h(i: int, req: bytes, w: asyncio.StreamWriter) -> bool:
        w.write(reply)  # ... and the line never ends; the connection stays open
        await asyncio.sleep(2)
        return False

    async with Scripted(h) as srv:
        with pytest.raises(IncompleteResponse, match=f"{what} longer than"):
            await asyncio.wait_for(pool.request("GET", srv.url, {}, None), 1.5)
