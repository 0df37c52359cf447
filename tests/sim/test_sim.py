"""Tests of parallelrag.sim, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import numpy as np
import orjson
import pytest

from parallelrag.errors import ConfigError
from parallelrag.sim import (
    SimConfig,
    SimProcess,
    SimServer,
    count_tokens,
    format_duration,
    minimal_instance,
    parse_latency,
    sim_embedding,
    sim_reply,
)
from parallelrag.sim.cli import build_config

pytestmark = pytest.mark.timeout(60)

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


@pytest.fixture
def srv() -> Iterator[SimServer]:
    with SimServer(SimConfig(seed=1)) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Reply:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> Reply:
    async with http.post(url, data=orjson.dumps(body), headers=headers or {}) as r:
        return Reply(r.status, r.headers, await r.read())


async def sse(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) for every SSE event; data '[DONE]' is kept as a string."""
    out: list[tuple[str | None, Any]] = []
    async with http.post(url, data=orjson.dumps(body), headers=headers or {}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        text = (await r.read()).decode()
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name = None
        data = None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                payload = line[6:]
                data = payload if payload == "[DONE]" else json.loads(payload)
        out.append((name, data))
    return out


async def eventually(cond: Callable[[], bool], within_s: float = 5.0) -> None:
    """Wait until ``cond()`` holds (the server counts some events after the client moved on)."""
    for _ in range(int(within_s / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)


def chat_body(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


def claude_body(content: Any, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]
CLAUDE_TOOLS = [
    {"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
]


# --- pure functions --------------------------------------------------------------------------


def test_count_tokens() -> None:
    assert count_tokens("") == 1
    assert count_tokens("abcd") == 1
    assert count_tokens("abcde") == 2
    assert count_tokens("é" * 4) == 2  # 8 UTF-8 bytes
    assert count_tokens("\ud800") == 1  # lone surrogate: counted, not an error


def test_sim_embedding_is_deterministic_unit_and_truncatable() -> None:
    a = sim_embedding("m", "hello", 1536)
    assert a.dtype == np.float32 and a.shape == (1536,)
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    assert np.array_equal(a, sim_embedding("m", "hello", 1536))
    assert not np.array_equal(a, sim_embedding("m", "hello!", 1536))
    assert not np.array_equal(a, sim_embedding("m2", "hello", 1536))
    small = sim_embedding("m", "hello", 64)
    head = a[:64].astype(np.float64)
    assert np.allclose(small, head / np.linalg.norm(head), atol=1e-6)
    # Unrelated texts are nearly orthogonal.
    assert abs(float(a @ sim_embedding("m", "other text", 1536))) < 0.3


def test_sim_reply_shape() -> None:
    r = sim_reply("m", "hi")
    words = r.split(" ")
    assert len(words) == 12 and words[:2] == ["sim", "reply"]
    assert len(words[2]) == 16
    assert sim_reply("m", "hi", 3) == " ".join(words[:3])
    assert sim_reply("m", "hi", 40).startswith(r)
    assert sim_reply("m", "hi") != sim_reply("m", "ho")


def test_parse_latency_and_duration() -> None:
    rng = __import__("random").Random(0)
    assert parse_latency("fixed:0.2").sample(rng) == 0.2
    assert parse_latency(0.3).sample(rng) == 0.3
    u = [parse_latency("uniform:0.05,0.2").sample(rng) for _ in range(100)]
    assert all(0.05 <= x <= 0.2 for x in u)
    ln = [parse_latency("lognormal:0.1,0.5").sample(rng) for _ in range(500)]
    assert 0.07 < float(np.median(ln)) < 0.14
    for bad in ("uniform:0.3,0.1", "gauss:1", "fixed:-1", "x"):
        with pytest.raises(ConfigError):
            parse_latency(bad)
    assert format_duration(0.12) == "120ms"
    assert format_duration(0) == "0s"
    assert format_duration(1) == "1s"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"
    assert format_duration(3725) == "1h2m5s"


def test_config_validation_and_repr() -> None:
    with pytest.raises(ConfigError):
        SimConfig(fault_500=0.7, fault_503=0.7)
    with pytest.raises(ConfigError):
        SimConfig(overload_status=500)
    with pytest.raises(ConfigError):
        SimConfig().replace(nope=1)
    assert "secret-key" not in repr(SimConfig(api_key="secret-key"))


def test_minimal_instance() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 18},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "pet": {"$ref": "#/$defs/Pet"},
            "kind": {"enum": ["a", "b"]},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "number"}]},
            "optional": {"type": "string"},
        },
        "required": ["name", "age", "ok", "tags", "pet", "kind", "maybe"],
        "$defs": {
            "Pet": {"type": "object", "properties": {"n": {"type": "string"}}, "required": ["n"]}
        },
    }
    assert minimal_instance(schema) == {
        "name": "sim",
        "age": 18,
        "ok": False,
        "tags": ["sim"],
        "pet": {"n": "sim"},
        "kind": "a",
        "maybe": 0,
    }


def test_cli_build_config() -> None:
    cfg = build_config(
        '{"rpm": 10, "latency": "uniform:0.1,0.2"}',
        {"rpm": 5.0, "overload_status": "503", "latency": None},
    )
    assert cfg.rpm == 5.0 and cfg.overload_status == 503 and cfg.latency == "uniform:0.1,0.2"
    assert build_config(None, {"latency": "0.25"}).latency == 0.25


# --- embeddings ------------------------------------------------------------------------------


async def test_embeddings_float_base64_and_determinism(
    srv: SimServer, http: aiohttp.ClientSession
) -> None:
    texts = ["alpha", "beta", "gamma δ", "alpha"]
    body = {"model": "text-embedding-3-small", "input": texts}
    f = await post(http, srv.url + "/embeddings", body)
    b = await post(http, srv.url + "/embeddings", {**body, "encoding_format": "base64"})
    assert f.status == 200 and b.status == 200
    fj, bj = f.json(), b.json()
    assert fj["object"] == "list" and fj["model"] == "text-embedding-3-small"
    assert [d["index"] for d in fj["data"]] == [0, 1, 2, 3]
    assert fj["usage"] == {
        "prompt_tokens": sum(count_tokens(t) for t in texts),
        "total_tokens": sum(count_tokens(t) for t in texts),
    }
    for t, df, db in zip(texts, fj["data"], bj["data"], strict=True):
        vf = np.array(df["embedding"], dtype=np.float32)
        vb = np.frombuffer(base64.b64decode(db["embedding"]), dtype="<f4")
        assert vf.shape == (1536,)
        assert np.array_equal(vf, vb)
        assert np.array_equal(vf, sim_embedding("text-embedding-3-small", t, 1536))
    assert f.headers["x-request-id"].startswith("req_")
    # Served again (from the cache) identically.
    again = await post(http, srv.url + "/embeddings", body)
    assert again.json()["data"] == fj["data"]


async def test_embedding_dimensions_and_models(srv: SimServer, http: aiohttp.ClientSession) -> None:
    r = await post(http, srv.url + "/embeddings", {"model": "text-embedding-3-large", "input": "x"})
    assert len(r.json()["data"][0]["embedding"]) == 3072
    r = await post(
        http,
        srv.url + "/embeddings",
        {
            "model": "text-embedding-3-large",
            "input": "x",
            "dimensions": 256,
            "encoding_format": "base64",
        },
    )
    v = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(v, sim_embedding("text-embedding-3-large", "x", 256))
    # Token-id inputs are embedded as the text of the ids joined by spaces.
    r = await post(http, srv.url + "/embeddings", {"model": "m", "input": [[1, 2, 3], [7]]})
    data = r.json()["data"]
    assert np.array_equal(
        np.array(data[0]["embedding"], dtype=np.float32), sim_embedding("m", "1 2 3", 1536)
    )
    assert r.json()["usage"]["prompt_tokens"] == 4
    # Azure: the deployment is the model; no 'model' in the body needed.
    r = await post(
        http,
        srv.base + "/openai/deployments/my-dep/embeddings?api-version=2024-02-01",
        {"input": "x", "dimensions": 8},
    )
    assert r.status == 200 and r.json()["model"] == "my-dep"
    assert np.array_equal(
        np.array(r.json()["data"][0]["embedding"], dtype=np.float32),
        sim_embedding("my-dep", "x", 8),
    )
    # Other prefixes.
    for prefix in ("", "/api/v3"):
        r = await post(http, srv.base + prefix + "/embeddings", {"model": "m", "input": "x"})
        assert r.status == 200
    async with http.get(srv.url + "/models") as resp:
        assert "text-embedding-3-small" in [m["id"] for m in (await resp.json())["data"]]


async def test_embedding_rejections(http: aiohttp.ClientSession) -> None:
    cfg = SimConfig(max_inputs=3, max_input_tokens=10, max_request_tokens=20, support_base64=False)
    with SimServer(cfg) as srv:
        url = srv.url + "/embeddings"
        cases = [
            {"model": "m", "input": ["a", "b", "c", "d"]},
            {"model": "m", "input": ["x" * 41]},
            {"model": "m", "input": ["x" * 40, "x" * 40, "x" * 4]},
            {"model": "m", "input": ["ok", ""]},
            {"model": "m", "input": ""},
            {"model": "m", "input": []},
            {"model": "m", "input": "ok", "encoding_format": "base64"},
            {"model": "m", "input": [1.5]},
            {"input": "no model"},
        ]
        for body in cases:
            r = await post(http, url, body)
            assert r.status == 400, body
            err = r.json()["error"]
            assert err["type"] == "invalid_request_error" and err["message"]
            assert "code" in err
        ok = await post(http, url, {"model": "m", "input": ["x" * 40, "x" * 40]})
        assert ok.status == 200
        async with http.post(url, data=b"{not json") as resp:
            assert resp.status == 400
        st = srv.stats()
        assert st["bad_requests"] == len(cases) + 1
        assert st["embedding_inputs"] == 2 and st["tokens"] == 20
        assert st["status_counts"] == {"400": len(cases) + 1, "200": 1}


# --- chat ------------------------------------------------------------------------------------


async def test_chat_default_echo_and_limits(srv: SimServer, http: aiohttp.ClientSession) -> None:
    url = srv.url + "/chat/completions"
    body = chat_body("what is up?")
    body["messages"].insert(0, {"role": "system", "content": "be brief"})
    r = (await post(http, url, body)).json()
    expected = sim_reply("gpt-4o-mini", "what is up?")
    msg = r["choices"][0]
    assert msg["message"]["content"] == expected and msg["finish_reason"] == "stop"
    assert r["object"] == "chat.completion"
    assert r["usage"] == {
        "prompt_tokens": count_tokens("be brief") + count_tokens("what is up?"),
        "completion_tokens": count_tokens(expected),
        "total_tokens": count_tokens("be brief")
        + count_tokens("what is up?")
        + count_tokens(expected),
    }
    # Content given as parts.
    parts = chat_body([{"type": "text", "text": "what is up?"}])
    assert (await post(http, url, parts)).json()["choices"][0]["message"]["content"] == expected

    r = (await post(http, url, chat_body("ECHO:  keep  this exactly\n"))).json()
    assert r["choices"][0]["message"]["content"] == "  keep  this exactly\n"
    r = (await post(http, url, chat_body("ECHO:abcdefghijkl", max_tokens=2))).json()
    assert r["choices"][0]["message"]["content"] == "abcdefgh"
    assert r["choices"][0]["finish_reason"] == "length"
    r = (await post(http, url, chat_body("ECHO:one two STOP three", stop=["STOP", "two"]))).json()
    assert r["choices"][0]["message"]["content"] == "one "
    assert r["choices"][0]["finish_reason"] == "stop"
    bad = await post(http, url, {"model": "m", "messages": []})
    assert bad.status == 400 and bad.json()["error"]["type"] == "invalid_request_error"


async def test_openai_tool_round_trip(srv: SimServer, http: aiohttp.ClientSession) -> None:
    url = srv.url + "/chat/completions"
    prompt = 'find [[tool:lookup {"q": "a]]b", "n": {"x": 1}}]] and [[tool:lookup {"q": "c"}]]'
    # Without tools in the request the directive is just text.
    r = (await post(http, url, chat_body(prompt))).json()
    assert r["choices"][0]["message"]["content"] == sim_reply("gpt-4o-mini", prompt)
    r = (await post(http, url, chat_body(prompt, tools=TOOLS))).json()
    choice = r["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["lookup", "lookup"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [
        {"q": "a]]b", "n": {"x": 1}},
        {"q": "c"},
    ]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert calls[0]["id"] != calls[1]["id"]
    messages = [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "R1"},
        {"role": "tool", "tool_call_id": calls[1]["id"], "content": "R2"},
    ]
    r = (
        await post(http, url, {"model": "gpt-4o-mini", "messages": messages, "tools": TOOLS})
    ).json()
    assert r["choices"][0]["message"]["content"] == "final: R1 | R2"
    assert r["choices"][0]["finish_reason"] == "stop"


async def test_anthropic_tool_round_trip(srv: SimServer, http: aiohttp.ClientSession) -> None:
    url = srv.url + "/messages"
    prompt = 'use [[tool:lookup {"q": "x"}]]'
    r = await post(http, url, claude_body(prompt, tools=CLAUDE_TOOLS), ANTHROPIC_HEADERS)
    j = r.json()
    assert j["type"] == "message" and j["stop_reason"] == "tool_use"
    (block,) = j["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert block["name"] == "lookup" and block["input"] == {"q": "x"}
    assert j["usage"]["input_tokens"] == count_tokens(prompt)
    messages = [
        {"role": "user", "content": prompt},
        {"role": "assistant", "content": j["content"]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": block["id"],
                    "content": [{"type": "text", "text": "found it"}],
                }
            ],
        },
    ]
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": messages,
        "tools": CLAUDE_TOOLS,
        "system": [{"type": "text", "text": "sys"}],
    }
    j = (await post(http, url, body, ANTHROPIC_HEADERS)).json()
    assert j["content"] == [{"type": "text", "text": "final: found it"}]
    assert j["stop_reason"] == "end_turn"


async def test_anthropic_basics(srv: SimServer, http: aiohttp.ClientSession) -> None:
    url = srv.url + "/messages"
    j = (await post(http, url, claude_body("hello", system="be nice"), ANTHROPIC_HEADERS)).json()
    expected = sim_reply("claude-sonnet-4-5", "hello")
    assert j["content"] == [{"type": "text", "text": expected}]
    assert j["usage"] == {
        "input_tokens": count_tokens("be nice") + count_tokens("hello"),
        "output_tokens": count_tokens(expected),
    }
    j = (
        await post(http, url, claude_body("ECHO:abcdefghij", max_tokens=1), ANTHROPIC_HEADERS)
    ).json()
    assert j["content"][0]["text"] == "abcd" and j["stop_reason"] == "max_tokens"
    j = (
        await post(http, url, claude_body("ECHO:a b c", stop_sequences=[" b"]), ANTHROPIC_HEADERS)
    ).json()
    assert j["content"][0]["text"] == "a"
    assert j["stop_reason"] == "stop_sequence" and j["stop_sequence"] == " b"
    r = await post(http, url, claude_body("hello"))
    assert r.status == 400 and r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    no_max = claude_body("hello")
    del no_max["max_tokens"]
    r = await post(http, url, no_max, ANTHROPIC_HEADERS)
    assert r.status == 400 and "max_tokens" in r.json()["error"]["message"]


async def test_structured_output(srv: SimServer, http: aiohttp.ClientSession) -> None:
    url = srv.url + "/chat/completions"
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "number"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    r = (await post(http, url, chat_body("give json", response_format=rf))).json()
    assert json.loads(r["choices"][0]["message"]["content"]) == {"a": "sim", "b": 0}
    text = '[[json {"a": "custom", "b": [1, 2]}]]'
    r = (await post(http, url, chat_body("please " + text, response_format=rf))).json()
    assert r["choices"][0]["message"]["content"] == '{"a": "custom", "b": [1, 2]}'
    r = (await post(http, url, chat_body("[[invalid_json]]", response_format=rf))).json()
    with pytest.raises(json.JSONDecodeError):
        json.loads(r["choices"][0]["message"]["content"])
    r = (await post(http, url, chat_body("x", response_format={"type": "json_object"}))).json()
    assert json.loads(r["choices"][0]["message"]["content"]) == {}
    # Anthropic output_format.
    of = {"type": "json_schema", "schema": schema}
    j = (
        await post(
            http, srv.url + "/messages", claude_body("x", output_format=of), ANTHROPIC_HEADERS
        )
    ).json()
    assert json.loads(j["content"][0]["text"]) == {"a": "sim", "b": 0}


# --- streaming -------------------------------------------------------------------------------


async def test_openai_streaming(srv: SimServer, http: aiohttp.ClientSession) -> None:
    url = srv.url + "/chat/completions"
    body = chat_body("stream me", stream=True, stream_options={"include_usage": True})
    events = await sse(http, url, body)
    assert events[-1][1] == "[DONE]"
    chunks = [d for _, d in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    expected = sim_reply("gpt-4o-mini", "stream me")
    assert text == expected
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == count_tokens(expected)
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) > 3
    # Tool calls stream as OpenAI deltas with argument fragments.
    prompt = '[[tool:lookup {"q": "a long query string"}]] [[tool:other]]'
    events = await sse(http, url, chat_body(prompt, tools=TOOLS, stream=True))
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for _, d in events[:-1]:
        ch = d["choices"][0]
        finish = ch["finish_reason"] or finish
        for tc in ch["delta"].get("tool_calls") or []:
            slot = calls.setdefault(tc["index"], {"arguments": ""})
            if "id" in tc:
                slot["id"] = tc["id"]
                slot["name"] = tc["function"]["name"]
            slot["arguments"] += tc["function"].get("arguments", "")
    assert finish == "tool_calls"
    assert calls[0]["name"] == "lookup" and json.loads(calls[0]["arguments"]) == {
        "q": "a long query string"
    }
    assert calls[1]["name"] == "other" and json.loads(calls[1]["arguments"]) == {}
    assert calls[0]["id"].startswith("call_")


async def test_anthropic_streaming(srv: SimServer, http: aiohttp.ClientSession) -> None:
    url = srv.url + "/messages"
    events = await sse(http, url, claude_body("stream me", stream=True), ANTHROPIC_HEADERS)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert names[-2] == "message_delta"
    assert all(n == d["type"] for n, d in events)
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    non_stream = (await post(http, url, claude_body("stream me"), ANTHROPIC_HEADERS)).json()
    assert text == non_stream["content"][0]["text"] == sim_reply("claude-sonnet-4-5", "stream me")
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == count_tokens(text)
    events = await sse(
        http,
        url,
        claude_body('[[tool:lookup {"q": "zz"}]]', stream=True, tools=CLAUDE_TOOLS),
        ANTHROPIC_HEADERS,
    )
    start = next(d for n, d in events if n == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    assert start["content_block"]["id"].startswith("toolu_")
    partial = "".join(d["delta"]["partial_json"] for n, d in events if n == "content_block_delta")
    assert json.loads(partial) == {"q": "zz"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_truncate_fault(http: aiohttp.ClientSession) -> None:
    with SimServer(SimConfig(fault_truncate=1.0)) as srv:
        url = srv.url + "/chat/completions"
        async with http.post(url, json=chat_body("x", stream=True)) as r:
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
        async with http.post(
            srv.url + "/messages", json=claude_body("x", stream=True), headers=ANTHROPIC_HEADERS
        ) as r:
            got = b""
            with pytest.raises(aiohttp.ClientPayloadError):
                async for chunk in r.content.iter_any():
                    got += chunk
            assert b"message_start" in got and b"message_stop" not in got
        async with http.post(srv.url + "/embeddings", json={"model": "m", "input": "x"}) as r:
            assert r.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
        assert srv.stats()["faults"]["truncate"] == 3


# --- limits ----------------------------------------------------------------------------------


async def test_max_in_flight_overload(http: aiohttp.ClientSession) -> None:
    with SimServer(SimConfig(latency="fixed:0.3", max_in_flight=3, overload_status=503)) as srv:
        url = srv.url + "/embeddings"
        replies = await asyncio.gather(
            *(post(http, url, {"model": "m", "input": f"t{i}"}) for i in range(10))
        )
        statuses = sorted(r.status for r in replies)
        assert statuses.count(200) == 3 and statuses.count(503) == 7
        over = next(r for r in replies if r.status == 503)
        assert over.headers["retry-after-ms"] == "50" and over.headers["retry-after"] == "1"
        st = srv.stats()
        assert st["max_in_flight"] == 3 and st["overloaded"] == 7 and st["in_flight"] == 0
        srv.reset_stats()
        assert srv.stats()["max_in_flight"] == 0 and srv.log == []


async def test_many_concurrent_connections(http: aiohttp.ClientSession) -> None:
    with SimServer(SimConfig(latency="fixed:0.5", embedding_dim=8)) as srv:
        conn = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=conn) as many:
            replies = await asyncio.gather(
                *(
                    post(many, srv.url + "/embeddings", {"model": "m", "input": str(i)})
                    for i in range(400)
                )
            )
        assert all(r.status == 200 for r in replies)
        st = srv.stats()
        assert st["max_in_flight"] > 100 and st["requests"] == 400


async def test_rpm_limit_headers(http: aiohttp.ClientSession) -> None:
    with SimServer(SimConfig(rpm=2, tpm=1000)) as srv:
        url = srv.url + "/embeddings"
        r1 = await post(http, url, {"model": "m", "input": "abcd"})
        assert r1.status == 200
        assert r1.headers["x-ratelimit-limit-requests"] == "2"
        assert r1.headers["x-ratelimit-remaining-requests"] == "1"
        assert r1.headers["x-ratelimit-limit-tokens"] == "1000"
        assert r1.headers["x-ratelimit-remaining-tokens"] == "999"
        assert r1.headers["x-ratelimit-reset-requests"].endswith("s")
        r2 = await post(http, url, {"model": "m", "input": "abcd"})
        assert r2.status == 200
        r3 = await post(http, url, {"model": "m", "input": "abcd"})
        assert r3.status == 429
        assert r3.json()["error"]["code"] == "rate_limit_exceeded"
        retry = int(r3.headers["retry-after"])
        retry_ms = int(r3.headers["retry-after-ms"])
        assert 25 <= retry <= 30 and 25_000 <= retry_ms <= 30_000
        assert r3.headers["x-ratelimit-remaining-requests"] == "0"
        for name in ("limit", "remaining", "reset"):
            assert f"x-ratelimit-{name}-tokens" in r3.headers
        # Anthropic route shares the buckets.
        r4 = await post(http, srv.url + "/messages", claude_body("x"), ANTHROPIC_HEADERS)
        assert r4.status == 429 and r4.json()["error"]["type"] == "rate_limit_error"
        assert r4.headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert r4.headers["anthropic-ratelimit-tokens-limit"] == "1000"
        assert r4.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        assert srv.stats()["rate_limited"] == 2
        # Raising the limit live refills the buckets.
        srv.update(rpm=600)
        assert (await post(http, url, {"model": "m", "input": "abcd"})).status == 200


async def test_oversize_token_request_accepted_when_bucket_full(
    http: aiohttp.ClientSession,
) -> None:
    with SimServer(SimConfig(tpm=60, rate_window_s=60)) as srv:
        url = srv.url + "/embeddings"
        big = {"model": "m", "input": "x" * 400}  # 100 tokens > capacity 60
        assert (await post(http, url, big)).status == 200
        again = await post(http, url, big)
        assert again.status == 429
        assert int(again.headers["retry-after"]) > 60  # the bucket is in debt
        small = await post(http, url, {"model": "m", "input": "x"})
        assert small.status == 429
        # Chat requests count prompt + max_tokens.
        srv.update(tpm=100)
        r = await post(http, srv.url + "/chat/completions", chat_body("hi", max_tokens=90))
        assert r.status == 200
        assert r.headers["x-ratelimit-remaining-tokens"] == str(100 - 90 - count_tokens("hi"))


async def test_auth(http: aiohttp.ClientSession) -> None:
    with SimServer(SimConfig(api_key="sk-sim-secret")) as srv:
        url = srv.url + "/embeddings"
        body = {"model": "m", "input": "x"}
        r = await post(http, url, body)
        assert r.status == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert r.headers["x-request-id"].startswith("req_")
        assert (await post(http, url, body, {"Authorization": "Bearer wrong"})).status == 401
        assert (
            await post(http, url, body, {"Authorization": "Bearer sk-sim-secret"})
        ).status == 200
        assert (await post(http, url, body, {"api-key": "sk-sim-secret"})).status == 200
        murl = srv.url + "/messages"
        r = await post(http, murl, claude_body("x"), ANTHROPIC_HEADERS)
        assert r.status == 401 and r.json()["error"]["type"] == "authentication_error"
        ok = await post(
            http, murl, claude_body("x"), {**ANTHROPIC_HEADERS, "x-api-key": "sk-sim-secret"}
        )
        assert ok.status == 200
        assert srv.stats()["status_counts"] == {"401": 3, "200": 3}


# --- faults ----------------------------------------------------------------------------------


async def test_fault_injection(http: aiohttp.ClientSession) -> None:
    body = {"model": "m", "input": "x"}
    with SimServer(SimConfig(fault_500=1.0)) as srv:
        url = srv.url + "/embeddings"
        r = await post(http, url, body)
        assert r.status == 500 and r.json()["error"]["type"] == "server_error"
        srv.update(fault_500=0.0, fault_503=1.0)
        r = await post(http, url, body)
        assert r.status == 503 and r.headers["retry-after-ms"] == "100"
        srv.update(fault_503=0.0, fault_malformed=1.0)
        r = await post(http, url, body)
        assert r.status == 200
        with pytest.raises(orjson.JSONDecodeError):
            r.json()
        srv.update(fault_malformed=0.0, fault_reset=1.0)
        with pytest.raises(aiohttp.ClientError):
            await post(http, url, body)
        srv.update(fault_reset=0.0, fault_timeout=1.0, timeout_hang_s=5.0)
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=0.3)) as resp:
                await resp.read()
        assert time.monotonic() - t0 < 2
        srv.update(fault_timeout=0.0)
        assert (await post(http, url, body)).status == 200
        st = srv.stats()
        assert st["faults"] == {
            "500": 1,
            "503": 1,
            "timeout": 1,
            "reset": 1,
            "malformed": 1,
            "truncate": 0,
        }
        await eventually(lambda: srv.stats()["client_disconnects"] >= 1)
        assert srv.stats()["client_disconnects"] == 1
        faults = [e["fault"] for e in srv.log]
        assert faults == ["500", "503", "malformed", "reset", "timeout", None]


async def test_fault_probabilities_are_seeded(http: aiohttp.ClientSession) -> None:
    async def run() -> list[int]:
        with SimServer(SimConfig(fault_500=0.3, seed=7)) as srv:
            statuses = [
                (await post(http, srv.url + "/embeddings", {"model": "m", "input": "x"})).status
                for _ in range(40)
            ]
            assert srv.stats()["faults"]["500"] == statuses.count(500)
            return statuses

    first = await run()
    assert 3 <= first.count(500) <= 25
    assert await run() == first


async def test_client_disconnect_mid_stream_is_counted(http: aiohttp.ClientSession) -> None:
    with SimServer(SimConfig(stream_token_s=0.05, reply_words=40)) as srv:
        async with http.post(srv.url + "/chat/completions", json=chat_body("x", stream=True)) as r:
            first = await r.content.readline()
            assert first.startswith(b"data: ")
            r.close()
        await eventually(lambda: srv.stats()["client_disconnects"] >= 1)
        st = srv.stats()
        assert st["client_disconnects"] == 1 and st["in_flight"] == 0
        assert st["status_counts"] == {"499": 1}


async def test_latency_and_log(http: aiohttp.ClientSession) -> None:
    with SimServer(SimConfig(latency="fixed:0.1", per_token_s=0.01)) as srv:
        t0 = time.monotonic()
        r = await post(http, srv.url + "/embeddings", {"model": "m", "input": "x" * 40})  # 10 tok
        assert r.status == 200
        assert 0.18 <= time.monotonic() - t0 < 1.0
        (entry,) = srv.log
        assert entry["path"] == "/v1/embeddings" and entry["status"] == 200
        assert entry["n_inputs"] == 1 and entry["tokens"] == 10 and entry["fault"] is None
        assert entry["request_id"] == r.headers["x-request-id"]
        assert entry["t_end"] - entry["t"] >= 0.18


def test_sim_process_over_http() -> None:
    with SimProcess(SimConfig(embedding_dim=16, reply_words=5)) as proc:
        assert proc.url.startswith("http://127.0.0.1:") and proc.url.endswith("/v1")
        import urllib.request

        req = urllib.request.Request(
            proc.url + "/embeddings",
            data=orjson.dumps({"model": "m", "input": ["a", "b"]}),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = orjson.loads(resp.read())["data"]
        assert np.array_equal(
            np.array(data[1]["embedding"], dtype=np.float32), sim_embedding("m", "b", 16)
        )
        st = proc.stats()
        assert st["requests"] == 1 and st["embedding_inputs"] == 2
        assert proc.update(rpm=5).rpm == 5
        assert len(proc.log) == 1
        proc.reset_stats()
        assert proc.stats()["requests"] == 0
        with pytest.raises(ConfigError):
            proc.update(fault_500=2.0)
        pid = proc.pid
    assert pid is not None and proc.pid is None


def test_server_refuses_non_loopback() -> None:
    with pytest.raises(ConfigError):
        SimServer(host="0.0.0.0")
