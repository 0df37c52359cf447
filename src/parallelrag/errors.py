"""The one exception hierarchy of parallelrag.

Every error the library raises on purpose is a :class:`ParallelRagError`::

    ParallelRagError
    ├── ConfigError               bad or inconsistent configuration (also a ValueError)
    ├── RuntimeUsageError         a blocking call made where it would deadlock (runtime thread)
    │   └── RuntimeShutdownError  the runtime shut down while the call was pending
    ├── ProviderError             anything that went wrong talking to a model provider
    │   ├── AuthenticationError   401 / 403, or a proxy's 407
    │   ├── BadRequestError       400 / 404 / 413 / 422, or input rejected before sending
    │   ├── RateLimitError        429 after every retry was spent
    │   │   └── QuotaExceededError  429 saying the quota or credit is used up (not retried)
    │   ├── ServerError           5xx after every retry was spent
    │   ├── ProviderTimeoutError  connect / read / total timeout (also a builtin TimeoutError)
    │   ├── ProviderConnectionError  connection refused / reset
    │   │   └── TLSVerificationError  the server's certificate failed verification
    │   ├── ResponseError         malformed JSON, truncated stream, schema mismatch
    │   │   └── ResponseTooLargeError  a body (or one stream event) over max_response_bytes
    │   └── CircuitOpenError      the circuit breaker is open; no request was sent
    ├── BatchError                some inputs of a batch call failed (``.failures`` says which)
    ├── StoreError                the embedded store is unusable or inconsistent
    ├── LoaderError               a source could not be loaded
    └── WorkflowError             invalid workflow graph or a failed node

Errors carry ``provider``, ``status_code`` and ``request_id`` where known. They never carry an API
key: messages built from server responses go through :func:`redact`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BatchError",
    "CircuitOpenError",
    "ConfigError",
    "LoaderError",
    "ParallelRagError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeoutError",
    "QuotaExceededError",
    "RateLimitError",
    "ResponseError",
    "ResponseTooLargeError",
    "RuntimeShutdownError",
    "RuntimeUsageError",
    "ServerError",
    "StoreError",
    "TLSVerificationError",
    "WorkflowError",
    "redact",
]

_KEY_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-\.]{8,}"),
    re.compile(r"(?i)(api[-_]?key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9_\-\.]{8,}"),
]
_registered_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret so that :func:`redact` removes it from any text."""
    if value and len(value) >= 4:
        _registered_secrets.add(value)


def redact(text: str) -> str:
    """Remove API keys (registered ones and common key shapes) from ``text``."""
    for secret in _registered_secrets:
        if secret in text:
            text = text.replace(secret, "***")
    for pat in _KEY_PATTERNS:
        if pat.groups:
            text = pat.sub(lambda m: m.group(1) + "***", text)
        else:
            text = pat.sub("sk-***", text)
    return text


class ParallelRagError(Exception):
    """Base of every error parallelrag raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [self.message]
        extra = []
        if self.provider:
            extra.append(f"provider={self.provider}")
        if self.status_code is not None:
            extra.append(f"status={self.status_code}")
        if self.request_id:
            extra.append(f"request_id={self.request_id}")
        if extra:
            parts.append("(" + ", ".join(extra) + ")")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (type(self), self.message, self.provider, self.status_code, self.request_id,
             dict(self.__dict__)),
        )


def _rebuild(
    cls: type[ParallelRagError],
    message: str,
    provider: str | None,
    status_code: int | None,
    request_id: str | None,
    state: dict[str, Any],
) -> ParallelRagError:
    err = cls.__new__(cls)
    ParallelRagError.__init__(
        err, message, provider=provider, status_code=status_code, request_id=request_id
    )
    err.__dict__.update(state)
    return err


class ConfigError(ParallelRagError, ValueError):
    """Configuration is missing, invalid or inconsistent (e.g. an index built with another model)."""


class RuntimeUsageError(ParallelRagError, RuntimeError):
    """A blocking call was made on the runtime's own thread, where it would deadlock."""


class RuntimeShutdownError(RuntimeUsageError):
    """The parallelrag runtime was shut down (``runtime.shutdown()`` or interpreter exit) while
    the call was in flight or before it started; the call was cancelled and did not complete."""


class ProviderError(ParallelRagError):
    """A model provider could not serve a request."""


class AuthenticationError(ProviderError):
    """The provider rejected the credentials (401/403)."""


class BadRequestError(ProviderError, ValueError):
    """The request is invalid; retrying will not help (400/404/413/422 or rejected locally)."""


class RateLimitError(ProviderError):
    """The provider kept answering 429 until the retry budget was spent."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(ProviderError):
    """The provider kept failing with 5xx until the retry budget was spent."""


class ProviderTimeoutError(ProviderError, TimeoutError):
    """A request timed out (connect, read or total)."""


class ProviderConnectionError(ProviderError, ConnectionError):
    """The connection to the provider failed or was reset."""


class TLSVerificationError(ProviderConnectionError):
    """The server's TLS certificate failed verification (unknown CA, wrong host name, expired).

    The message carries the verifier's reason. Retrying cannot help: trust a private CA with
    ``SSL_CERT_FILE`` (or ``verify="ca.pem"`` on the provider classes)."""


class ResponseError(ProviderError):
    """The provider's response was malformed: bad JSON, missing fields, a truncated stream."""


class ResponseTooLargeError(ResponseError):
    """A response body, or one event (line) of a streamed response, was larger than the
    provider's ``max_response_bytes`` (default 64 MiB, ``PARALLELRAG_MAX_RESPONSE_BYTES``).

    The connection is dropped as soon as the limit is passed, so a huge or endless body (a
    misbehaving server, a proxy or captive portal) never fills memory. ``limit`` holds the
    limit in bytes."""

    def __init__(self, message: str, *, limit: int = 0, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.limit = limit


class CircuitOpenError(ProviderError):
    """The circuit breaker for this provider is open; the request was not sent."""

    def __init__(self, message: str, *, reopens_in_s: float = 0.0, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.reopens_in_s = reopens_in_s


class BatchError(ParallelRagError):
    """Some inputs of a batch call failed. ``failures`` maps input index → the error."""

    def __init__(self, message: str, failures: Mapping[int, BaseException], **kw: Any) -> None:
        super().__init__(message, **kw)
        self.failures: dict[int, BaseException] = dict(failures)

    @property
    def failed_indices(self) -> Sequence[int]:
        return sorted(self.failures)


class StoreError(ParallelRagError):
    """The vector store is unusable or inconsistent."""


class LoaderError(ParallelRagError):
    """A source document could not be loaded.

    ``failed`` is True (the default) where a file of a kind the user asked for could not be
    read (damaged, undecodable, a broken record): an ingest lists it under ``failed``. False
    marks a file that is not loaded by design (``"binary"``): an ingest lists it under
    ``skipped``."""

    def __init__(self, message: str, *, failed: bool = True, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.failed = failed


class WorkflowError(ParallelRagError):
    """A workflow is invalid (cycle, bad reference) or one of its nodes failed."""

    def __init__(self, message: str, *, node: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.node = node


class QuotaExceededError(RateLimitError):
    """A 429 that says the account's quota or credit is used up (OpenAI's
    ``insufficient_quota``), not a momentary rate limit: waiting does not help, so it is not
    retried. A RateLimitError, so handlers of 429s still catch it."""
