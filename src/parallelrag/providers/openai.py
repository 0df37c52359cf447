"""OpenAI-compatible wire protocol (OpenAI, Azure OpenAI, vLLM, TEI, Ollama, LM Studio, ...)."""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..config import MaskedStr, Secret, Timeouts, env, secret_from
from ..errors import BadRequestError, ConfigError, ResponseError
from ..resilience import Resilience, ResilienceConfig, shared_resilience
from .http import HttpOptions, HttpResponse, masked_headers, request

__all__ = ["OpenAICompat", "sanitize_text"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_AZURE_API_VERSION = "2024-10-21"


def sanitize_text(text: str) -> str:
    """Replace lone surrogates (not representable in JSON) with "?" (UTF-8 encode, "replace")."""
    if text.isascii():  # the common case: no encode needed
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


class OpenAICompat:
    """Endpoint, credentials and shared resilience for one (base_url, model) of an OpenAI-style API.

    ``proxy``: an ``http://`` or ``https://`` proxy URL for every request of this provider (wins
    over ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY``, which apply otherwise).
    ``verify``: ``True`` (system CAs, honouring ``SSL_CERT_FILE``), a CA bundle path, an
    :class:`ssl.SSLContext`, or ``False`` (no certificate checks). ``max_response_bytes``: the
    largest response body (and stream event) read before the request fails with
    :class:`~parallelrag.errors.ResponseTooLargeError` (default ``PARALLELRAG_MAX_RESPONSE_BYTES``,
    else 64 MiB). Headers are built once here; values that carry the key are masked in reprs.
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        azure_endpoint: str | None = None,
        azure_deployment: str | None = None,
        api_version: str | None = None,
        timeouts: Timeouts | float | None = None,
        resilience: ResilienceConfig | None = None,
        headers: Mapping[str, str] | None = None,
        provider: str | None = None,
        proxy: str | None = None,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
        max_response_bytes: int | None = None,
    ) -> None:
        if not model and not azure_deployment:
            raise ConfigError("a model (or Azure deployment) name is required")
        if not isinstance(model or azure_deployment, str):
            raise ConfigError(f"the model name must be a string, not {model!r}")
        self.model = model or (azure_deployment or "")
        self.timeouts = Timeouts.of(timeouts)
        self.http = HttpOptions(proxy=proxy, verify=verify,
                                max_response_bytes=max_response_bytes)
        self.extra_headers = masked_headers(headers or {})
        self.azure = azure_endpoint is not None or azure_deployment is not None
        if self.azure:
            endpoint = azure_endpoint or env("AZURE_OPENAI_ENDPOINT")
            if not endpoint:
                raise ConfigError("Azure needs endpoint= (or AZURE_OPENAI_ENDPOINT)")
            if not azure_deployment:
                raise ConfigError("Azure needs deployment=")
            self.deployment: str | None = azure_deployment
            self.api_version: str | None = api_version or env("OPENAI_API_VERSION", DEFAULT_AZURE_API_VERSION)
            self.base_url = endpoint.rstrip("/")
            self.api_key = secret_from(api_key, "AZURE_OPENAI_API_KEY", "OPENAI_API_KEY")
            self.provider = provider or "azure"
        else:
            self.deployment = None
            self.api_version = None
            url = base_url or env("OPENAI_BASE_URL") or DEFAULT_BASE_URL
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"base_url must start with http:// or https://, got {url!r}")
            self.base_url = url.rstrip("/")
            self.api_key = secret_from(api_key, "OPENAI_API_KEY")
            self.provider = provider or "openai"
            if self.api_key is None and self.base_url == DEFAULT_BASE_URL:
                raise ConfigError("OpenAI needs api_key= or OPENAI_API_KEY")
        self.resilience: Resilience = shared_resilience((self.base_url, self.model), resilience)
        self._b64_supported: bool | None = None
        self._headers = self._build_headers()
        self._urls: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"OpenAICompat(provider={self.provider!r}, base_url={self.base_url!r}, model={self.model!r})"

    # ------------------------------------------------------------------ plumbing
    def url(self, endpoint: str) -> str:
        url = self._urls.get(endpoint)
        if url is None:
            if self.azure:
                url = (
                    f"{self.base_url}/openai/deployments/{self.deployment}/{endpoint}"
                    f"?api-version={self.api_version}"
                )
            else:
                url = f"{self.base_url}/{endpoint}"
            self._urls[endpoint] = url
        return url

    def _build_headers(self) -> dict[str, str]:
        h: dict[str, str] = dict(self.extra_headers)
        if not any(k.lower() == "content-type" for k in h):
            h["content-type"] = "application/json"
        if self.api_key is not None:
            if self.azure:
                h["api-key"] = MaskedStr(self.api_key.get())
            else:
                h["authorization"] = MaskedStr(f"Bearer {self.api_key.get()}")
        return h

    def headers(self) -> dict[str, str]:
        """The request headers (a copy): content type, extra headers, the key (masked repr)."""
        return dict(self._headers)

    async def post(self, endpoint: str, payload: Any) -> HttpResponse:
        """One attempt (no retries): the resilience executor wraps this."""
        resp = await request(
            "POST",
            self.url(endpoint),
            provider=self.provider,
            headers=self._headers,
            json_body=payload,
            timeouts=self.timeouts,
            options=self.http,
        )
        self.resilience.rate_limiter.update_from_headers(resp.headers)
        return resp

    # ------------------------------------------------------------------ embeddings
    async def embed_once(
        self, texts: list[str], *, dimensions: int | None, user: str | None = None
    ) -> tuple[np.ndarray, int | None]:
        """One /embeddings request. Returns (float32 (n, dim) rows in input order, usage tokens)."""
        payload: dict[str, Any] = {"model": self.model, "input": texts}
        if dimensions is not None:
            payload["dimensions"] = dimensions
        if user:
            payload["user"] = user
        use_b64 = self._b64_supported is not False
        if use_b64:
            payload["encoding_format"] = "base64"
        try:
            resp = await self.post("embeddings", payload)
        except BadRequestError as exc:
            if use_b64 and self._b64_supported is None and (
                "base64" in exc.message or "encoding_format" in exc.message
            ):
                self._b64_supported = False
                payload.pop("encoding_format", None)
                resp = await self.post("embeddings", payload)
            else:
                raise
        data = resp.json(self.provider)
        return self._parse_embeddings(data, len(texts), resp)

    def _bad(self, what: str, resp: HttpResponse) -> ResponseError:
        """The error for an embeddings answer that cannot be mapped onto the inputs."""
        return ResponseError(f"unusable embeddings response: {what}", provider=self.provider,
                             status_code=resp.status)

    def _parse_embeddings(
        self, data: Any, n: int, resp: HttpResponse
    ) -> tuple[np.ndarray, int | None]:
        if isinstance(data, dict) and data.get("error") is not None and not data.get("data"):
            # a gateway's 200 carrying an error object: its message, not "KeyError: 'data'"
            from .chat_openai import error_from_payload  # chat_openai imports this module

            raise error_from_payload(data["error"], self.provider)
        try:
            items = data["data"]
            if len(items) != n:
                raise ResponseError(
                    f"provider returned {len(items)} embeddings for {n} inputs",
                    provider=self.provider,
                )
            rows: list[np.ndarray | None] = [None] * n
            dim = -1
            for pos, item in enumerate(items):
                idx = item.get("index", pos)
                # a bool is an int to Python, and a negative one indexes from the end: either
                # would put a vector on another input's row without a word
                if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < n:
                    raise self._bad(f"index {idx!r} is not one of 0..{n - 1}", resp)
                if rows[idx] is not None:
                    raise self._bad(f"index {idx} twice", resp)
                emb = item["embedding"]
                if isinstance(emb, str):
                    vec = np.frombuffer(base64.b64decode(emb), dtype="<f4")
                    if self._b64_supported is None:
                        self._b64_supported = True
                else:
                    vec = np.asarray(emb, dtype=np.float32)
                if vec.ndim != 1 or vec.size == 0:
                    what = "empty" if vec.size == 0 else f"not a flat list (shape {vec.shape})"
                    raise self._bad(f"the vector at index {idx} is {what}", resp)
                if dim == -1:
                    dim = vec.size
                elif vec.size != dim:
                    raise self._bad(f"the vector at index {idx} has dimension {vec.size}, "
                                    f"the one before it {dim}", resp)
                rows[idx] = vec
            out = np.vstack(rows).astype(np.float32, copy=False)  # type: ignore[arg-type]
            usage = data.get("usage") or {}
            tokens = usage.get("total_tokens", usage.get("prompt_tokens"))
            return out, (int(tokens) if tokens is not None else None)
        except ResponseError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ResponseError(
                f"unexpected embeddings response shape: {type(exc).__name__}: {exc}",
                provider=self.provider,
                status_code=resp.status,
            ) from None
