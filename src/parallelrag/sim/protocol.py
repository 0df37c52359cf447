"""Request parsing and deterministic reply planning for the sim's chat endpoints.

Both wire formats (OpenAI chat completions and Anthropic messages) are reduced to a
:class:`ChatPlan`: the prompt text, the tool results, the reply and its finish reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from parallelrag.sim.core import (
    INVALID_JSON,
    count_tokens,
    minimal_instance,
    parse_json_directive,
    parse_tool_directives,
    sim_reply,
)

__all__ = ["DEFAULT_COMPLETION_ESTIMATE", "BadRequest", "ChatPlan", "plan_anthropic", "plan_openai"]

DEFAULT_COMPLETION_ESTIMATE = 256
"""Completion tokens assumed for rate limiting when a request gives no ``max_tokens``."""


class BadRequest(Exception):
    """The request is invalid (answered 400)."""

    def __init__(self, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param


@dataclass
class ChatPlan:
    """What the sim will answer to a chat request.

    ``finish`` is one of ``"end"``, ``"length"``, ``"stop_sequence"``, ``"tool"``.
    """

    model: str
    prompt: str
    prompt_tokens: int
    max_tokens: int | None
    stream: bool
    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    finish: str = "end"
    stop_sequence: str | None = None
    include_usage: bool = False

    @property
    def completion_tokens(self) -> int:
        if self.tool_calls:
            return sum(
                count_tokens(name) + count_tokens(orjson.dumps(args).decode())
                for name, args in self.tool_calls
            )
        return count_tokens(self.text) if self.text else 0

    @property
    def rate_tokens(self) -> int:
        """Tokens this request takes from the TPM bucket: prompt + max_tokens (or 256)."""
        extra = self.max_tokens if self.max_tokens is not None else DEFAULT_COMPLETION_ESTIMATE
        return self.prompt_tokens + extra


def _text_of(content: Any) -> str:
    """Text of an OpenAI message content or an Anthropic content (string or parts/blocks)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") in ("text", "input_text"):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "\n".join(parts)
    raise BadRequest("message content must be a string or a list of content parts")


def _truncate_tokens(text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 size is at most ``4 * max_tokens`` bytes."""
    raw = text.encode("utf-8", "surrogatepass")
    limit = max(0, max_tokens) * 4
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def _finish_text(plan: ChatPlan, text: str, stops: list[str]) -> None:
    """Apply stop sequences and max_tokens to ``text`` and set the plan's finish reason."""
    best: tuple[int, str] | None = None
    for s in stops:
        if s:
            i = text.find(s)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
    finish = "end"
    if best is not None:
        text = text[: best[0]]
        finish = "stop_sequence"
        plan.stop_sequence = best[1]
    if plan.max_tokens is not None and text:
        cut = _truncate_tokens(text, plan.max_tokens)
        if cut != text:
            text = cut
            finish = "length"
            plan.stop_sequence = None
    plan.text = text
    plan.finish = finish


def _plan_reply(
    plan: ChatPlan,
    *,
    tool_results: list[str] | None,
    has_tools: bool,
    schema_mode: str | None,
    schema: Any,
    stops: list[str],
    reply_words: int,
) -> None:
    """The sim's decision rules, in order:

    1. tool results after the last user message → ``"final: " + " | ".join(results)``;
    2. ``[[tool:NAME {args}]]`` directives and tools in the request → tool calls;
    3. ``ECHO:`` prefix → the rest of the message verbatim;
    4. structured output requested → ``[[json ...]]`` directive, ``[[invalid_json]]``, or a
       minimal instance of the schema;
    5. otherwise :func:`sim_reply`.
    """
    prompt = plan.prompt
    if tool_results:
        _finish_text(plan, "final: " + " | ".join(tool_results), stops)
        return
    if has_tools:
        calls = parse_tool_directives(prompt)
        if calls:
            plan.tool_calls = calls
            plan.finish = "tool"
            return
    if prompt.startswith("ECHO:"):
        _finish_text(plan, prompt[len("ECHO:") :], stops)
        return
    if schema_mode is not None:
        if "[[invalid_json]]" in prompt:
            text = INVALID_JSON
        else:
            directive = parse_json_directive(prompt)
            if directive is not None:
                text = directive
            elif schema_mode == "json_schema" and isinstance(schema, dict):
                text = orjson.dumps(minimal_instance(schema)).decode()
            else:
                text = "{}"
        _finish_text(plan, text, stops)
        return
    _finish_text(plan, sim_reply(plan.model, prompt, reply_words), stops)


def _int_param(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"'{name}' must be a positive integer", param=name)
        return value
    return None


def _stops(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise BadRequest(f"'{name}' must be a string or a list of strings", param=name)


def plan_openai(body: dict[str, Any], model: str, reply_words: int) -> ChatPlan:
    """Plan the answer to an OpenAI ``/chat/completions`` request body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    prompt_tokens = 0
    last_user = -1
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise BadRequest(f"messages[{i}] must be an object with a 'role'", param="messages")
        text = _text_of(msg.get("content"))
        if text:
            prompt_tokens += count_tokens(text)
        for tc in msg.get("tool_calls") or []:
            if isinstance(tc, dict) and isinstance(tc.get("function"), dict):
                args = tc["function"].get("arguments")
                if isinstance(args, str) and args:
                    prompt_tokens += count_tokens(args)
        if msg["role"] == "user":
            last_user = i
    if last_user < 0:
        raise BadRequest("'messages' must contain a user message", param="messages")
    prompt = _text_of(messages[last_user].get("content"))
    tool_results = [
        _text_of(m.get("content"))
        for m in messages[last_user + 1 :]
        if m.get("role") in ("tool", "function")
    ]
    stream = bool(body.get("stream", False))
    opts = body.get("stream_options")
    include_usage = stream and isinstance(opts, dict) and bool(opts.get("include_usage"))
    plan = ChatPlan(
        model=model,
        prompt=prompt,
        prompt_tokens=max(1, prompt_tokens),
        max_tokens=_int_param(body, "max_completion_tokens", "max_tokens"),
        stream=stream,
        include_usage=include_usage,
    )
    rf = body.get("response_format")
    schema_mode: str | None = None
    schema: Any = None
    if isinstance(rf, dict) and rf.get("type") in ("json_schema", "json_object"):
        schema_mode = rf["type"]
        js = rf.get("json_schema")
        schema = js.get("schema") if isinstance(js, dict) else None
    tools = body.get("tools") or body.get("functions")
    _plan_reply(
        plan,
        tool_results=tool_results,
        has_tools=bool(tools),
        schema_mode=schema_mode,
        schema=schema,
        stops=_stops(body.get("stop"), "stop"),
        reply_words=reply_words,
    )
    return plan


def plan_anthropic(body: dict[str, Any], model: str, reply_words: int) -> ChatPlan:
    """Plan the answer to an Anthropic ``/messages`` request body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: must be a non-empty list")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise BadRequest("max_tokens: Field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest("max_tokens: must be a positive integer")
    prompt_tokens = 0
    system = body.get("system")
    if system is not None:
        stext = _text_of(system)
        if stext:
            prompt_tokens += count_tokens(stext)
    last_user = -1
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ("user", "assistant"):
            raise BadRequest(f"messages.{i}: role must be 'user' or 'assistant'")
        content = msg.get("content")
        text = _text_of(content)
        if text:
            prompt_tokens += count_tokens(text)
        has_result = False
        if isinstance(content, list):
            for block in content:
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_result":
                    has_result = True
                    rtext = _text_of(block.get("content"))
                    if rtext:
                        prompt_tokens += count_tokens(rtext)
                elif block.get("type") == "tool_use":
                    prompt_tokens += count_tokens(orjson.dumps(block.get("input", {})).decode())
        if msg["role"] == "user" and not has_result:
            last_user = i
    if last_user < 0:
        raise BadRequest("messages: must contain a user message")
    prompt = _text_of(messages[last_user].get("content"))
    tool_results: list[str] = []
    for msg in messages[last_user + 1 :]:
        content = msg.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    tool_results.append(_text_of(block.get("content")))
    plan = ChatPlan(
        model=model,
        prompt=prompt,
        prompt_tokens=max(1, prompt_tokens),
        max_tokens=max_tokens,
        stream=bool(body.get("stream", False)),
    )
    of = body.get("output_format") or body.get("response_format")
    schema_mode: str | None = None
    schema: Any = None
    if isinstance(of, dict) and of.get("type") in ("json_schema", "json_object"):
        schema_mode = of["type"]
        schema = of.get("schema")
        if schema is None and isinstance(of.get("json_schema"), dict):
            schema = of["json_schema"].get("schema")
    _plan_reply(
        plan,
        tool_results=tool_results,
        has_tools=bool(body.get("tools")),
        schema_mode=schema_mode,
        schema=schema,
        stops=_stops(body.get("stop_sequences"), "stop_sequences"),
        reply_words=reply_words,
    )
    return plan


def split_stream(text: str) -> list[str]:
    """Pieces a streamed reply is sent in (words with their leading whitespace)."""
    if not text:
        return []
    pieces: list[str] = []
    start = 0
    n = len(text)
    i = 0
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        while i < n and not text[i].isspace():
            i += 1
        pieces.append(text[start:i])
        start = i
    return pieces


def split_fragments(text: str, size: int = 8) -> list[str]:
    """Fixed-size fragments of a tool call's JSON arguments, as streamed."""
    if not text:
        return [""]
    return [text[i : i + size] for i in range(0, len(text), size)]
