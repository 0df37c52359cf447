"""OpenAI chat-completions wire format (also Azure, vLLM, Ollama, LM Studio, ...), plus the pieces
both chat wire formats share: the neutral request / result types, an incremental SSE decoder and
a streaming HTTP request.

Internally a conversation is a list of OpenAI-shaped message dicts (``role``, ``content``,
``tool_calls``, ``tool_call_id``, ``name``); :mod:`parallelrag.providers.anthropic` converts them
to the Messages API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import orjson

from ..config import Timeouts
from ..errors import (
    BadRequestError,
    ProviderError,
    RateLimitError,
    ResponseError,
    ServerError,
)
from ..resilience import Resilience
from ..tools import Tool
from . import http
from .http import HttpOptions, HttpResponse
from .openai import OpenAICompat

__all__ = [
    "ChatApi",
    "ChatRequest",
    "OpenAIChat",
    "OpenAIStreamState",
    "SSEDecoder",
    "StreamState",
    "WireResult",
    "WireToolCall",
    "open_stream",
    "parse_arguments",
]


# --------------------------------------------------------------------------- neutral types
@dataclass
class ChatRequest:
    """One chat request, independent of the wire format."""

    messages: list[dict[str, Any]]
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    # structured output: (name, JSON schema, strict) for a pydantic model / schema, or a raw
    # OpenAI response_format dict passed through as given
    schema: tuple[str, dict[str, Any], bool] | None = None
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    stop: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class WireToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class WireResult:
    """A parsed completion: text, tool calls, finish reason in the OpenAI vocabulary, usage."""

    text: str
    tool_calls: list[WireToolCall]
    finish_reason: str
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str
    raw: dict[str, Any]


class ChatApi(Protocol):
    """What the LLM client needs from a provider endpoint (OpenAICompat, AnthropicCompat)."""

    provider: str
    model: str
    base_url: str
    timeouts: Timeouts
    resilience: Resilience
    http: HttpOptions

    def url(self, endpoint: str) -> str: ...

    def headers(self) -> dict[str, str]: ...

    async def post(self, endpoint: str, payload: Any) -> HttpResponse: ...


class StreamState(Protocol):
    """Accumulates one streamed response from SSE events."""

    done: bool

    def feed(self, event: str, data: str) -> str | None:
        """Consume one SSE event; return a text delta (or None)."""
        ...

    def result(self) -> WireResult: ...


def parse_arguments(raw: Any, name: str, provider: str) -> dict[str, Any]:
    """A tool call's arguments (JSON text or an object) → dict; malformed → ResponseError."""
    if isinstance(raw, dict):
        return raw
    if raw is None or raw == "":
        return {}
    try:
        value = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise ResponseError(
            f"tool call {name!r} has arguments that are not valid JSON: {exc}", provider=provider
        ) from None
    if not isinstance(value, dict):
        raise ResponseError(
            f"tool call {name!r} arguments must be a JSON object, got {type(value).__name__}",
            provider=provider,
        )
    return value


# --------------------------------------------------------------------------- SSE
#: (max_response_bytes, provider) of the stream :func:`open_stream` has open in this task: the
#: default bound of an :class:`SSEDecoder` made inside its ``async with`` block
_STREAM_LIMIT: ContextVar[tuple[int, str] | None] = ContextVar("parallelrag_stream_limit",
                                                                default=None)


class SSEDecoder:
    """Incremental Server-Sent Events decoder: feed bytes, get complete ``(event, data)`` pairs.

    One event (its data lines together) or one line may be at most ``max_event_bytes``; more is
    a :class:`~parallelrag.errors.ResponseTooLargeError`, so a stream that never ends a line
    cannot fill memory, while a long stream of ordinary events is not limited as a whole.
    Default: the ``max_response_bytes`` of the provider whose stream :func:`open_stream` has
    open, else ``PARALLELRAG_MAX_RESPONSE_BYTES`` or 64 MiB.
    """

    __slots__ = ("_buf", "_data", "_event", "_limit", "_provider", "_size")

    def __init__(self, max_event_bytes: int | None = None, provider: str | None = None) -> None:
        self._buf = bytearray()
        self._event = ""
        self._data: list[str] = []
        self._size = 0  # bytes of the data lines of the event being read
        current = _STREAM_LIMIT.get()
        if max_event_bytes is None:
            max_event_bytes = (current[0] if current is not None
                               else http.max_response_bytes_from_env())
        self._limit = max_event_bytes
        self._provider = provider or (current[1] if current is not None else None)

    def _too_large(self) -> ProviderError:
        return http.too_large("a stream event", None, self._limit, self._provider)

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        self._buf += chunk
        out: list[tuple[str, str]] = []
        buf = self._buf
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if nl - start > self._limit:
                raise self._too_large()
            line = bytes(buf[start:nl])
            start = nl + 1
            if line.endswith(b"\r"):
                line = line[:-1]
            self._line(line, out)
        if start:
            del buf[:start]
        if len(buf) > self._limit:  # a line that does not end
            raise self._too_large()
        return out

    def flush(self) -> list[tuple[str, str]]:
        """Events left at EOF (a final event without its blank line)."""
        out: list[tuple[str, str]] = []
        if self._buf:
            line = bytes(self._buf).rstrip(b"\r")
            self._buf.clear()
            self._line(line, out)
        self._line(b"", out)
        return out

    def _line(self, line: bytes, out: list[tuple[str, str]]) -> None:
        if not line:
            if self._data:
                out.append((self._event or "message", "\n".join(self._data)))
            self._event = ""
            self._data = []
            self._size = 0
            return
        if line.startswith(b":"):
            return
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._size += len(value)
            if self._size > self._limit:
                raise self._too_large()
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")


@asynccontextmanager
async def open_stream(
    api: ChatApi, endpoint: str, payload: Any, extra_headers: Mapping[str, str] | None = None
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST ``payload`` and yield the streaming response once its status is 2xx.

    The request goes through :func:`parallelrag.providers.http.stream` (the one HTTP stack:
    proxies, TLS options, redirects); rate-limit headers feed the shared limiter. Non-2xx → the
    matching ProviderError (body read); transport failures while reading → translated. On exit
    the response is released if it was read to the end and closed otherwise. An
    :class:`SSEDecoder` made inside the block bounds each event by the provider's
    ``max_response_bytes``.
    """
    hdrs = {**api.headers(), "accept": "text/event-stream", **(extra_headers or {})}
    async with http.stream(
        "POST", api.url(endpoint), provider=api.provider, headers=hdrs,
        data=http.json_bytes(payload), timeouts=api.timeouts, options=api.http,
    ) as resp:
        api.resilience.rate_limiter.update_from_headers(resp.headers)
        token = _STREAM_LIMIT.set((api.http.max_response_bytes, api.provider))
        try:
            yield resp
        finally:
            with suppress(ValueError):  # finalised in another context: nothing to restore
                _STREAM_LIMIT.reset(token)


def error_from_payload(err: Any, provider: str) -> ProviderError:
    """An error object sent inside a 200 response or an SSE stream → a ProviderError."""
    if isinstance(err, Mapping):
        etype = str(err.get("type") or err.get("code") or "")
        msg = str(err.get("message") or etype or err)
    else:
        etype, msg = "", str(err)
    low = etype.lower()
    if "rate_limit" in low or low in ("requests", "tokens"):
        return RateLimitError(f"rate limited mid-response: {msg}", provider=provider)
    if "overloaded" in low or "server" in low or "api_error" in low:
        return ServerError(f"provider error mid-response: {msg}", provider=provider)
    if "invalid_request" in low:
        return BadRequestError(f"bad request: {msg}", provider=provider)
    return ProviderError(f"provider error: {msg}", provider=provider)


# --------------------------------------------------------------------------- OpenAI dialect
_OPENAI_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def _text_content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, Mapping) and isinstance(p.get("text"), str):
                parts.append(p["text"])
        return "".join(parts)
    return str(content)


class OpenAIChat:
    """Builds ``/chat/completions`` payloads and parses responses and streams."""

    endpoint = "chat/completions"

    def __init__(self, api: OpenAICompat) -> None:
        self.api = api

    def build(self, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.api.model, "messages": req.messages}
        if req.max_tokens is not None:
            payload["max_tokens"] = req.max_tokens
        if req.temperature is not None:
            payload["temperature"] = req.temperature
        if req.stop:
            payload["stop"] = req.stop
        if req.tools:
            payload["tools"] = [t.to_openai() for t in req.tools]
        if req.tool_choice is not None:
            payload["tool_choice"] = self._tool_choice(req.tool_choice)
        if req.schema is not None:
            name, schema, strict = req.schema
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": strict},
            }
        elif req.response_format is not None:
            payload["response_format"] = req.response_format
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        payload.update(req.extra)
        return payload

    @staticmethod
    def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
        if isinstance(choice, dict):
            return choice
        if choice in ("auto", "none", "required"):
            return choice
        if choice == "any":
            return "required"
        return {"type": "function", "function": {"name": choice}}

    def parse(self, data: Any) -> WireResult:
        provider = self.api.provider
        if not isinstance(data, dict):
            raise ResponseError("chat response is not a JSON object", provider=provider)
        if "error" in data and not data.get("choices"):
            raise error_from_payload(data["error"], provider)
        try:
            choice = data["choices"][0]
            msg = choice.get("message") or {}
            calls = []
            for tc in msg.get("tool_calls") or []:
                fn = tc.get("function") or {}
                name = str(fn.get("name", ""))
                calls.append(
                    WireToolCall(
                        id=str(tc.get("id") or ""),
                        name=name,
                        arguments=parse_arguments(fn.get("arguments"), name, provider),
                    )
                )
            finish = choice.get("finish_reason")
            usage = data.get("usage") or {}
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ResponseError(
                f"unexpected chat response shape: {type(exc).__name__}: {exc}", provider=provider
            ) from None
        return WireResult(
            text=_text_content(msg.get("content")),
            tool_calls=calls,
            finish_reason=_map_openai_finish(finish, bool(calls)),
            prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
            completion_tokens=_int_or_none(usage.get("completion_tokens")),
            model=str(data.get("model") or self.api.model),
            raw=data,
        )

    def new_stream(self) -> OpenAIStreamState:
        return OpenAIStreamState(self.api.provider, self.api.model)

    @staticmethod
    def extra_headers(payload: Mapping[str, Any]) -> dict[str, str]:
        return {}


def _map_openai_finish(finish: Any, has_calls: bool) -> str:
    if finish is None:
        return "tool_calls" if has_calls else "stop"
    return _OPENAI_FINISH.get(str(finish), str(finish))


def _int_or_none(v: Any) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


class OpenAIStreamState:
    """Accumulates an OpenAI chat-completions SSE stream (content, tool-call fragments, usage)."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.done = False
        self.text_parts: list[str] = []
        self.finish: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self._calls: dict[int, dict[str, Any]] = {}
        self._last_chunk: dict[str, Any] = {}

    def feed(self, event: str, data: str) -> str | None:
        if data.strip() == "[DONE]":
            self.done = True
            return None
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ResponseError(
                f"malformed stream event ({len(data)} bytes): {exc}", provider=self.provider
            ) from None
        if not isinstance(obj, dict):
            raise ResponseError("stream event is not a JSON object", provider=self.provider)
        if obj.get("error") is not None:
            raise error_from_payload(obj["error"], self.provider)
        self._last_chunk = obj
        if obj.get("model"):
            self.model = str(obj["model"])
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = _int_or_none(usage.get("prompt_tokens"))
            self.completion_tokens = _int_or_none(usage.get("completion_tokens"))
        delta_text: str | None = None
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.text_parts.append(content)
                delta_text = content
            for tc in delta.get("tool_calls") or []:
                idx = int(tc.get("index", len(self._calls)))
                acc = self._calls.setdefault(idx, {"id": "", "name": "", "arguments": ""})
                if tc.get("id"):
                    acc["id"] = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    acc["name"] = fn["name"]
                if fn.get("arguments"):
                    acc["arguments"] += fn["arguments"]
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
        return delta_text

    def result(self) -> WireResult:
        calls = [
            WireToolCall(
                id=c["id"], name=c["name"],
                arguments=parse_arguments(c["arguments"], c["name"], self.provider),
            )
            for _, c in sorted(self._calls.items())
        ]
        return WireResult(
            text="".join(self.text_parts),
            tool_calls=calls,
            finish_reason=_map_openai_finish(self.finish, bool(calls)),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            model=self.model,
            raw={"stream": True, "last_chunk": self._last_chunk},
        )
