"""``LlmClient``: chat completions from OpenAI-compatible servers (incl. Azure) and Anthropic.

::

    from parallelrag.llm import LlmClient

    llm = LlmClient.openai("gpt-4o-mini", base_url="http://localhost:8000/v1", rpm=3000)
    llm.complete("Say hi")                                   # -> str
    llm.complete_many(["q1", "q2", ...])                     # -> list[str], input order
    r = llm.complete_full(messages, tools=[get_weather])     # -> LlmResponse (tool_calls, usage)
    for delta in llm.stream("Tell me a story"): ...          # text deltas as they arrive

Sync methods run on the parallelrag runtime loop and wait without holding the GIL: other Python
threads keep running, and they work from any thread and inside a running event loop. Async twins
(``acomplete``, ``acomplete_full``, ``acomplete_many``, ``achat``, ``astream``) work from any
event loop.

Every request of every client that shares a (base_url, model) goes through one resilience stack:
circuit breaker → RPM/TPM budget (estimate = prompt tokens + ``max_tokens`` or a default,
corrected from the response's ``usage``) → adaptive concurrency slot → the request → retries
with backoff honouring Retry-After. A stream holds its slot until it ends; it is retried only
while nothing has been yielded yet, and a stream that is cut off raises
:class:`~parallelrag.errors.ResponseError` instead of returning a partial answer (one that
ends after its finish reason but without its end marker is complete; a server that answers a
stream request with one JSON completion yields its text as a single delta).

Errors are exceptions from :mod:`parallelrag.errors`; batch calls never turn them into strings.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

import orjson

from .config import Secret, Timeouts
from .embeddings import _query_params, _timeout_from, check_max_concurrency
from .errors import (
    BadRequestError,
    ConfigError,
    ParallelRagError,
    ProviderError,
    ResponseError,
)
from .providers.anthropic import AnthropicChat, AnthropicCompat
from .providers.chat_openai import (
    ChatApi,
    ChatRequest,
    OpenAIChat,
    SSEDecoder,
    StreamState,
    WireResult,
    open_stream,
)
from .providers.http import (
    HttpResponse,
    body_snippet,
    read_body,
    too_large,
    translate_exception,
)
from .providers.openai import OpenAICompat, sanitize_text
from .providers.tokens import TokenCounter, counter_for, counter_ready, utf8_len, warm_up
from .resilience import config_from_limits
from .runtime import get_runtime, on_runtime_thread, run_async, run_sync

if TYPE_CHECKING:
    import pydantic

__all__ = [
    "AsyncLlmStream",
    "LlmClient",
    "LlmResponse",
    "LlmStream",
    "Message",
    "ToolCall",
    "Usage",
]

Role: TypeAlias = Literal["system", "user", "assistant", "tool"]
FinishReason: TypeAlias = str  # "stop" | "length" | "tool_calls" | "content_filter"

DEFAULT_COMPLETION_ESTIMATE = 256
"""Completion tokens assumed for the TPM budget when a request sets no ``max_tokens``."""


# --------------------------------------------------------------------------- result types
@dataclass
class ToolCall:
    """A tool call the model asked for; ``arguments`` is already parsed from JSON."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def to_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": orjson.dumps(self.arguments).decode()},
        }


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass
class Message:
    """One conversation turn. Plain dicts in OpenAI shape are accepted everywhere too."""

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def system(cls, content: str) -> Message:
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> Message:
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str = "", tool_calls: list[ToolCall] | None = None) -> Message:
        return cls("assistant", content, tool_calls=tool_calls or None)

    @classmethod
    def tool_result(cls, call: ToolCall | str, content: Any) -> Message:
        """The result of a tool call, to send back (non-strings are JSON-encoded)."""
        call_id = call.id if isinstance(call, ToolCall) else call
        name = call.name if isinstance(call, ToolCall) else None
        text = content if isinstance(content, str) else _json_text(content)
        return cls("tool", text, tool_call_id=call_id, name=name)

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI chat-completions shape."""
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            d["tool_calls"] = [tc.to_openai() for tc in self.tool_calls]
            if not self.content:
                d["content"] = None
        if self.tool_call_id is not None:
            d["tool_call_id"] = self.tool_call_id
        if self.name is not None and self.role != "tool":
            d["name"] = self.name
        return d


@dataclass
class LlmResponse:
    """One completion. ``parsed`` holds the validated object when ``response_format`` asked for
    one (a pydantic model instance, or the decoded JSON for a raw schema)."""

    text: str
    tool_calls: list[ToolCall]
    finish_reason: FinishReason
    usage: Usage
    model: str
    latency_s: float
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    parsed: Any = None

    @property
    def message(self) -> Message:
        """This answer as an assistant :class:`Message` (to append to a conversation)."""
        return Message("assistant", self.text, tool_calls=list(self.tool_calls) or None)

    def __str__(self) -> str:
        return self.text


def _json_text(value: Any) -> str:
    pyd = sys.modules.get("pydantic")  # a pydantic object implies pydantic is imported
    if pyd is not None and isinstance(value, pyd.BaseModel):
        return cast(str, value.model_dump_json())
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return str(value)


# --------------------------------------------------------------------------- helpers
_SCHEMA_NAME_RE = re.compile(r"[^A-Za-z0-9_-]")


def _strict_schema(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Make a JSON schema fit OpenAI's strict mode when it can (every object: all properties
    required, ``additionalProperties: false``). Returns (schema, strict_possible)."""
    ok = True

    def walk(node: Any) -> Any:
        nonlocal ok
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: walk(v) for k, v in node.items()}
        if out.get("type") == "object" or "properties" in out:
            props = out.get("properties", {})
            if set(out.get("required", [])) != set(props):
                ok = False
            ap = out.get("additionalProperties")
            if isinstance(ap, dict) or ap is True:
                ok = False
            else:
                out["additionalProperties"] = False
        return out

    strict = walk(schema)
    return (strict, True) if ok else (schema, False)


class _Structured:
    """What ``response_format`` asked for: the schema to send and how to validate the text."""

    def __init__(self, spec: Any) -> None:
        self.request_format: dict[str, Any] | None = None
        self.schema: tuple[str, dict[str, Any], bool] | None = None
        self.adapter: pydantic.TypeAdapter[Any] | None = None
        self.label = "JSON"
        if isinstance(spec, str):
            if spec in ("json", "json_object"):
                self.request_format = {"type": "json_object"}
            elif spec == "text":
                self.request_format = {"type": "text"}
            else:
                raise ConfigError(f"unknown response_format {spec!r} (use 'json', a dict, a type)")
        elif isinstance(spec, Mapping):
            self.request_format = dict(spec)
        elif isinstance(spec, type) or getattr(spec, "__origin__", None) is not None:
            pydantic = _pydantic()
            try:
                if isinstance(spec, type) and issubclass(spec, pydantic.BaseModel):
                    raw_schema = cast(Any, spec).model_json_schema()
                else:
                    raw_schema = pydantic.TypeAdapter(spec).json_schema()
                self.adapter = pydantic.TypeAdapter(spec)
            except Exception as exc:
                raise ConfigError(f"cannot derive a JSON schema from {spec!r}: {exc}") from None
            name = _SCHEMA_NAME_RE.sub("_", getattr(spec, "__name__", "response"))[:64]
            schema, strict = _strict_schema(raw_schema)
            self.schema = (name or "response", schema, strict)
            self.label = name
        else:
            raise ConfigError(f"unsupported response_format {spec!r}")

    @property
    def wants_json(self) -> bool:
        if self.schema is not None:
            return True
        rf = self.request_format or {}
        return rf.get("type") in ("json_object", "json_schema")

    def parse(self, text: str, finish_reason: str, provider: str) -> Any:
        cut = " (the reply was cut off by max_tokens)" if finish_reason == "length" else ""
        if self.adapter is not None:
            pydantic = _pydantic()
            try:
                return self.adapter.validate_json(text)
            except pydantic.ValidationError as exc:
                kind = "is not valid JSON" if any(
                    e.get("type") == "json_invalid" for e in exc.errors()
                ) else f"does not validate against {self.label}"
                raise ResponseError(
                    f"structured output {kind}{cut}: {exc.error_count()} error(s): "
                    f"{_short(str(exc))}; text={_short(text)!r}",
                    provider=provider,
                ) from None
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ResponseError(
                f"structured output is not valid JSON{cut}: {exc}; text={_short(text)!r}",
                provider=provider,
            ) from None


def _pydantic() -> Any:
    """pydantic, imported only when a type is given as ``response_format``."""
    try:
        import pydantic
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            f"response_format with a type needs pydantic (pip install pydantic): {exc}"
        ) from None
    return pydantic


def _short(text: str, n: int = 300) -> str:
    return text if len(text) <= n else text[:n] + "…"


@dataclass
class _Prepared:
    req: ChatRequest
    structured: _Structured | None
    tokens: int




def _message_dict(m: Message | Mapping[str, Any], i: int) -> dict[str, Any]:
    if isinstance(m, Message):
        d = m.to_dict()
    elif isinstance(m, Mapping):
        d = dict(m)
        role = d.get("role")
        if not isinstance(role, str):
            raise BadRequestError(f"messages[{i}] has no 'role'")
        calls = d.get("tool_calls")
        if calls:
            norm = []
            for tc in calls:
                if isinstance(tc, ToolCall):
                    norm.append(tc.to_openai())
                    continue
                tc = dict(tc)
                fn = dict(tc.get("function") or {})
                if not isinstance(fn.get("arguments"), str):
                    fn["arguments"] = orjson.dumps(fn.get("arguments") or {}).decode()
                tc["function"] = fn
                tc.setdefault("type", "function")
                norm.append(tc)
            d["tool_calls"] = norm
    else:
        raise TypeError(f"messages[{i}] must be a Message or a dict, got {type(m).__name__}")
    if d["role"] not in ("system", "user", "assistant", "tool", "developer"):
        raise BadRequestError(f"messages[{i}] has unknown role {d['role']!r}")
    content = d.get("content")
    if isinstance(content, str):
        d["content"] = sanitize_text(content)
    return d


_MESSAGE_OVERHEAD = 4
"""Tokens per message beyond its text (role, separators), as OpenAI's cookbook counts them."""


def _message_texts(d: Mapping[str, Any]) -> list[str]:
    """The texts of one message that the provider counts as prompt tokens."""
    out: list[str] = []
    content = d.get("content")
    if isinstance(content, str):
        if content:
            out.append(content)
    elif isinstance(content, list):
        for p in content:
            if isinstance(p, Mapping) and isinstance(p.get("text"), str):
                out.append(p["text"])
    for tc in d.get("tool_calls") or []:
        args = (tc.get("function") or {}).get("arguments")
        if isinstance(args, str) and args:
            out.append(args)
    return out


def _prompt_tokens(
    counter: TokenCounter, messages: Sequence[Mapping[str, Any]], extra: Sequence[str] = ()
) -> int:
    """Prompt tokens of ``messages`` plus ``extra`` texts (tool schemas), counted with the
    model's tokenizer (see :mod:`parallelrag.providers.tokens`) in one batch."""
    texts = [t for m in messages for t in _message_texts(m)]
    texts.extend(extra)
    if not counter_ready():
        # the tokenizer is still loading (a process's first calls): UTF-8 bytes, which no
        # byte-level BPE undercounts, so the budget errs high; the provider's usage corrects it
        warm_up()
        return _MESSAGE_OVERHEAD * len(messages) + sum(utf8_len(t) for t in texts)
    return _MESSAGE_OVERHEAD * len(messages) + sum(counter.count_many(texts))


# --------------------------------------------------------------------------- the client
class LlmClient:
    """Chat completions from one provider endpoint; see the module docstring."""

    def __init__(self, dialect: OpenAIChat | AnthropicChat) -> None:
        self._dialect = dialect
        self._api: ChatApi = dialect.api
        self.last_usage: Usage | None = None
        self._calls = 0
        self._requests = 0
        self._errors = 0
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._options: dict[str, Any] = {}  # see _remember
        self._remote_extra: dict[str, Any] = {}
        self._default_completion = (
            DEFAULT_COMPLETION_ESTIMATE if isinstance(dialect, OpenAIChat) else 1024
        )
        # prompt tokens for the TPM budget: the model's tokenizer where known, else a
        # conservative count (see parallelrag.providers.tokens)
        self._counter = counter_for(self._api.model, self._api.provider)
        warm_up()
        # start the process's runtime (loop thread, event loop) with the client, not inside
        # its first call
        get_runtime()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def openai(
        cls,
        model: str = "gpt-4o-mini",
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        *,
        timeout: Timeouts | float | None = None,
        headers: dict[str, str] | None = None,
        proxy: str | None = None,
        max_response_bytes: int | None = None,
        **limits: Any,
    ) -> LlmClient:
        """Any OpenAI-compatible ``/chat/completions`` server (env: OPENAI_API_KEY,
        OPENAI_BASE_URL). ``proxy``: an ``http://`` proxy URL (default: HTTPS_PROXY /
        HTTP_PROXY / NO_PROXY). ``limits``: rpm, tpm, max_concurrency, min_concurrency,
        initial_concurrency, adaptive, max_retries / max_attempts, breaker_threshold,
        outage_deadline_s, ... ``max_response_bytes``: the largest response body (and stream
        event) read before the call fails with
        :class:`~parallelrag.errors.ResponseTooLargeError`, not retried (default:
        ``PARALLELRAG_MAX_RESPONSE_BYTES``, else 64 MiB; :class:`ConfigError` unless a
        positive int)."""
        api = OpenAICompat(
            model=model, base_url=base_url, api_key=api_key, timeouts=timeout,
            resilience=config_from_limits(limits), headers=headers,
            proxy=proxy, max_response_bytes=max_response_bytes,
        )
        return cls(OpenAIChat(api))._remember(timeout, proxy, limits, max_response_bytes)

    @classmethod
    def azure(
        cls,
        deployment: str,
        endpoint: str | None = None,
        api_key: str | Secret | None = None,
        api_version: str | None = None,
        *,
        timeout: Timeouts | float | None = None,
        headers: dict[str, str] | None = None,
        proxy: str | None = None,
        max_response_bytes: int | None = None,
        **limits: Any,
    ) -> LlmClient:
        """Azure OpenAI (env: AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY, OPENAI_API_VERSION);
        options (``max_response_bytes`` included) as for :meth:`openai`."""
        if not deployment:
            raise ConfigError("Azure needs deployment=")
        api = OpenAICompat(
            model=deployment, azure_endpoint=endpoint, azure_deployment=deployment,
            api_key=api_key, api_version=api_version, timeouts=timeout,
            resilience=config_from_limits(limits), headers=headers,
            proxy=proxy, max_response_bytes=max_response_bytes,
        )
        return cls(OpenAIChat(api))._remember(timeout, proxy, limits, max_response_bytes)

    @classmethod
    def anthropic(
        cls,
        model: str = "claude-3-5-haiku-latest",
        api_key: str | Secret | None = None,
        base_url: str | None = None,
        *,
        timeout: Timeouts | float | None = None,
        headers: dict[str, str] | None = None,
        proxy: str | None = None,
        max_response_bytes: int | None = None,
        **limits: Any,
    ) -> LlmClient:
        """Anthropic Messages API (env: ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL; default
        https://api.anthropic.com); options (``max_response_bytes`` included) as for
        :meth:`openai`."""
        api = AnthropicCompat(
            model=model, base_url=base_url, api_key=api_key, timeouts=timeout,
            resilience=config_from_limits(limits), headers=headers,
            proxy=proxy, max_response_bytes=max_response_bytes,
        )
        return cls(AnthropicChat(api))._remember(timeout, proxy, limits, max_response_bytes)

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> LlmClient:
        """One-string config: ``openai:MODEL`` | ``anthropic:MODEL`` |
        ``openai://MODEL?base_url=http://host/v1&rpm=3000`` |
        ``anthropic://MODEL?base_url=...`` | ``azure://DEPLOYMENT?endpoint=...&api_version=...``.
        Keyword arguments override what the string says."""
        if not isinstance(url, str) or not url.strip():
            raise ConfigError(f"an LLM config string is required, got {url!r}")
        url = url.strip()
        if "://" not in url:
            scheme, sep, rest = url.partition(":")
            if not sep:
                raise ConfigError(
                    f"LLM url {url!r} needs a provider: 'openai:MODEL', 'anthropic:MODEL', "
                    "'azure://DEPLOYMENT?endpoint=...'"
                )
            url = f"{scheme}://{rest}"
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # e.g. an unbalanced "[" in the host part
            raise ConfigError(f"malformed spec {url!r}: {exc}") from None
        scheme = parts.scheme.lower()
        name = unquote(parts.netloc + parts.path).strip("/")
        params = _query_params(parts.query)
        params.update(kw)
        timeout = _timeout_from(params)
        if timeout is not None:
            params["timeout"] = timeout
        if scheme not in ("openai", "anthropic", "azure"):
            raise ConfigError(f"unknown LLM provider {scheme!r} in {url!r}")
        if not name:
            raise ConfigError(f"no model named in {url!r}")
        if scheme == "openai":
            return cls.openai(name, **params)
        if scheme == "anthropic":
            return cls.anthropic(name, **params)
        return cls.azure(name, **params)

    def _remember(
        self, timeout: Timeouts | float | None, proxy: str | None, limits: Mapping[str, Any],
        max_response_bytes: int | None = None,
    ) -> LlmClient:
        """Keep the options given to a constructor, for :attr:`spec` / :meth:`remote_kwargs`."""
        opts: dict[str, Any] = dict(limits)
        if max_response_bytes is not None:
            opts["max_response_bytes"] = max_response_bytes
        extra: dict[str, Any] = {}
        if isinstance(timeout, Timeouts):
            extra["timeout"] = timeout
        elif timeout is not None:
            opts["timeout"] = float(timeout)
        if proxy is not None:
            parts = urlsplit(proxy)
            if parts.username or parts.password:
                extra["proxy"] = proxy  # credentials: never in the spec
            else:
                opts["proxy"] = proxy
        self._options = opts
        self._remote_extra = extra
        return self

    @property
    def spec(self) -> str:
        """A one-string config (no secrets) from which :meth:`from_url` rebuilds this client:
        provider, model, base URL (Azure: endpoint and API version) and every rate, retry and
        timeout option given. The API key, extra headers and a proxy URL with credentials are
        left out; :meth:`remote_kwargs` carries them."""
        api = self._api
        q: dict[str, str] = {}
        if isinstance(self._dialect, AnthropicChat):
            scheme = "anthropic"
            q["base_url"] = api.base_url
        elif getattr(api, "azure", False):
            scheme = "azure"
            q["endpoint"] = api.base_url
            version = getattr(api, "api_version", None)
            if version:
                q["api_version"] = version
        else:
            scheme = "openai"
            q["base_url"] = api.base_url
        for k, v in sorted(self._options.items()):
            if isinstance(v, bool):
                q[k] = "true" if v else "false"
            elif isinstance(v, float) and v.is_integer():
                q[k] = str(int(v))
            else:
                q[k] = str(v)
        name = quote(getattr(api, "deployment", None) or api.model, safe="")
        return urlunsplit((scheme, name, "", urlencode(q, safe="/:"), ""))

    def remote_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that, with :attr:`spec`, rebuild this client in another process
        (``LlmClient.from_url(spec, **kw)``, e.g. on a Ray actor): what the spec leaves out,
        the API key (a :class:`~parallelrag.config.Secret`, masked in every repr), extra
        headers, a proxy URL with credentials and a :class:`Timeouts` object."""
        api = self._api
        kw: dict[str, Any] = dict(self._remote_extra)
        key = getattr(api, "api_key", None)
        if key is not None:
            kw["api_key"] = key
        headers = getattr(api, "extra_headers", None)
        if headers:
            kw["headers"] = dict(headers)
        return kw

    # ------------------------------------------------------------------ properties
    @property
    def model(self) -> str:
        return self._api.model

    @property
    def provider(self) -> str:
        return self._api.provider

    def __repr__(self) -> str:
        return (
            f"LlmClient(provider={self.provider!r}, model={self.model!r}, "
            f"base_url={self._api.base_url!r})"
        )

    def stats(self) -> dict[str, Any]:
        """This client's calls, requests (incl. retries), errors and tokens, plus the shared
        resilience stats of its (base_url, model)."""
        return {
            "calls": self._calls,
            "requests": self._requests,
            "errors": self._errors,
            "prompt_tokens": self._prompt_tokens,
            "completion_tokens": self._completion_tokens,
            "provider": self._api.resilience.stats.snapshot(),
        }

    # ------------------------------------------------------------------ request building
    def _prepare(
        self,
        prompt: Any,
        *,
        system: str | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        response_format: Any = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> _Prepared:
        """Validate inputs and build the neutral request (in the caller's thread, before any
        request is made: bad input fails fast)."""
        messages: list[dict[str, Any]] = []
        if system is not None:
            if not isinstance(system, str):
                raise TypeError(f"system must be a str, got {type(system).__name__}")
            messages.append({"role": "system", "content": sanitize_text(system)})
        if isinstance(prompt, str):
            if not prompt.strip():
                raise BadRequestError("empty prompt", provider=self.provider)
            messages.append({"role": "user", "content": sanitize_text(prompt)})
        elif isinstance(prompt, Message | Mapping):
            messages.append(_message_dict(prompt, 0))
        elif isinstance(prompt, Sequence) and not isinstance(prompt, bytes | bytearray):
            if len(prompt) == 0:
                raise BadRequestError("empty message list", provider=self.provider)
            messages.extend(_message_dict(m, i) for i, m in enumerate(prompt))
        else:
            raise TypeError(
                f"prompt must be a str or a list of messages, got {type(prompt).__name__}"
            )
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise BadRequestError(f"max_tokens must be a positive int, got {max_tokens!r}")
        if temperature is not None and (
            not isinstance(temperature, int | float) or not math.isfinite(temperature)
        ):
            raise BadRequestError(f"temperature must be a finite number, got {temperature!r}")
        stops = [stop] if isinstance(stop, str) else (list(stop) if stop else None)
        if tools:
            from .tools import as_tool

            tool_objs = [as_tool(t) for t in tools]
        else:
            tool_objs = []
        names = [t.name for t in tool_objs]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate tool names: {names}")
        structured = _Structured(response_format) if response_format is not None else None
        req = ChatRequest(
            messages=messages,
            tools=tool_objs,
            tool_choice=tool_choice,
            schema=structured.schema if structured else None,
            response_format=structured.request_format if structured else None,
            max_tokens=max_tokens,
            temperature=float(temperature) if temperature is not None else None,
            stop=stops,
            extra=dict(extra_body or {}),
        )
        tokens = _prompt_tokens(
            self._counter, messages, [orjson.dumps(t.to_openai()).decode() for t in tool_objs]
        )
        tokens += max_tokens if max_tokens is not None else self._default_completion
        return _Prepared(req, structured, tokens)

    # ------------------------------------------------------------------ core (runtime loop)
    def _finish(self, res: WireResult, prep: _Prepared, latency: float) -> LlmResponse:
        pt = res.prompt_tokens or 0
        ct = res.completion_tokens or 0
        usage = Usage(pt, ct, pt + ct)
        self._prompt_tokens += pt
        self._completion_tokens += ct
        self.last_usage = usage
        resp = LlmResponse(
            text=res.text,
            tool_calls=[ToolCall(c.id, c.name, c.arguments) for c in res.tool_calls],
            finish_reason=res.finish_reason,
            usage=usage,
            model=res.model,
            latency_s=latency,
            raw=res.raw,
        )
        st = prep.structured
        if st is not None and st.wants_json and not resp.tool_calls:
            resp.parsed = st.parse(res.text, res.finish_reason, self.provider)
        return resp

    async def _run(self, prep: _Prepared, *, batch: bool = False) -> LlmResponse:
        """One completion through the shared resilience stack (runs on the runtime loop).
        ``batch``: part of batch work, which waits out a provider outage (up to the resilience
        config's ``outage_deadline_s``); a single call fails fast."""
        api = self._api
        dialect = self._dialect
        payload = dialect.build(prep.req, stream=False)
        t0 = time.perf_counter()

        async def attempt() -> WireResult:
            self._requests += 1
            resp = await api.post(dialect.endpoint, payload)
            return dialect.parse(resp.json(api.provider))

        try:
            res = await api.resilience.execute(
                attempt, tokens=prep.tokens, usage=_usage_total, outage_wait_s=_outage_wait(api, batch),
            )
        except ParallelRagError:
            self._errors += 1
            raise
        return self._finish(res, prep, time.perf_counter() - t0)

    async def _one(self, prep: _Prepared) -> LlmResponse:
        self._calls += 1
        return await self._run(prep)

    async def _many(
        self,
        preps: list[_Prepared | BaseException],
        max_concurrency: int | None,
        return_exceptions: bool,
    ) -> list[str | BaseException]:
        self._calls += 1
        n = len(preps)
        out: list[str | BaseException | None] = [None] * n
        sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None

        async def one(i: int, prep: _Prepared) -> None:
            if sem is not None:
                async with sem:
                    r = await self._run(prep, batch=True)
            else:
                r = await self._run(prep, batch=True)
            out[i] = r.text

        tasks: dict[asyncio.Task[None], int] = {}
        for i, p in enumerate(preps):
            if isinstance(p, BaseException):
                out[i] = p
            else:
                tasks[asyncio.ensure_future(one(i, p))] = i
        if not tasks:
            return cast(list[str | BaseException], out)
        self._api.resilience.limiter.expect(
            min(len(tasks), max_concurrency) if max_concurrency else len(tasks)
        )
        if return_exceptions:
            try:
                await asyncio.wait(tasks)
            except asyncio.CancelledError:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            for t, i in tasks.items():
                if t.cancelled():
                    out[i] = asyncio.CancelledError()
                elif (exc := t.exception()) is not None:
                    out[i] = exc
            return cast(list[str | BaseException], out)
        # fail fast: the first failure cancels its siblings (none outlives this call)
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            done, pending = set(), set(tasks)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
        if pending:
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        failed = [t for t in done if not t.cancelled() and t.exception() is not None]
        if failed:
            first = min(failed, key=lambda t: tasks[t])
            exc = first.exception()
            assert exc is not None
            raise exc
        return cast(list[str | BaseException], out)

    def _prepare_many(
        self, prompts: Sequence[Any], return_exceptions: bool, kw: dict[str, Any]
    ) -> list[_Prepared | BaseException]:
        if isinstance(prompts, str):
            raise TypeError("complete_many takes a list of prompts, not a single string")
        preps: list[_Prepared | BaseException] = []
        for i, p in enumerate(prompts):
            try:
                preps.append(self._prepare(p, **kw))
            except (BadRequestError, TypeError) as exc:
                if not return_exceptions:
                    if isinstance(exc, BadRequestError):
                        raise BadRequestError(
                            f"prompt {i}: {exc.message}", provider=self.provider
                        ) from None
                    raise
                preps.append(exc)
        return preps

    # ------------------------------------------------------------------ public sync API
    def complete(
        self,
        prompt: str,
        *,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> str:
        """One prompt → the reply text."""
        prep = self._prepare(prompt, system=system, max_tokens=max_tokens,
                             temperature=temperature, stop=stop)
        return run_sync(self._one(prep), alternative="await llm.acomplete(...)").text

    def complete_full(
        self,
        prompt_or_messages: Any,
        *,
        system: str | None = None,
        tools: Sequence[Any] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        response_format: Any = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> LlmResponse:
        """A prompt or a conversation → :class:`LlmResponse` (text, tool calls, usage, parsed).

        ``tools``: functions, :class:`~parallelrag.tools.Tool` objects or raw schema dicts.
        ``tool_choice``: "auto" | "none" | "required" | a tool name | a provider dict.
        ``response_format``: a pydantic model (or any type pydantic can validate) → JSON-schema
        request, result validated into ``.parsed``; "json"; or a raw OpenAI dict.
        """
        prep = self._prepare(
            prompt_or_messages, system=system, tools=tools, tool_choice=tool_choice,
            response_format=response_format, max_tokens=max_tokens, temperature=temperature,
            stop=stop, extra_body=extra_body,
        )
        return run_sync(self._one(prep), alternative="await llm.acomplete_full(...)")

    def chat(self, messages: Sequence[Message | Mapping[str, Any]], **kw: Any) -> LlmResponse:
        """A conversation → :class:`LlmResponse` (same options as :meth:`complete_full`)."""
        return self.complete_full(messages, **kw)

    def complete_many(
        self,
        prompts: Sequence[Any],
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
        **kw: Any,
    ) -> list[str | BaseException]:
        """Many prompts (strings or conversations) concurrently → reply texts in INPUT ORDER.

        Failures are exceptions: by default the first failure cancels the rest and is raised;
        with ``return_exceptions=True`` each failed prompt's exception takes its place.
        ``max_concurrency`` caps this call (the shared adaptive limiter applies as well).
        """
        preps = self._prepare_many(prompts, return_exceptions, kw)
        return run_sync(self._many(preps, check_max_concurrency(max_concurrency),
                                   return_exceptions),
                        alternative="await llm.acomplete_many(...)")

    def stream(self, prompt_or_messages: Any, **kw: Any) -> LlmStream:
        """Text deltas as they arrive (sync iterator). After it ends: ``.usage``,
        ``.finish_reason``, ``.response`` (and ``llm.last_usage``). Leaving the loop early
        closes the HTTP response."""
        prep = self._prepare(prompt_or_messages, **kw)
        return LlmStream(_StreamCore(self, prep))

    # ------------------------------------------------------------------ public async API
    async def acomplete(
        self,
        prompt: str,
        *,
        system: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> str:
        prep = self._prepare(prompt, system=system, max_tokens=max_tokens,
                             temperature=temperature, stop=stop)
        return (await run_async(self._one(prep))).text

    async def acomplete_full(self, prompt_or_messages: Any, **kw: Any) -> LlmResponse:
        prep = self._prepare(prompt_or_messages, **kw)
        return await run_async(self._one(prep))

    async def achat(
        self, messages: Sequence[Message | Mapping[str, Any]], **kw: Any
    ) -> LlmResponse:
        return await self.acomplete_full(messages, **kw)

    async def acomplete_many(
        self,
        prompts: Sequence[Any],
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
        **kw: Any,
    ) -> list[str | BaseException]:
        preps = self._prepare_many(prompts, return_exceptions, kw)
        return await run_async(self._many(preps, check_max_concurrency(max_concurrency),
                                          return_exceptions))

    def astream(self, prompt_or_messages: Any, **kw: Any) -> AsyncLlmStream:
        """Async iterator of text deltas (``async for delta in llm.astream(...)``)."""
        prep = self._prepare(prompt_or_messages, **kw)
        return AsyncLlmStream(_StreamCore(self, prep))

    # ------------------------------------------------------------------ framework adapters
    def as_langchain(self, **kw: Any) -> Any:
        """A LangChain ``BaseChatModel`` over this client (the ``langchain`` extra); ``kw``:
        ``max_tokens``, ``temperature``."""
        from .adapters.langchain import ParallelRagChatModel

        return ParallelRagChatModel(client=self, **kw)

    def as_llamaindex(self, **kw: Any) -> Any:
        """A LlamaIndex ``LLM`` over this client (the ``llamaindex`` extra); ``kw``:
        ``max_tokens``, ``temperature``, ``context_window``."""
        from .adapters.llamaindex import ParallelRagLLM

        return ParallelRagLLM(client=self, **kw)


def _outage_wait(api: ChatApi, batch: bool) -> float | None:
    """``outage_wait_s`` for ``Resilience.execute``: the config's ``outage_deadline_s`` for
    batch work, None (fail fast) for single calls."""
    return api.resilience.config.outage_deadline_s if batch else None


def _usage_total(res: WireResult) -> int | None:
    if res.prompt_tokens is None and res.completion_tokens is None:
        return None
    return (res.prompt_tokens or 0) + (res.completion_tokens or 0)


# --------------------------------------------------------------------------- streaming
class _End:
    pass


_END = _End()
_QUEUE_SIZE = 256


class _StreamCore:
    """One streamed completion, living on the runtime loop.

    A producer task runs the request inside ``resilience.execute`` (breaker, budgets and a
    concurrency slot held until the stream ends) and feeds text deltas into a bounded queue;
    :meth:`next` takes them out. :meth:`aclose` cancels the producer, which closes the HTTP
    response (the server sees the client go away).
    """

    def __init__(self, client: LlmClient, prep: _Prepared) -> None:
        self.client = client
        self.prep = prep
        self.queue: asyncio.Queue[str | _End | BaseException] | None = None
        self.task: asyncio.Task[None] | None = None
        self.response: LlmResponse | None = None
        self.yielded = False
        self.finished = False

    def _start(self) -> asyncio.Queue[str | _End | BaseException]:
        q: asyncio.Queue[str | _End | BaseException] = asyncio.Queue(_QUEUE_SIZE)
        self.queue = q
        self.client._calls += 1
        self.task = asyncio.ensure_future(self._produce(q))
        return q

    async def next(self) -> str | None:
        """The next delta; None at the end; raises the stream's error."""
        if self.finished:
            return None
        q = self.queue if self.queue is not None else self._start()
        item = await q.get()
        if isinstance(item, _End):
            self.finished = True
            return None
        if isinstance(item, BaseException):
            self.finished = True
            raise item
        return item

    async def aclose(self) -> None:
        self.finished = True
        task = self.task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _produce(self, q: asyncio.Queue[str | _End | BaseException]) -> None:
        client = self.client
        try:
            t0 = time.perf_counter()
            res = await client._api.resilience.execute(
                self._attempt, tokens=self.prep.tokens, usage=_usage_total,
                outage_wait_s=None,
            )
            self.response = client._finish(res, self.prep, time.perf_counter() - t0)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            client._errors += 1
            await q.put(exc)
            return
        await q.put(_END)

    async def _attempt(self) -> WireResult:
        client = self.client
        api = client._api
        dialect = client._dialect
        q = self.queue
        assert q is not None
        if self.yielded:
            # a retry after text went out would duplicate it: give up instead
            raise _NoRetry(ResponseError(
                "stream failed after part of the answer was delivered", provider=api.provider))
        payload = dialect.build(self.prep.req, stream=True)
        state: StreamState = dialect.new_stream()
        client._requests += 1
        try:
            async with open_stream(
                api, dialect.endpoint, payload, dialect.extra_headers(payload)
            ) as resp:
                first = b""
                if resp.content_type in ("application/json", "text/html"):
                    # a whole answer, or an event stream under the wrong label: look first
                    first = await resp.content.readany()
                    if resp.content_type == "text/html" or first.lstrip()[:1] == b"{":
                        return await self._not_a_stream(resp, first)
                decoder = SSEDecoder()
                async for chunk in _prefixed(first, resp.content):
                    if state.done:
                        continue  # drain to EOF so the connection can be reused
                    for event, data in decoder.feed(chunk):
                        if state.done:
                            break
                        delta = state.feed(event, data)
                        if delta:
                            self.yielded = True
                            await q.put(delta)
                if not state.done:
                    for event, data in decoder.flush():
                        delta = state.feed(event, data)
                        if delta:
                            self.yielded = True
                            await q.put(delta)
                        if state.done:
                            break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if state.done or (_finished(state) and not isinstance(exc, ProviderError)):
                return state.result()  # everything arrived; a late transport hiccup is harmless
            err = translate_exception(exc, api.provider)
            if self.yielded:
                raise _NoRetry(_truncated(err, state, api.provider)) from None
            raise err from None
        if not state.done and not _finished(state):
            err2 = ResponseError(
                f"stream ended before its end marker ({_marker(dialect)}): truncated after "
                f"{sum(len(p) for p in _parts(state))} characters",
                provider=api.provider,
            )
            raise _NoRetry(err2) if self.yielded else err2
        return state.result()

    async def _not_a_stream(self, resp: Any, first: bytes) -> WireResult:
        """The server answered the streaming request with a whole JSON completion (it ignores
        ``stream: true``): parse it as one and yield its text as a single delta. An HTML page
        (a proxy, captive portal) is a ResponseError that says so. ``first``: the body's
        start, already read."""
        api = self.client._api
        limit = api.http.max_response_bytes
        if len(first) > limit:
            raise too_large("response body", resp.url, limit, api.provider, resp.status)
        body = first + await read_body(resp, max(1, limit - len(first)),
                                       provider=api.provider, url=resp.url)
        if resp.content_type == "text/html":
            raise ResponseError(
                f"expected an event stream from the provider, got text/html ({len(body)} "
                f"bytes: {body_snippet(body)!r}); a proxy, firewall or captive portal may have "
                "answered instead of the API", provider=api.provider, status_code=resp.status)
        res = self.client._dialect.parse(HttpResponse(resp.status, resp.headers, body)
                                         .json(api.provider))
        if res.text:
            self.yielded = True
            assert self.queue is not None
            await self.queue.put(res.text)
        return res


class _NoRetry(ProviderError):
    """Carries an error that must not be retried (text was already yielded). Unwrapped below."""

    def __init__(self, inner: ProviderError) -> None:
        # no status code: is_retryable() never retries a ProviderError without one
        super().__init__(inner.message, provider=inner.provider)
        self.inner = inner


def _truncated(err: ProviderError, state: StreamState, provider: str) -> ProviderError:
    if isinstance(err, ResponseError):
        return err
    out = ResponseError(
        f"stream was cut off after {sum(len(p) for p in _parts(state))} characters: {err.message}",
        provider=provider, status_code=err.status_code, request_id=err.request_id,
    )
    out.__cause__ = err
    return out


async def _prefixed(first: bytes, content: Any) -> AsyncIterator[bytes]:
    """``first`` (when not empty), then the rest of the body as it arrives."""
    if first:
        yield first
    async for chunk in content.iter_any():
        yield chunk


def _finished(state: StreamState) -> bool:
    """The stream carried its finish reason (OpenAI ``finish_reason``, Anthropic
    ``stop_reason``): every token arrived, even if the end marker did not."""
    return bool(getattr(state, "finish", None) or getattr(state, "stop_reason", None))


def _parts(state: StreamState) -> list[str]:
    return cast(list[str], getattr(state, "text_parts", []))


def _marker(dialect: OpenAIChat | AnthropicChat) -> str:
    return "data: [DONE]" if isinstance(dialect, OpenAIChat) else "message_stop"


class _StreamBase:
    def __init__(self, core: _StreamCore) -> None:
        self._core = core
        self._closed = False

    @property
    def response(self) -> LlmResponse | None:
        """The whole answer (text, tool calls, usage, finish reason) once the stream ended."""
        return self._core.response

    @property
    def usage(self) -> Usage | None:
        r = self._core.response
        return r.usage if r is not None else None

    @property
    def finish_reason(self) -> str | None:
        r = self._core.response
        return r.finish_reason if r is not None else None

    @property
    def tool_calls(self) -> list[ToolCall]:
        r = self._core.response
        return r.tool_calls if r is not None else []

    def __del__(self) -> None:
        # an abandoned stream: close its HTTP response without waiting
        core = getattr(self, "_core", None)
        if core is None or getattr(self, "_closed", True) or core.task is None:
            return
        if core.task.done():
            return
        with contextlib.suppress(Exception):
            get_runtime().submit(core.aclose())


def _unwrap(exc: BaseException) -> BaseException:
    """The error to raise for a failed stream step: the wrapped one, keeping its own
    ``__cause__`` (a timeout behind a cut stream) but not the wrapper as context."""
    inner = exc.inner if isinstance(exc, _NoRetry) else exc
    inner.__suppress_context__ = True
    return inner


class LlmStream(_StreamBase, Iterator[str]):
    """Sync iterator of text deltas. Each step waits on the runtime loop without the GIL.
    ``break`` (or :meth:`close`, or ``with``) closes the HTTP response."""

    def __iter__(self) -> LlmStream:
        return self

    def __next__(self) -> str:
        if self._closed:
            raise StopIteration
        try:
            item = run_sync(self._core.next(), alternative="llm.astream(...)")
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._closed = True
            raise _unwrap(exc)  # noqa: B904 (its own __cause__ is kept, context suppressed)
        if item is None:
            self._closed = True
            raise StopIteration
        return item

    def close(self) -> None:
        """Stop the stream now (closes the HTTP response if it is still open)."""
        if self._closed:
            return
        self._closed = True
        if on_runtime_thread():
            get_runtime().submit(self._core.aclose())
        else:
            run_sync(self._core.aclose())

    @property
    def text(self) -> str:
        r = self._core.response
        return r.text if r is not None else ""

    def __enter__(self) -> LlmStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncLlmStream(_StreamBase, AsyncIterator[str]):
    """Async iterator of text deltas; ``await stream.aclose()`` (or ``async with``) stops it."""

    def __aiter__(self) -> AsyncLlmStream:
        return self

    async def __anext__(self) -> str:
        if self._closed:
            raise StopAsyncIteration
        try:
            item = await run_async(self._core.next())
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._closed = True
            raise _unwrap(exc)  # noqa: B904 (its own __cause__ is kept, context suppressed)
        if item is None:
            self._closed = True
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await run_async(self._core.aclose())

    @property
    def text(self) -> str:
        r = self._core.response
        return r.text if r is not None else ""

    async def __aenter__(self) -> AsyncLlmStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
