"""Anthropic Messages API wire format (``POST /v1/messages``).

* Auth: ``x-api-key``; every request carries ``anthropic-version: 2023-06-01``.
* System messages become the top-level ``system`` string; ``tool`` messages become ``tool_result``
  blocks in a user turn; assistant ``tool_calls`` become ``tool_use`` blocks (and back).
* ``max_tokens`` is required by the API: :data:`DEFAULT_MAX_TOKENS` when the caller gives none.
* Stop reasons map to the OpenAI vocabulary: ``end_turn``/``stop_sequence`` → ``stop``,
  ``max_tokens`` → ``length``, ``tool_use`` → ``tool_calls``, ``refusal`` → ``content_filter``.
* Structured output (``response_format=Model``): sent as ``output_format: {"type": "json_schema",
  "schema": ...}`` with the ``anthropic-beta: structured-outputs-2025-11-13`` header; the reply
  text is then parsed and validated by the client like OpenAI's. (We do not use the "forced tool"
  trick: it changes the finish reason and the shape of the answer.)
* ``anthropic-ratelimit-*`` response headers feed the shared rate limiter.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any

import orjson

from ..config import MaskedStr, Secret, Timeouts, env, secret_from
from ..errors import BadRequestError, ConfigError, ResponseError
from ..resilience import Resilience, ResilienceConfig, shared_resilience
from .chat_openai import (
    ChatRequest,
    WireResult,
    WireToolCall,
    error_from_payload,
    parse_arguments,
)
from .http import HttpOptions, HttpResponse, masked_headers, request

__all__ = ["AnthropicChat", "AnthropicCompat", "AnthropicStreamState", "to_anthropic_messages"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
STRUCTURED_OUTPUTS_BETA = "structured-outputs-2025-11-13"
DEFAULT_MAX_TOKENS = 1024

_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}


class AnthropicCompat:
    """Endpoint, credentials and shared resilience for one (base_url, model) of the Messages API.

    ``proxy``, ``verify`` and ``max_response_bytes`` as for
    :class:`~parallelrag.providers.openai.OpenAICompat`: an
    explicit proxy URL wins over the ``*_PROXY`` environment variables; ``verify`` is ``True``,
    a CA bundle path, an :class:`ssl.SSLContext` or ``False``. Headers are built once here;
    the key's value is masked in reprs.
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        timeouts: Timeouts | float | None = None,
        resilience: ResilienceConfig | None = None,
        headers: Mapping[str, str] | None = None,
        version: str = ANTHROPIC_VERSION,
        proxy: str | None = None,
        verify: bool | str | os.PathLike[str] | ssl.SSLContext = True,
        max_response_bytes: int | None = None,
    ) -> None:
        if not model:
            raise ConfigError("an Anthropic model name is required")
        if not isinstance(model, str):
            raise ConfigError(f"the model name must be a string, not {model!r}")
        self.model = model
        self.provider = "anthropic"
        self.version = version
        self.timeouts = Timeouts.of(timeouts)
        self.http = HttpOptions(proxy=proxy, verify=verify,
                                max_response_bytes=max_response_bytes)
        self.extra_headers = masked_headers(headers or {})
        url = base_url or env("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {url!r}")
        self.base_url = url.rstrip("/")
        self.api_key = secret_from(api_key, "ANTHROPIC_API_KEY")
        if self.api_key is None and self.base_url == DEFAULT_BASE_URL:
            raise ConfigError("Anthropic needs api_key= or ANTHROPIC_API_KEY")
        self.resilience: Resilience = shared_resilience((self.base_url, self.model), resilience)
        self._headers = self._build_headers(None)
        self._beta_headers = self._build_headers(STRUCTURED_OUTPUTS_BETA)

    def __repr__(self) -> str:
        return f"AnthropicCompat(base_url={self.base_url!r}, model={self.model!r})"

    def url(self, endpoint: str) -> str:
        # accept both "https://api.anthropic.com" and ".../v1" as the base
        if self.base_url.endswith("/v1"):
            return f"{self.base_url}/{endpoint}"
        return f"{self.base_url}/v1/{endpoint}"

    def _build_headers(self, beta: str | None) -> dict[str, str]:
        h = {"anthropic-version": self.version, **self.extra_headers}
        if not any(k.lower() == "content-type" for k in h):
            h["content-type"] = "application/json"
        if self.api_key is not None:
            h["x-api-key"] = MaskedStr(self.api_key.get())
        if beta:
            h["anthropic-beta"] = beta
        return h

    def headers(self, *, beta: str | None = None) -> dict[str, str]:
        """The request headers (a copy): version, content type, extra headers, the key (masked
        repr) and ``anthropic-beta`` when given."""
        if beta is None:
            return dict(self._headers)
        if beta == STRUCTURED_OUTPUTS_BETA:
            return dict(self._beta_headers)
        return self._build_headers(beta)

    async def post(self, endpoint: str, payload: Any) -> HttpResponse:
        """One attempt (no retries): the resilience executor wraps this."""
        resp = await request(
            "POST",
            self.url(endpoint),
            provider=self.provider,
            headers=self._beta_headers if "output_format" in payload else self._headers,
            json_body=payload,
            timeouts=self.timeouts,
            options=self.http,
        )
        self.resilience.rate_limiter.update_from_headers(resp.headers)
        return resp


# --------------------------------------------------------------------------- conversion
def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] if isinstance(p, Mapping) and isinstance(p.get("text"), str) else
            (p if isinstance(p, str) else "")
            for p in content
        )
    return str(content)


def to_anthropic_messages(
    messages: list[dict[str, Any]],
) -> tuple[str | None, list[dict[str, Any]]]:
    """OpenAI-shaped messages → (system, Anthropic messages). Consecutive turns of one role are
    merged (the API wants user/assistant alternation; tool results share one user turn)."""
    system_parts: list[str] = []
    out: list[dict[str, Any]] = []

    def push(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": list(blocks)})

    for m in messages:
        role = m.get("role")
        content = m.get("content")
        if role in ("system", "developer"):
            system_parts.append(_text(content))
        elif role == "tool":
            push("user", [{
                "type": "tool_result",
                "tool_use_id": str(m.get("tool_call_id") or ""),
                "content": _text(content),
            }])
        elif role in ("user", "assistant"):
            blocks: list[dict[str, Any]] = []
            if isinstance(content, list):
                for p in content:  # already blocks (Anthropic or OpenAI text parts)
                    if isinstance(p, Mapping):
                        blocks.append(
                            {"type": "text", "text": p["text"]}
                            if p.get("type") in ("text", "input_text") else dict(p)
                        )
                    elif isinstance(p, str):
                        blocks.append({"type": "text", "text": p})
            elif content:
                blocks.append({"type": "text", "text": str(content)})
            if role == "assistant":
                for tc in m.get("tool_calls") or []:
                    fn = tc.get("function") or {}
                    name = str(fn.get("name", ""))
                    blocks.append({
                        "type": "tool_use",
                        "id": str(tc.get("id") or ""),
                        "name": name,
                        "input": parse_arguments(fn.get("arguments"), name, "anthropic"),
                    })
            push(role, blocks)
        else:
            raise BadRequestError(f"unknown message role {role!r}", provider="anthropic")
    # collapse single text blocks to plain strings (smaller, and what most servers expect)
    for msg in out:
        c = msg["content"]
        if len(c) == 1 and c[0].get("type") == "text":
            msg["content"] = c[0]["text"]
    system = "\n\n".join(p for p in system_parts if p) or None
    return system, out


class AnthropicChat:
    """Builds ``/v1/messages`` payloads and parses responses and streams."""

    endpoint = "messages"

    def __init__(self, api: AnthropicCompat) -> None:
        self.api = api

    def build(self, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
        system, messages = to_anthropic_messages(req.messages)
        payload: dict[str, Any] = {
            "model": self.api.model,
            "messages": messages,
            "max_tokens": req.max_tokens if req.max_tokens is not None else DEFAULT_MAX_TOKENS,
        }
        if system:
            payload["system"] = system
        if req.temperature is not None:
            payload["temperature"] = req.temperature
        if req.stop:
            payload["stop_sequences"] = req.stop
        if req.tools:
            payload["tools"] = [t.to_anthropic() for t in req.tools]
        if req.tool_choice is not None:
            tc = self._tool_choice(req.tool_choice)
            if tc is not None:
                payload["tool_choice"] = tc
        if req.schema is not None:
            payload["output_format"] = {"type": "json_schema", "schema": req.schema[1]}
        elif req.response_format is not None:
            rf = req.response_format
            js = rf.get("json_schema") if isinstance(rf, Mapping) else None
            if isinstance(js, Mapping) and isinstance(js.get("schema"), Mapping):
                payload["output_format"] = {"type": "json_schema", "schema": js["schema"]}
            elif rf.get("type") == "json_schema" and isinstance(rf.get("schema"), Mapping):
                payload["output_format"] = dict(rf)
        if stream:
            payload["stream"] = True
        payload.update(req.extra)
        return payload

    @staticmethod
    def _tool_choice(choice: str | dict[str, Any]) -> dict[str, Any] | None:
        if isinstance(choice, dict):
            if choice.get("type") == "function":  # OpenAI shape → Anthropic
                return {"type": "tool", "name": choice.get("function", {}).get("name")}
            return choice
        if choice == "auto":
            return {"type": "auto"}
        if choice in ("required", "any"):
            return {"type": "any"}
        if choice == "none":
            return {"type": "none"}
        return {"type": "tool", "name": choice}

    def parse(self, data: Any) -> WireResult:
        provider = self.api.provider
        if not isinstance(data, dict):
            raise ResponseError("messages response is not a JSON object", provider=provider)
        if data.get("type") == "error":
            raise error_from_payload(data.get("error"), provider)
        try:
            texts: list[str] = []
            calls: list[WireToolCall] = []
            for block in data["content"]:
                kind = block.get("type")
                if kind == "text":
                    texts.append(str(block.get("text", "")))
                elif kind == "tool_use":
                    name = str(block.get("name", ""))
                    calls.append(WireToolCall(
                        id=str(block.get("id", "")), name=name,
                        arguments=parse_arguments(block.get("input"), name, provider),
                    ))
            usage = data.get("usage") or {}
        except (KeyError, TypeError, AttributeError) as exc:
            raise ResponseError(
                f"unexpected messages response shape: {type(exc).__name__}: {exc}",
                provider=provider,
            ) from None
        return WireResult(
            text="".join(texts),
            tool_calls=calls,
            finish_reason=_map_stop(data.get("stop_reason"), bool(calls)),
            prompt_tokens=_int(usage.get("input_tokens")),
            completion_tokens=_int(usage.get("output_tokens")),
            model=str(data.get("model") or self.api.model),
            raw=data,
        )

    def new_stream(self) -> AnthropicStreamState:
        return AnthropicStreamState(self.api.model)

    @staticmethod
    def extra_headers(payload: Mapping[str, Any]) -> dict[str, str]:
        return {"anthropic-beta": STRUCTURED_OUTPUTS_BETA} if "output_format" in payload else {}


def _map_stop(reason: Any, has_calls: bool) -> str:
    if reason is None:
        return "tool_calls" if has_calls else "stop"
    return _STOP.get(str(reason), str(reason))


def _int(v: Any) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


class AnthropicStreamState:
    """Accumulates a Messages API SSE stream (text deltas, tool_use input_json_delta, usage)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.done = False
        self.text_parts: list[str] = []
        self.stop_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self._blocks: dict[int, dict[str, Any]] = {}
        self._message: dict[str, Any] = {}

    def feed(self, event: str, data: str) -> str | None:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ResponseError(
                f"malformed stream event {event!r} ({len(data)} bytes): {exc}",
                provider="anthropic",
            ) from None
        if not isinstance(obj, dict):
            raise ResponseError("stream event is not a JSON object", provider="anthropic")
        kind = obj.get("type", event)
        if kind == "message_start":
            msg = obj.get("message") or {}
            self._message = msg
            if msg.get("model"):
                self.model = str(msg["model"])
            usage = msg.get("usage") or {}
            self.prompt_tokens = _int(usage.get("input_tokens"))
            self.completion_tokens = _int(usage.get("output_tokens"))
        elif kind == "content_block_start":
            block = dict(obj.get("content_block") or {})
            idx = int(obj.get("index", len(self._blocks)))
            block["_json"] = ""
            self._blocks[idx] = block
            if block.get("type") == "text" and block.get("text"):
                self.text_parts.append(block["text"])
                return str(block["text"])
        elif kind == "content_block_delta":
            idx = int(obj.get("index", 0))
            delta = obj.get("delta") or {}
            block = self._blocks.setdefault(idx, {"type": "text", "_json": ""})
            if delta.get("type") == "text_delta":
                text = str(delta.get("text", ""))
                if text:
                    self.text_parts.append(text)
                    return text
            elif delta.get("type") == "input_json_delta":
                block["_json"] += str(delta.get("partial_json", ""))
        elif kind == "message_delta":
            delta = obj.get("delta") or {}
            if delta.get("stop_reason"):
                self.stop_reason = str(delta["stop_reason"])
            usage = obj.get("usage") or {}
            if usage.get("output_tokens") is not None:
                self.completion_tokens = _int(usage.get("output_tokens"))
            if usage.get("input_tokens") is not None:
                self.prompt_tokens = _int(usage.get("input_tokens"))
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise error_from_payload(obj.get("error"), "anthropic")
        return None

    def result(self) -> WireResult:
        calls = []
        for _, b in sorted(self._blocks.items()):
            if b.get("type") == "tool_use":
                name = str(b.get("name", ""))
                raw = b["_json"] or b.get("input") or {}
                calls.append(WireToolCall(
                    id=str(b.get("id", "")), name=name,
                    arguments=parse_arguments(raw, name, "anthropic"),
                ))
        return WireResult(
            text="".join(self.text_parts),
            tool_calls=calls,
            finish_reason=_map_stop(self.stop_reason, bool(calls)),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            model=self.model,
            raw={"stream": True, "message": self._message, "stop_reason": self.stop_reason},
        )
