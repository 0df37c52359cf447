"""Small real servers on 127.0.0.1 for the HTTP tests: each runs on an event loop of its own in a
daemon thread, so sync client calls (which run on the parallelrag runtime's loop) can talk to it.

* :class:`Scripted`: reads whole HTTP/1.1 requests and answers request number ``i`` with a
  handler that writes raw bytes (or nothing) and says whether to keep the connection.
* :class:`Proxy`: a forward proxy: absolute-form requests for ``http://`` targets, ``CONNECT``
  tunnels for ``https://`` targets; records what it was asked for.
* :class:`SimOver`: the project's simulator app served over TLS (a trustme certificate) or on a
  second port, with a request counter.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from aiohttp import web

from parallelrag.sim import SimConfig
from parallelrag.sim.server import SimApp

T = TypeVar("T")

Handler = Callable[[int, bytes, asyncio.StreamWriter], Awaitable[bool]]


class LoopThread:
    """An event loop in a daemon thread; :meth:`call` runs a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        """Cancel what still runs on the loop (handlers of open connections), then stop it."""

        async def cancel_rest() -> None:
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            self.call(cancel_rest(), timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request: (head incl. the blank line, body by content-length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return head, body


class Scripted:
    """A raw HTTP/1.1 server: request number i (over all connections) goes to ``handler``; the
    handler returns False to close the connection afterwards. Records requests and counts
    connections opened and closed."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = 0
        self._lt = LoopThread()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def open_connections(self) -> int:
        return self.connections - self.closed

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head, body = await read_request(reader)
                i = len(self.requests)
                self.requests.append(head + body)
                keep = await self.handler(i, head + body, writer)
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # the server is stopping
        finally:
            self.closed += 1
            writer.close()

    def start(self) -> Scripted:
        async def go() -> int:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
            return int(self._server.sockets[0].getsockname()[1])

        self.port = self._lt.call(go())
        return self

    def url(self, path: str = "/v1") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        async def go() -> None:
            if self._server is not None:
                self._server.close()

        self._lt.call(go())
        self._lt.stop()

    def __enter__(self) -> Scripted:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ok(body: bytes, extra: str = "", status: str = "200 OK") -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n"
            f"content-type: application/json\r\n{extra}\r\n").encode() + body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except RuntimeError:
            pass


class Proxy:
    """A forward proxy on 127.0.0.1. ``seen`` records ``(method, target, headers)`` for every
    request: ``("CONNECT", "127.0.0.1:PORT", ...)`` for tunnels, ``("POST", "http://...", ...)``
    for absolute-form requests (each forwarded with ``connection: close``)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        self._lt = LoopThread()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head, body = await read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        self.seen.append((method, target, headers))
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_r, up_w = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
            return
        # absolute-form: http://host:port/path
        assert target.startswith("http://"), target
        rest = target[len("http://"):]
        hostport, _, path = rest.partition("/")
        host, port = hostport.rsplit(":", 1)
        up_r, up_w = await asyncio.open_connection(host, int(port))
        out = [f"{method} /{path} HTTP/1.1"]
        for line in lines[1:]:
            if not line:
                continue
            name = line.split(":", 1)[0].strip().lower()
            if name in ("connection", "proxy-connection", "proxy-authorization", "keep-alive"):
                continue
            out.append(line)
        out.append("connection: close")
        up_w.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + body)
        await up_w.drain()
        await _pipe(up_r, writer)
        up_w.close()

    def start(self) -> Proxy:
        async def go() -> int:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            return int(self._server.sockets[0].getsockname()[1])

        self.port = self._lt.call(go())
        return self

    def stop(self) -> None:
        async def go() -> None:
            if self._server is not None:
                self._server.close()

        self._lt.call(go())
        self._lt.stop()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SimOver:
    """The simulator's app on its own port, optionally over TLS (``tls`` = a server context)."""

    def __init__(self, config: SimConfig | None = None, *, tls: ssl.SSLContext | None = None,
                 host: str = "127.0.0.1") -> None:
        self.app = SimApp(config or SimConfig())
        self.tls = tls
        self.host = host
        self.requests = 0
        self._lt = LoopThread()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}/v1"

    def start(self) -> SimOver:
        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            self.requests += 1
            resp: web.StreamResponse = await handler(request)
            return resp

        async def go() -> int:
            app = self.app.make_app()
            app.middlewares.append(count)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.tls)
            await site.start()
            server = site._server
            assert isinstance(server, asyncio.base_events.Server)
            return int(server.sockets[0].getsockname()[1])

        self.port = self._lt.call(go())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._lt.call(self._runner.cleanup())
        self._lt.stop()

    def __enter__(self) -> SimOver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tls_pair(tmp_path: Any) -> tuple[ssl.SSLContext, str]:
    """A trustme CA and a server context for 127.0.0.1 / localhost; returns (server context,
    path of the CA's PEM for the client)."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ctx, str(path)
