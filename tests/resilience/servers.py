"""Small HTTP servers on 127.0.0.1 for resilience tests: an OpenAI-compatible chat endpoint that
answers at once, except for requests whose body contains ``STALL`` (or every request, when
``silent``): those get no answer at all. It counts the POSTs it saw."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from parallelrag.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    ServerError,
)

SRC = str(Path(__file__).resolve().parents[2] / "src")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StallServer:
    """``srv = StallServer(silent=True).start()``; ``srv.url`` is the base URL (…/v1)."""

    def __init__(self, *, silent: bool = False) -> None:
        self.silent = silent
        self.posts = 0
        self.stalled = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.posts += 1
        if self.silent or b"STALL" in body:
            self.stalled += 1
            await asyncio.sleep(3600)
        return web.json_response({
            "id": f"chatcmpl-{self.posts}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "m",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        })

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def start(self) -> StallServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            except Exception:  # pragma: no cover - best effort
                pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class SimProcess:
    """The project's simulator in a child process (``python -m parallelrag.sim serve``), so a
    test can stop it (an outage: connections refused) and start it again on the same port."""

    def __init__(self, port: int | None = None, *args: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.args = args
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> SimProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), SRC) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "parallelrag.sim", "serve", "--port", str(self.port),
             *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "listening on http://127.0.0.1:PORT"
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"sim did not start: {line!r}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


async def post_embedding(session: aiohttp.ClientSession, base_url: str, text: str = "x") -> int:
    """One real request to an OpenAI-compatible /embeddings endpoint, failures translated into
    parallelrag's errors as a provider would (connection → ProviderConnectionError, 5xx →
    ServerError). Returns the HTTP status (200)."""
    try:
        async with session.post(
            base_url + "/embeddings",
            json={"model": "text-embedding-3-small", "input": [text], "dimensions": 4},
            headers={"authorization": "Bearer sk-test"},
        ) as resp:
            await resp.read()
            if resp.status >= 500:
                raise ServerError(f"HTTP {resp.status}", status_code=resp.status)
            if resp.status != 200:
                raise ProviderError(f"HTTP {resp.status}", status_code=resp.status)
            return resp.status
    except aiohttp.ClientConnectionError as exc:
        raise ProviderConnectionError(f"{type(exc).__name__}: {exc}") from None
    except TimeoutError as exc:
        raise ProviderTimeoutError(f"timed out: {exc}") from None
