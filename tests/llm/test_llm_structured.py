"""Structured output: response_format=PydanticModel → JSON-schema request, parsed and validated
result; invalid JSON / schema mismatch → ResponseError (issue 4). Plus wire-format unit tests."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from parallelrag.errors import ResponseError
from parallelrag.llm import LlmClient, _strict_schema
from parallelrag.providers.chat_openai import SSEDecoder
from parallelrag.sim import SimServer

KEY = "sk-test-0123456789"
FLAVORS = ["openai", "anthropic"]


class City(pydantic.BaseModel):
    name: str
    population: int
    tags: list[str]


class Loose(pydantic.BaseModel):
    name: str
    note: str | None = None


def client(srv: SimServer, flavor: str, model: str = "m") -> LlmClient:
    if flavor == "openai":
        return LlmClient.openai(model, base_url=srv.url, api_key=KEY)
    return LlmClient.anthropic(model, api_key=KEY, base_url=srv.base)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_minimal_instance_of_the_schema(sim: SimServer, flavor: str) -> None:
    r = client(sim, flavor).complete_full("describe a city", response_format=City)
    assert r.parsed == City(name="sim", population=0, tags=[])
    assert pydantic.TypeAdapter(City).validate_json(r.text) == r.parsed


@pytest.mark.parametrize("flavor", FLAVORS)
def test_json_directive_is_parsed(sim: SimServer, flavor: str) -> None:
    prompt = 'a city please [[json {"name": "Oslo", "population": 700000, "tags": ["cold"]}]]'
    r = client(sim, flavor).complete_full(prompt, response_format=City)
    assert isinstance(r.parsed, City)
    assert r.parsed == City(name="Oslo", population=700000, tags=["cold"])


@pytest.mark.parametrize("flavor", FLAVORS)
def test_invalid_json_raises_response_error(sim: SimServer, flavor: str) -> None:
    llm = client(sim, flavor)
    with pytest.raises(ResponseError, match="not valid JSON"):
        llm.complete_full("break it [[invalid_json]]", response_format=City)
    with pytest.raises(ResponseError, match="does not validate against City"):
        llm.complete_full('wrong [[json {"name": "x", "population": "many"}]]',
                          response_format=City)


def test_raw_json_object_format(sim: SimServer) -> None:
    r = client(sim, "openai").complete_full('[[json {"a": [1, 2]}]]',
                                            response_format={"type": "json_object"})
    assert r.parsed == {"a": [1, 2]}


def test_strict_schema_only_when_possible() -> None:
    strict, ok = _strict_schema(City.model_json_schema())
    assert ok and strict["additionalProperties"] is False
    _, ok2 = _strict_schema(Loose.model_json_schema())  # an optional field: not strict-able
    assert not ok2
    llm = LlmClient.openai("m", base_url="http://127.0.0.1:9/v1", api_key=KEY)
    prep = llm._prepare("x", response_format=City)
    payload: dict[str, Any] = llm._dialect.build(prep.req, stream=False)
    rf = payload["response_format"]
    assert rf["type"] == "json_schema"
    assert rf["json_schema"]["name"] == "City" and rf["json_schema"]["strict"] is True
    assert rf["json_schema"]["schema"]["required"] == ["name", "population", "tags"]


def test_sse_decoder_handles_any_chunking() -> None:
    raw = (b"event: a\r\ndata: {\"x\": 1}\r\n\r\n: comment\n\ndata: line1\ndata: line2\n\n"
           b"data: [DONE]\n\n")
    expected = [("a", '{"x": 1}'), ("message", "line1\nline2"), ("message", "[DONE]")]
    for size in (1, 2, 3, 7, len(raw)):
        dec = SSEDecoder()
        got = []
        for i in range(0, len(raw), size):
            got.extend(dec.feed(raw[i : i + size]))
        got.extend(dec.flush())
        assert got == expected, size
    dec = SSEDecoder()
    assert dec.feed(b"data: no blank line at EOF") == []
    assert dec.flush() == [("message", "no blank line at EOF")]
