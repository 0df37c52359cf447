"""The one HTTP stack: a pooled aiohttp session per runtime for every request, plain and streaming.

What it adds on top of aiohttp, and why:

* **Pool.** One :class:`aiohttp.TCPConnector` per runtime without a connection cap (the
  resilience layer bounds concurrency per provider, so a second cap here would only queue work it
  already admitted); idle keep-alive sockets are closed after :data:`KEEPALIVE_TIMEOUT_S` whether
  or not anything reuses them. No cookie jar: API clients that share the session must not share
  cookies.
* **Proxies.** An explicit ``proxy=`` wins; otherwise ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
  ``ALL_PROXY`` and ``NO_PROXY`` (either case, lower case first, as urllib and curl read them),
  read when the provider is created (as httpx reads them when a client is created).
  ``http://`` and ``https://`` proxy URLs work (CONNECT tunnels for ``https://`` targets); user and
  password in the proxy URL become ``Proxy-Authorization`` for the proxy alone; a proxy that
  answers 407 is an :class:`~parallelrag.errors.AuthenticationError` (not retried).
  ``NO_PROXY`` entries may be host names, ``host:port`` or CIDR ranges (``10.0.0.0/8``, as
  curl and httpx read them) for IP-literal hosts. Other schemes
  (``socks5://``) are a :class:`~parallelrag.errors.ConfigError` naming the variable, rather than
  a silent direct connection.
* **TLS.** ``verify=True`` (the default): the system's CAs, honouring ``SSL_CERT_FILE`` /
  ``SSL_CERT_DIR`` as they are when the provider is created; ``verify="ca.pem"``: that CA bundle
  only; an :class:`ssl.SSLContext`: used as given; ``verify=False``: no certificate checks.
* **Redirects.** 307 and 308 are followed with the same method and body, at most
  :data:`MAX_REDIRECTS` hops; on a hop to another origin (scheme, host, port) the credential
  headers (``authorization``, ``api-key``, ``x-api-key``) are dropped; a hop from ``https://``
  to ``http://`` is refused (:class:`~parallelrag.errors.BadRequestError`): the body would go
  out unencrypted. Any other 3xx is a
  :class:`~parallelrag.errors.BadRequestError` naming the ``Location``: an API that answers a POST
  with 301/302/303 wants a new base URL, and replaying the call as a GET would be wrong.
* **No hidden resends.** aiohttp resends only idempotent methods on a dropped keep-alive
  connection, never a POST: a request cut off after it was written surfaces as
  :class:`~parallelrag.errors.ProviderConnectionError`, so the retry policy decides, the rate
  limiter is asked again and the stats count it.
* **Bounded bodies.** A response body is read up to ``max_response_bytes`` (default
  :data:`DEFAULT_MAX_RESPONSE_BYTES`, 64 MiB, after decompression; ``PARALLELRAG_MAX_RESPONSE_BYTES``
  or ``HttpOptions(max_response_bytes=)``): past it the connection is dropped and the request
  fails with :class:`~parallelrag.errors.ResponseTooLargeError`, so a huge or endless body (a
  misbehaving server, a proxy or captive portal) never fills memory. A streamed response is
  bounded per event (line), not as a whole (see :class:`~parallelrag.providers.chat_openai.SSEDecoder`).
  Error responses (4xx/5xx) and redirects are read for their first :data:`ERROR_BODY_BYTES`
  only: their status decides the error, the message needs no more.
* **Typed errors with their detail**, never an API key: connect / read / total timeouts say which
  and how many seconds; a certificate that fails verification is a
  :class:`~parallelrag.errors.TLSVerificationError` (a ProviderConnectionError) with the
  verifier's reason; URLs in messages lose credential-like query values (``key``, ``token``,
  ``sig``, ...).

Callers build header dicts once per provider (values that carry a key are
:class:`~parallelrag.config.MaskedStr`) and bodies once per attempt (:func:`json_bytes`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

import aiohttp
import orjson
from aiohttp.http_exceptions import HttpProcessingError
from yarl import URL

from ..config import MaskedStr, Timeouts
from ..errors import (
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    ResponseError,
    ResponseTooLargeError,
    ServerError,
    TLSVerificationError,
)
from ..resilience.retry import parse_retry_after
from ..runtime import get_runtime

__all__ = [
    "CREDENTIAL_HEADERS",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "ERROR_BODY_BYTES",
    "KEEPALIVE_TIMEOUT_S",
    "MAX_REDIRECTS",
    "HttpOptions",
    "HttpResponse",
    "body_snippet",
    "error_for_status",
    "get_session",
    "json_bytes",
    "masked_headers",
    "max_response_bytes_from_env",
    "read_body",
    "request",
    "safe_url",
    "send",
    "stream",
    "too_large",
    "translate_exception",
]

#: idle pooled connections are closed after this many seconds (checked by a timer, not on reuse)
KEEPALIVE_TIMEOUT_S = 15.0
#: 307 / 308 hops followed per request
MAX_REDIRECTS = 5
#: request headers that carry a credential: masked in reprs, dropped on a cross-origin redirect
CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key"})
#: the largest response body read (after decompression), and the largest event (line) of a
#: streamed response, unless ``PARALLELRAG_MAX_RESPONSE_BYTES`` or ``max_response_bytes=`` says
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024
#: bytes of an error (4xx/5xx) or redirect response read; the rest is dropped with the connection
ERROR_BODY_BYTES = 64 * 1024
_MAX_RESPONSE_ENV = "PARALLELRAG_MAX_RESPONSE_BYTES"

_SESSION_KEY = "http.session"
_SECRET_QUERY = re.compile(r"(?i)key|token|secret|sig|password|passwd|auth|credential|code")
_PROXY_ENV = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
              "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY", "REQUEST_METHOD")


# --------------------------------------------------------------------------- session
def get_session() -> aiohttp.ClientSession:
    """The runtime's pooled session. Must be called on the runtime loop."""
    rt = get_runtime()

    def make() -> aiohttp.ClientSession:
        from .. import __version__

        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=0,
            ttl_dns_cache=300,
            keepalive_timeout=KEEPALIVE_TIMEOUT_S,
            # only the Python versions whose SSL transports can leak need aiohttp's sweeper
            enable_cleanup_closed=bool(getattr(aiohttp.connector, "NEEDS_CLEANUP_CLOSED", False)),
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=True,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"user-agent": f"parallelrag/{__version__}"},
            trust_env=False,  # proxies are resolved here (aiohttp's own reading skips ALL_PROXY)
        )

        async def close() -> None:
            await session.close()
            await asyncio.sleep(0.05)

        rt.add_closer(close)
        return session

    return rt.state(_SESSION_KEY, make)


# --------------------------------------------------------------------------- options
def _check_limit(value: object, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{source} must be a positive number of bytes, not {value!r}")
    return value


def max_response_bytes_from_env() -> int:
    """``PARALLELRAG_MAX_RESPONSE_BYTES`` (a positive integer of bytes), else the default."""
    raw = os.environ.get(_MAX_RESPONSE_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_RESPONSE_BYTES
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        raise ConfigError(f"{_MAX_RESPONSE_ENV} must be a positive number of bytes, "
                          f"not {raw[:40]!r}") from None
    return _check_limit(value, _MAX_RESPONSE_ENV)


#: (proxy URL without user info, headers for the proxy: Proxy-Authorization, masked) or Nones
_ProxyChoice = tuple[URL | None, Mapping[str, str] | None]


def _parse_proxy(value: str, source: str) -> _ProxyChoice:
    if "://" not in value:
        value = "http://" + value  # "proxy.corp:3128", as curl and urllib read it
    url = URL(value)
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            f"unsupported proxy {safe_url(url.with_user(None))!r} from {source}: only http:// and "
            "https:// proxies are supported"
        )
    headers = None
    if url.user is not None:
        basic = aiohttp.encode_basic_auth(url.user, url.password or "")
        headers = {"proxy-authorization": MaskedStr(basic)}
        url = url.with_user(None)
    return url, headers


@lru_cache(maxsize=256)
def _env_proxy(snapshot: tuple[str | None, ...], scheme: str, host: str, port: int | None
               ) -> _ProxyChoice:
    env = dict(zip(_PROXY_ENV, snapshot, strict=True))

    def pick(name: str) -> tuple[str | None, str]:
        low = env[name]
        if low is not None:
            return low, name
        return env[name.upper()], name.upper()

    no_proxy, _ = pick("no_proxy")
    if no_proxy:
        hostport = f"{host}:{port}" if port is not None else host
        if proxy_bypass_environment(hostport, {"no": no_proxy}) or _in_cidr(host, no_proxy):
            return None, None
    value, source = pick(f"{scheme}_proxy")
    if scheme == "http" and source == "HTTP_PROXY" and env["REQUEST_METHOD"]:
        value = None  # CGI: HTTP_PROXY may come from a request header (httpoxy)
    if not value:
        value, source = pick("all_proxy")
    if not value:
        return None, None
    return _parse_proxy(value, source)


def _in_cidr(host: str, no_proxy: str) -> bool:
    """Whether the IP literal ``host`` lies in a CIDR entry of ``no_proxy`` (``10.0.0.0/8``,
    ``fd00::/8``), as curl and httpx read them; urllib's matcher compares names only."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    for entry in no_proxy.split(","):
        entry = entry.strip()
        if "/" not in entry:
            continue
        try:
            net = ipaddress.ip_network(entry.strip("[]"), strict=False)
        except ValueError:
            continue
        if ip.version == net.version and ip in net:
            return True
    return False


@lru_cache(maxsize=16)
def _default_ssl_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """The system's CAs, or those SSL_CERT_FILE / SSL_CERT_DIR name (as OpenSSL reads them)."""
    if not cert_file and not cert_dir:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=cert_file or None, capath=cert_dir or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the CAs named by SSL_CERT_FILE={cert_file!r} / SSL_CERT_DIR="
            f"{cert_dir!r}: {exc}") from None


class HttpOptions:
    """Per-provider connection options: ``proxy`` (None = from the environment), ``verify``
    and ``max_response_bytes`` (None = ``PARALLELRAG_MAX_RESPONSE_BYTES``, else
    :data:`DEFAULT_MAX_RESPONSE_BYTES`; see the module docstring). Invalid values are a
    ConfigError at construction.

    The environment (``*_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE``, ``SSL_CERT_DIR``,
    ``PARALLELRAG_MAX_RESPONSE_BYTES``) is read here, when the provider is created, as httpx reads
    it when a client is created; nothing is looked up per request.
    """

    __slots__ = ("_env", "_proxy", "_ssl", "_ssl_env", "max_response_bytes", "proxy", "verify")

    def __init__(self, proxy: str | None = None,
                 verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
                 max_response_bytes: int | None = None) -> None:
        self.proxy = proxy
        self.verify = verify
        self.max_response_bytes = (max_response_bytes_from_env() if max_response_bytes is None
                                   else _check_limit(max_response_bytes, "max_response_bytes"))
        self._proxy: _ProxyChoice | None = _parse_proxy(proxy, "proxy=") if proxy else None
        get = os.environ.get
        env = tuple(get(name) for name in _PROXY_ENV)
        self._env: tuple[str | None, ...] | None = env if any(env[:6]) else None
        self._ssl_env = (get("SSL_CERT_FILE"), get("SSL_CERT_DIR"))
        self._ssl: ssl.SSLContext | bool | None
        if isinstance(verify, ssl.SSLContext):
            self._ssl = verify
        elif verify is True:
            self._ssl = None  # the default context for self._ssl_env, made on first use
        elif verify is False:
            self._ssl = False
        elif isinstance(verify, str | os.PathLike):
            path = Path(verify)
            if not path.is_file():
                raise ConfigError(f"verify=: CA bundle {str(path)!r} is not a file")
            try:
                self._ssl = ssl.create_default_context(cafile=str(path))
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(f"verify=: cannot load CA bundle {str(path)!r}: {exc}") from None
        else:
            raise ConfigError(
                f"verify must be True, False, a CA bundle path or an ssl.SSLContext, not {verify!r}")

    def __repr__(self) -> str:
        proxy = safe_url(self._proxy[0]) if self._proxy and self._proxy[0] else None
        return (f"HttpOptions(proxy={proxy!r}, verify={self.verify!r}, "
                f"max_response_bytes={self.max_response_bytes!r})")

    def proxy_for(self, url: URL) -> _ProxyChoice:
        """The proxy (and its headers) for ``url``: the explicit one, else the environment's."""
        if self._proxy is not None:
            return self._proxy
        if self._env is None:
            return None, None
        return _env_proxy(self._env, url.scheme, url.host or "", url.explicit_port)

    def ssl_for(self, url: URL) -> ssl.SSLContext | bool:
        """aiohttp's ``ssl=`` argument for ``url``."""
        if url.scheme != "https":
            return True
        if self._ssl is None:
            return _default_ssl_context(*self._ssl_env)
        return self._ssl


# --------------------------------------------------------------------------- responses, errors
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
            ctype = self.headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype and "json" not in ctype:
                # a captive portal, a proxy's login or error page: say what came and show it
                raise ResponseError(
                    f"expected JSON from the provider, got {ctype} ({len(self.body)} bytes: "
                    f"{body_snippet(self.body)!r}); a proxy, firewall or captive portal may have "
                    "answered instead of the API",
                    provider=provider, status_code=self.status,
                    request_id=_request_id(self.headers),
                ) from None
            raise ResponseError(
                f"malformed JSON from provider ({len(self.body)} bytes): {exc}",
                provider=provider,
                status_code=self.status,
                request_id=_request_id(self.headers),
            ) from None


def body_snippet(body: bytes, limit: int = 160) -> str:
    """The start of a non-JSON body on one line, tags stripped (a page's title and text)."""
    text = body[:4096].decode("utf-8", "replace")
    text = " ".join(re.sub(r"<[^>]*>", " ", text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@lru_cache(maxsize=64)
def client_timeout(t: Timeouts, total: float | None = -1.0) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for ``t``; ``total`` overrides ``t.total`` (a redirect's remainder)."""
    return aiohttp.ClientTimeout(
        total=t.total if total == -1.0 else total, connect=t.connect, sock_connect=t.connect,
        sock_read=t.read,
    )


@lru_cache(maxsize=1024)
def _url(url: str) -> URL:
    """A parsed URL, cached: providers send to a handful of URLs, and aiohttp takes a URL object
    without parsing it again."""
    return URL(url)


def _request_id(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-request-id") or headers.get("request-id") or headers.get("apim-request-id")


def safe_url(url: str | URL) -> str:
    """``url`` without user info and with credential-like query values (key, token, sig,
    secret, password, auth, code) replaced by ``***``: fit for messages and logs."""
    u = url if isinstance(url, URL) else URL(url)
    if u.user is not None or u.password is not None:
        u = u.with_user(None)
    text = str(u.with_query(None)) if u.query_string else str(u)
    if not u.query_string:
        return text
    pairs = [(k, "***" if _SECRET_QUERY.search(k) else v)
             for k, v in parse_qsl(u.query_string, keep_blank_values=True)]
    return f"{text}?{urlencode(pairs, safe='*')}"


def _origin(url: URL) -> str:
    try:
        return str(url.origin())
    except ValueError:
        return safe_url(url)


def _fmt_s(v: float | None) -> str:
    return "no limit" if v is None else f"{v:g} s"


def translate_exception(
    exc: BaseException,
    provider: str,
    *,
    url: str | URL | None = None,
    timeouts: Timeouts | None = None,
) -> ProviderError:
    """Map aiohttp / asyncio / OS failures to the parallelrag hierarchy, with the URL (query
    secrets removed) and the timeout that fired where known."""
    if isinstance(exc, ProviderError):
        return exc
    where = safe_url(url) if url is not None else "the provider"
    t = timeouts
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        limit = f" within {_fmt_s(t.connect)}" if t else ""
        origin = _origin(url if isinstance(url, URL) else URL(url)) if url is not None else where
        return ProviderTimeoutError(
            f"connect timeout: no connection to {origin}{limit}", provider=provider)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        limit = f" for {_fmt_s(t.read)}" if t else ""
        return ProviderTimeoutError(
            f"read timeout: no data from {where}{limit}", provider=provider)
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        limit = f" within its total timeout of {_fmt_s(t.total)}" if t else ""
        return ProviderTimeoutError(
            f"total timeout: the request to {where} did not complete{limit}", provider=provider)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        reason = getattr(cert, "verify_message", None) or str(cert)
        return TLSVerificationError(
            f"TLS certificate verify failed for {where}: {reason} (to trust a private CA, set "
            "SSL_CERT_FILE to a bundle that contains it)", provider=provider)
    if isinstance(exc, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        return ProviderConnectionError(f"TLS handshake with {where} failed: {exc}",
                                       provider=provider)
    if isinstance(exc, aiohttp.ClientHttpProxyError) and exc.status == 407:
        return _proxy_auth_error(where, provider)
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return ProviderConnectionError(
            f"the proxy refused the tunnel to {where}: {exc.status} {exc.message}",
            provider=provider)
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return ProviderConnectionError(f"cannot connect to the proxy for {where}: {exc.os_error}",
                                       provider=provider)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ProviderConnectionError(f"cannot connect to {where}: {exc.os_error}",
                                       provider=provider)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return ProviderConnectionError(
            f"{where}: the server closed the connection before a complete response",
            provider=provider)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return ResponseError(f"response body from {where} was cut off: {exc}", provider=provider)
    if isinstance(exc, HttpProcessingError):
        return ResponseError(f"malformed HTTP response from {where}: {_one_line(exc.message)}",
                             provider=provider)
    if isinstance(exc, aiohttp.InvalidURL):
        return BadRequestError(f"invalid URL {where}: {exc}", provider=provider)
    if isinstance(exc, aiohttp.ClientConnectionError | ConnectionError | OSError):
        return ProviderConnectionError(
            f"connection to {where} failed: {type(exc).__name__}: {exc}", provider=provider)
    if isinstance(exc, aiohttp.ClientResponseError):  # aiohttp's wrapper of a parse error
        return ResponseError(f"malformed HTTP response from {where}: {_one_line(exc.message)}",
                             provider=provider)
    if isinstance(exc, aiohttp.ClientError):
        return ProviderConnectionError(f"HTTP client error for {where}: {exc}", provider=provider)
    return ProviderError(f"unexpected error: {type(exc).__name__}: {exc}", provider=provider)


def _proxy_auth_error(where: str, provider: str) -> AuthenticationError:
    """407 from the proxy (on a CONNECT or a proxied request): its credentials are missing or
    wrong; resending cannot help, and the provider never saw the request."""
    return AuthenticationError(
        f"the proxy requires authentication (407 Proxy Authentication Required) for {where}: "
        "give it a user and password in the proxy URL (http://USER:PASSWORD@host:port, in "
        "proxy= or HTTPS_PROXY / HTTP_PROXY)", provider=provider, status_code=407)


def _one_line(message: object) -> str:
    """llhttp's messages span lines (the offending bytes, then a caret): one line of them."""
    parts = [p.strip() for p in str(message).splitlines()]
    return " ".join(p for p in parts if p and set(p) != {"^"})


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


#: error types / codes of a 429 that mean "the account is out of quota or credit"
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})


def _error_code(body: bytes) -> str | None:
    """The ``error.code`` (else ``error.type``) of a JSON error body, or None."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return None
    for key in ("code", "type"):
        value = err.get(key)
        if isinstance(value, str) and value in _QUOTA_CODES:
            return value
    value = err.get("code") or err.get("type")
    return value if isinstance(value, str) else None


def error_for_status(
    status: int, headers: Mapping[str, str], body: bytes, provider: str
) -> ProviderError:
    """The exception for a non-2xx response, with headers and retry-after attached."""
    msg = _error_message(body)
    rid = _request_id(headers)
    retry_after = parse_retry_after(headers)
    kw: dict[str, Any] = {"provider": provider, "status_code": status, "request_id": rid}
    err: ProviderError
    if status == 429 and _error_code(body) in _QUOTA_CODES:
        err = QuotaExceededError(
            f"quota exceeded (not retried: waiting does not help): {msg}",
            retry_after=retry_after, **kw)
    elif status == 429:
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


_JSON_HEADERS = {"content-type": "application/json"}
_SECRET_HEADER = re.compile(r"(?i)auth|key|token|secret|cookie|signature|session")


def masked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` whose credential-like values (names with auth, key, token, secret,
    cookie, signature, session) are :class:`~parallelrag.config.MaskedStr`: the wire value is
    unchanged, reprs show ``'***'``. A name or value that cannot be a header (not a string, a line
    break or another control character) is a :class:`ConfigError` here, not a failure at the
    first request."""
    for k, v in headers.items():
        if not isinstance(k, str) or not isinstance(v, str) or any(
                ord(c) < 32 or ord(c) == 127 for c in k + v):
            raise ConfigError(f"headers: {k!r} is not a valid header (a string name and value, "
                              "one line each)")
    return {k: MaskedStr(v) if _SECRET_HEADER.search(k) else v for k, v in headers.items()}

#: what reading a response body can raise (anything else is a caller's bug and passes unchanged)
_TRANSPORT_ERRORS = (aiohttp.ClientError, HttpProcessingError, OSError, asyncio.TimeoutError)


def too_large(what: str, url: str | URL | None, limit: int, provider: str | None,
              status: int | None = None) -> ResponseTooLargeError:
    """The error for ``what`` (e.g. "response body") over ``limit`` bytes; the URL loses its
    credential-like query values."""
    where = f" from {safe_url(url)}" if url is not None else ""
    return ResponseTooLargeError(
        f"{what}{where} is larger than the limit of {limit} bytes; the connection was dropped "
        f"(raise it with max_response_bytes= or {_MAX_RESPONSE_ENV})",
        limit=limit, provider=provider, status_code=status)


async def read_body(resp: aiohttp.ClientResponse, limit: int, *, provider: str,
                    url: str | URL) -> bytes:
    """The whole body of ``resp``, at most ``limit`` bytes (after decompression): a declared
    ``Content-Length`` over it fails before reading, a body that grows past it fails there
    (:class:`~parallelrag.errors.ResponseTooLargeError`); the caller closes the response."""
    declared = resp.content_length
    if (declared is not None and declared > limit
            and resp.headers.get("content-encoding", "").strip().lower() in ("", "identity")):
        raise too_large("response body", url, limit, provider, resp.status)
    chunks: list[bytes] = []
    size = 0
    content = resp.content
    while True:
        chunk = await content.readany()
        if not chunk:
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise too_large("response body", url, limit, provider, resp.status)
        chunks.append(chunk)


async def _read_prefix(resp: aiohttp.ClientResponse, cap: int) -> tuple[bytes, bool]:
    """Up to ``cap`` bytes of the body, and whether that was all of it (then the connection
    can be reused; otherwise the caller closes it)."""
    buf = bytearray()
    content = resp.content
    while len(buf) < cap:
        chunk = await content.readany()
        if not chunk:
            return bytes(buf), True
        buf += chunk
    whole = content.at_eof() and len(buf) <= cap
    return bytes(buf[:cap]), whole


# --------------------------------------------------------------------------- sending
async def send(
    method: str,
    url: str,
    *,
    provider: str,
    headers: Mapping[str, str],
    data: bytes | None,
    timeouts: Timeouts,
    options: HttpOptions | None = None,
) -> aiohttp.ClientResponse:
    """Send one request and return the response once its head arrived (any status but 3xx).

    Follows 307/308 (see the module docstring); the caller reads or streams the body and must
    release or close the response. Failures are ProviderErrors.
    """
    opts = options or HttpOptions()
    session = get_session()
    try:
        target = _url(url)
    except ValueError as exc:
        raise BadRequestError(f"invalid URL {url[:200]!r}: {exc}", provider=provider) from None
    hdrs = headers
    loop = asyncio.get_running_loop()
    deadline = None if timeouts.total is None else loop.time() + timeouts.total
    for hop in range(MAX_REDIRECTS + 1):
        proxy, proxy_headers = opts.proxy_for(target)
        timeout = client_timeout(timeouts) if hop == 0 or deadline is None else client_timeout(
            timeouts, max(0.001, deadline - loop.time()))
        ssl_arg = opts.ssl_for(target)
        hop_headers = hdrs
        if proxy_headers and target.scheme == "http":
            # absolute-form through the proxy: its credentials ride on the request itself
            # (for https targets aiohttp puts proxy_headers on the CONNECT only)
            hop_headers = {**hdrs, **proxy_headers}
        try:
            resp = await session.request(
                method, target, data=data, headers=hop_headers, proxy=proxy,
                proxy_headers=proxy_headers,
                ssl=ssl_arg, timeout=timeout, allow_redirects=False,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate_exception(exc, provider, url=target, timeouts=timeouts) from None
        status = resp.status
        if status == 407 and proxy is not None:
            resp.close()
            raise _proxy_auth_error(safe_url(target), provider)
        if status < 300 or status >= 400:
            return resp
        location = resp.headers.get("location", "")
        if status not in (307, 308) or not location:
            resp.close()
            shown = safe_url(target.join(URL(location))) if location else "(no Location header)"
            raise BadRequestError(
                f"unexpected redirect {status} from {safe_url(target)} to {shown}: only 307/308 "
                "are followed for API requests; point base_url at the new location",
                provider=provider, status_code=status, request_id=_request_id(resp.headers),
            )
        try:  # a small body: read it so the connection can be reused
            _, whole = await _read_prefix(resp, ERROR_BODY_BYTES)
        except asyncio.CancelledError:
            resp.close()
            raise
        except Exception:
            resp.close()
        else:
            if whole:
                resp.release()
            else:
                resp.close()
        try:
            nxt = target.join(URL(location))
        except ValueError:
            nxt = URL()
        if nxt.scheme not in ("http", "https") or not nxt.host:
            raise BadRequestError(
                f"redirect {status} from {safe_url(target)} to an unusable location "
                f"{location[:200]!r}", provider=provider, status_code=status)
        if target.scheme == "https" and nxt.scheme == "http":
            # the body (prompts, documents) would go out unencrypted
            raise BadRequestError(
                f"redirect {status} from {safe_url(target)} to {safe_url(nxt)} refused: it would "
                "send the request unencrypted over http://; point base_url at the new location "
                "if that is intended", provider=provider, status_code=status,
                request_id=_request_id(resp.headers))
        if _origin(nxt) != _origin(target):
            hdrs = {k: v for k, v in hdrs.items() if k.lower() not in CREDENTIAL_HEADERS}
        target = nxt
    raise BadRequestError(
        f"too many redirects: more than {MAX_REDIRECTS} hops from {safe_url(url)}",
        provider=provider, status_code=status,
    )


async def request(
    method: str,
    url: str,
    *,
    provider: str,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    data: bytes | None = None,
    timeouts: Timeouts,
    options: HttpOptions | None = None,
) -> HttpResponse:
    """One HTTP request, fully read. Raises a ProviderError for non-2xx or transport failures.

    ``headers`` go out as given (add ``content-type`` there to avoid a copy per call); the body is
    ``data`` or ``json_body`` serialized once. A body over ``options.max_response_bytes`` is a
    :class:`~parallelrag.errors.ResponseTooLargeError`; of a non-2xx body only the first
    :data:`ERROR_BODY_BYTES` are read (for the error's message).
    """
    if options is None:
        options = HttpOptions()
    if data is None and json_body is not None:
        data = json_bytes(json_body)
    if headers is None:
        headers = _JSON_HEADERS
    elif "content-type" not in headers:
        headers = {**_JSON_HEADERS, **headers}
    resp = await send(method, url, provider=provider, headers=headers, data=data,
                      timeouts=timeouts, options=options)
    status = resp.status
    try:
        if status >= 400:
            body, whole = await _read_prefix(resp, ERROR_BODY_BYTES)
        else:
            body, whole = await read_body(resp, options.max_response_bytes, provider=provider,
                                          url=url), True
    except asyncio.CancelledError:
        resp.close()
        raise
    except Exception as exc:
        resp.close()
        raise translate_exception(exc, provider, url=url, timeouts=timeouts) from None
    if whole:
        resp.release()
    else:
        resp.close()
    if status >= 400:
        raise error_for_status(status, resp.headers, body, provider)
    return HttpResponse(status, resp.headers, body)


@asynccontextmanager
async def stream(
    method: str,
    url: str,
    *,
    provider: str,
    headers: Mapping[str, str],
    data: bytes | None,
    timeouts: Timeouts,
    options: HttpOptions | None = None,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """Send a request and yield the response for streaming once its status is 2xx.

    Non-2xx: the matching ProviderError (body read). Failures while the caller reads the body
    (timeouts, cut-off streams) are translated as they leave the ``async with`` block. On exit
    the response is released if it was read to the end and closed (connection dropped)
    otherwise, so an abandoned stream stops the server promptly.
    """
    resp = await send(method, url, provider=provider, headers=headers, data=data,
                      timeouts=timeouts, options=options)
    try:
        if resp.status >= 400:
            try:
                body, _ = await _read_prefix(resp, ERROR_BODY_BYTES)
            except asyncio.CancelledError:
                raise
            except Exception:
                body = b""
            raise error_for_status(resp.status, resp.headers, body, provider)
        yield resp
    except (asyncio.CancelledError, ProviderError):
        resp.close()
        raise
    except _TRANSPORT_ERRORS as exc:
        resp.close()
        raise translate_exception(exc, provider, url=url, timeouts=timeouts) from None
    except BaseException:
        resp.close()
        raise
    else:
        if resp.content.at_eof():
            resp.release()
        else:
            resp.close()
