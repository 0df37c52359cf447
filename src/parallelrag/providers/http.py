"""The shared HTTP layer: one pooled aiohttp session per runtime, orjson, error translation."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from ..config import Timeouts
from ..errors import (
    AuthenticationError,
    BadRequestError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
    ResponseError,
    ServerError,
)
from ..resilience.retry import parse_retry_after
from ..runtime import get_runtime
from .transport import Headers, IncompleteResponse, Pool

__all__ = [
    "Headers",
    "HttpResponse",
    "error_for_status",
    "get_pool",
    "get_session",
    "request",
    "translate_exception",
    "use_lean_transport",
]

_SESSION_KEY = "http.session"
_POOL_KEY = "http.pool"


def use_lean_transport() -> bool:
    """Whether plain (non-streaming) requests use :mod:`.transport` (the default) rather than
    aiohttp; ``PARALLELRAG_HTTP=aiohttp`` switches back."""
    return os.environ.get("PARALLELRAG_HTTP", "").strip().lower() != "aiohttp"


def get_pool() -> Pool:
    """The runtime's lean keep-alive pool. Must be called on the runtime loop."""
    rt = get_runtime()

    def make() -> Pool:
        from .. import __version__

        pool = Pool(user_agent=f"parallelrag/{__version__}")

        async def close() -> None:
            pool.close()

        rt.add_closer(close)
        return pool

    return rt.state(_POOL_KEY, make)


def _json_dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def get_session() -> aiohttp.ClientSession:
    """The runtime's pooled session. Must be called on the runtime loop."""
    rt = get_runtime()

    def make() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        session = aiohttp.ClientSession(
            connector=connector,
            json_serialize=_json_dumps,
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
        )

        async def close() -> None:
            await session.close()
            await asyncio.sleep(0.05)

        rt.add_closer(close)
        return session

    return rt.state(_SESSION_KEY, make)


class HttpResponse:
    """A fully read response: status, headers (case-insensitive) and body bytes."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self, provider: str) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise ResponseError(
                f"malformed JSON from provider ({len(self.body)} bytes): {exc}",
                provider=provider,
                status_code=self.status,
                request_id=_request_id(self.headers),
            ) from None


def client_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect, sock_read=t.read)


def _request_id(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-request-id") or headers.get("request-id") or headers.get("apim-request-id")


def translate_exception(exc: BaseException, provider: str) -> ProviderError:
    """Map aiohttp / asyncio failures to the parallelrag hierarchy."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError | TimeoutError):
        return ProviderTimeoutError(f"request timed out: {type(exc).__name__}", provider=provider)
    if isinstance(exc, aiohttp.ClientPayloadError | IncompleteResponse):
        return ResponseError(f"response body was cut off: {exc}", provider=provider)
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError | OSError):
        return ProviderConnectionError(
            f"connection failed: {type(exc).__name__}: {exc}", provider=provider
        )
    if isinstance(exc, aiohttp.ClientError):
        return ProviderConnectionError(f"HTTP client error: {exc}", provider=provider)
    return ProviderError(f"unexpected error: {type(exc).__name__}: {exc}", provider=provider)


def _error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace")
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("type") or str(err)
            return str(msg)[:500]
        return str(err)[:500]
    return str(data)[:300]


def error_for_status(
    status: int, headers: Mapping[str, str], body: bytes, provider: str
) -> ProviderError:
    """The exception for a non-2xx response, with headers and retry-after attached."""
    msg = _error_message(body)
    rid = _request_id(headers)
    retry_after = parse_retry_after(headers)
    kw: dict[str, Any] = {"provider": provider, "status_code": status, "request_id": rid}
    err: ProviderError
    if status == 429:
        err = RateLimitError(f"rate limited: {msg}", retry_after=retry_after, **kw)
    elif status in (401, 403):
        err = AuthenticationError(f"authentication failed: {msg}", **kw)
    elif status >= 500:
        err = ServerError(f"server error {status}: {msg}", **kw)
    elif status in (408, 409):
        err = ProviderError(f"transient error {status}: {msg}", **kw)
    else:
        err = BadRequestError(f"bad request ({status}): {msg}", **kw)
    err.headers = headers  # type: ignore[attr-defined]
    err.retry_after = retry_after  # type: ignore[attr-defined]
    return err


def json_bytes(obj: Any) -> bytes:
    """``orjson.dumps(obj)`` in a buffer of its own size.

    orjson hands over its growing write buffer as the bytes object (4 KiB for a 60-byte chat
    request, 32 KiB for 3 KB), so every small request in flight held a page of its own: 200
    fresh pages for a 200-prompt batch, faulted in on a process's first call. Bodies under
    16 KiB are copied to their size (about a microsecond); larger ones fill their pages anyway.
    """
    data = orjson.dumps(obj)
    return bytes(memoryview(data)) if len(data) < 16384 else data


async def request(
    method: str,
    url: str,
    *,
    provider: str,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    timeouts: Timeouts,
) -> HttpResponse:
    """One HTTP request, fully read. Raises a ProviderError for non-2xx or transport failures."""
    data = json_bytes(json_body) if json_body is not None else None
    hdrs = {"content-type": "application/json", **(headers or {})}
    if use_lean_transport():
        try:
            r = await get_pool().request(
                method, url, hdrs, data, connect_timeout=timeouts.connect,
                read_timeout=timeouts.read, total_timeout=timeouts.total,
            )
        except asyncio.CancelledError:
            raise
        except ValueError as exc:
            raise BadRequestError(f"invalid request: {exc}", provider=provider) from None
        except Exception as exc:
            raise translate_exception(exc, provider) from None
        if r.status >= 400:
            raise error_for_status(r.status, r.headers, r.body, provider)
        return HttpResponse(r.status, r.headers, r.body)
    session = get_session()
    try:
        async with session.request(
            method, url, data=data, headers=hdrs, timeout=client_timeout(timeouts)
        ) as resp:
            body = await resp.read()
            status = resp.status
            rheaders = resp.headers
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise translate_exception(exc, provider) from None
    if status >= 400:
        raise error_for_status(status, rheaders, body, provider)
    return HttpResponse(status, rheaders, body)
