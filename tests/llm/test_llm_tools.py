"""Tool schemas from Python functions, Tool.invoke / ainvoke, and tool-call round trips through
both wire formats against the sim (issue 4)."""

from __future__ import annotations

import asyncio
import threading
from enum import Enum
from typing import Literal, Optional

import pydantic
import pytest

from parallelrag.errors import ConfigError
from parallelrag.llm import LlmClient, Message, ToolCall
from parallelrag.providers.anthropic import to_anthropic_messages
from parallelrag.runtime import get_runtime
from parallelrag.sim import SimServer
from parallelrag.tools import Tool, ToolArgumentError, parse_docstring, tool

KEY = "sk-test-0123456789"


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Point(pydantic.BaseModel):
    x: int
    y: int = 0


def everything(
    s: str,
    i: int,
    f: float,
    b: bool,
    li: list[int],
    d: dict[str, float],
    lit: Literal["a", "b"],
    opt: Optional[int],  # noqa: UP045 - the Optional spelling is what we test
    color: Color,
    point: Point,
    maybe: str | None = None,
    n: int = 3,
) -> str:
    """Exercise every supported type.

    Args:
        s: a string
            spanning two lines.
        i (int): an integer.
        point: a pydantic model.
    """
    return "ok"


def test_schema_types_from_signature() -> None:
    t = Tool.from_function(everything)
    p = t.parameters
    props = p["properties"]
    assert p["type"] == "object"
    assert props["s"] == {"type": "string", "description": "a string spanning two lines."}
    assert props["i"] == {"type": "integer", "description": "an integer."}
    assert props["f"] == {"type": "number"}
    assert props["b"] == {"type": "boolean"}
    assert props["li"] == {"type": "array", "items": {"type": "integer"}}
    assert props["d"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["lit"] == {"type": "string", "enum": ["a", "b"]}
    assert props["opt"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert props["maybe"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert props["maybe"]["default"] is None
    assert props["n"] == {"type": "integer", "default": 3}
    color = p["$defs"][props["color"]["$ref"].rsplit("/", 1)[-1]]
    assert color["enum"] == ["red", "blue"]
    point = p["$defs"][props["point"]["$ref"].rsplit("/", 1)[-1]]
    assert point["properties"]["x"] == {"type": "integer"}
    assert point["required"] == ["x"]
    assert props["point"]["description"] == "a pydantic model."
    # defaults -> not required; everything else required
    assert set(p["required"]) == {"s", "i", "f", "b", "li", "d", "lit", "opt", "color", "point"}
    assert t.description == "Exercise every supported type."
    assert t.name == "everything"
    assert not t.is_async


def test_decorator_bare_and_with_arguments() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @tool(name="mul_tool", description="Multiply.")
    async def mul(a: int, b: int) -> int:
        return a * b

    assert isinstance(add, Tool) and add.name == "add" and add.description == "Add two numbers."
    assert mul.name == "mul_tool" and mul.description == "Multiply." and mul.is_async
    assert add.to_openai() == {
        "type": "function",
        "function": {"name": "add", "description": "Add two numbers.",
                     "parameters": add.parameters},
    }
    assert mul.to_anthropic() == {"name": "mul_tool", "description": "Multiply.",
                                  "input_schema": mul.parameters}
    assert add(2, 3) == 5  # still callable directly


def test_docstring_styles() -> None:
    google = parse_docstring(
        """Summary line.

        Longer text.

        Args:
            x (int): the x
                value.
            *rest: ignored extras.

        Returns:
            int: something
        """
    )
    assert google == ("Summary line.\n\nLonger text.", {"x": "the x value.", "rest": "ignored extras."})
    numpy = parse_docstring(
        """Summary.

        Parameters
        ----------
        x : int
            The x.
        y : str, optional
            The y
            continued.

        Returns
        -------
        int
        """
    )
    assert numpy == ("Summary.", {"x": "The x.", "y": "The y continued."})
    sphinx = parse_docstring("Summary.\n\n:param x: the x\n:param int y: the y\n:returns: z")
    assert sphinx == ("Summary.", {"x": "the x", "y": "the y"})


def test_invoke_validates_and_coerces() -> None:
    t = Tool.from_function(everything)
    args = {"s": "x", "i": "7", "f": 1, "b": True, "li": [1, "2"], "d": {"k": 1},
            "lit": "a", "opt": None, "color": "blue", "point": {"x": 1}}
    kwargs = t.validate(args)
    assert kwargs["i"] == 7 and kwargs["li"] == [1, 2] and kwargs["f"] == 1.0
    assert kwargs["color"] is Color.BLUE
    assert kwargs["point"] == Point(x=1, y=0)
    assert kwargs["n"] == 3 and kwargs["maybe"] is None
    assert t.invoke(args) == "ok"
    assert t.invoke('{"s": "x", "i": 1, "f": 1, "b": false, "li": [], "d": {}, "lit": "b", '
                    '"opt": 1, "color": "red", "point": {"x": 2}}') == "ok"
    with pytest.raises(ToolArgumentError):
        t.invoke({**args, "lit": "zzz"})
    with pytest.raises(ToolArgumentError):
        t.invoke({"s": "only one"})
    with pytest.raises(ToolArgumentError):
        t.invoke("not json")


async def test_ainvoke_runs_sync_tools_off_the_runtime_thread() -> None:
    seen: list[int | None] = []

    @tool
    def where() -> str:
        seen.append(threading.get_ident())
        return "sync"

    @tool
    async def aw(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert await where.ainvoke({}) == "sync"
    assert await aw.ainvoke({"x": "21"}) == 42
    assert aw.invoke({"x": 2}) == 4  # sync invoke of an async tool
    # on the runtime loop too (as the workflow engine calls it): still off the runtime thread
    rt = get_runtime()
    assert await rt.run_async(where.ainvoke({})) == "sync"
    assert rt.thread.ident not in seen
    assert seen[0] != rt.thread.ident


def test_bad_tool_definitions() -> None:
    with pytest.raises(ConfigError):
        Tool.from_function(lambda x: x, name="has space")
    with pytest.raises(ConfigError):
        Tool.from_schema({"description": "no name"}).name  # noqa: B018


def test_anthropic_message_mapping() -> None:
    call = ToolCall("toolu_1", "get_weather", {"city": "Paris"})
    msgs = [
        Message.system("sys one").to_dict(),
        Message.system("sys two").to_dict(),
        Message.user("q").to_dict(),
        Message.assistant("thinking", tool_calls=[call]).to_dict(),
        Message.tool_result(call, "sunny").to_dict(),
        Message.tool_result("toolu_2", {"t": 21}).to_dict(),
    ]
    system, out = to_anthropic_messages(msgs)
    assert system == "sys one\n\nsys two"
    assert out == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "thinking"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": '{"t":21}'},
        ]},
    ]


# --------------------------------------------------------------------------- round trips
def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
    """Current weather of a city.

    Args:
        city: the city name.
        unit: temperature unit.
    """
    return f"{city}: 21{unit}"


@pytest.mark.parametrize("flavor", ["openai", "anthropic"])
@pytest.mark.parametrize("streamed", [False, True])
def test_tool_call_round_trip(sim: SimServer, flavor: str, streamed: bool) -> None:
    if flavor == "openai":
        llm = LlmClient.openai("tools", base_url=sim.url, api_key=KEY)
    else:
        llm = LlmClient.anthropic("tools", api_key=KEY, base_url=sim.base)
    prompt = 'Weather please [[tool:get_weather {"city": "Paris"}]] [[tool:get_weather {"city": "Oslo", "unit": "f"}]]'
    messages: list[Message] = [Message.user(prompt)]
    if streamed:
        s = llm.stream(messages, tools=[get_weather])
        assert list(s) == []  # tool calls only, no text
        r = s.response
        assert r is not None
    else:
        r = llm.complete_full(messages, tools=[get_weather], tool_choice="auto")
    assert r.finish_reason == "tool_calls"
    prefix = "call_" if flavor == "openai" else "toolu_"
    assert [c.name for c in r.tool_calls] == ["get_weather", "get_weather"]
    assert [c.arguments for c in r.tool_calls] == [{"city": "Paris"}, {"city": "Oslo", "unit": "f"}]
    assert all(c.id.startswith(prefix) for c in r.tool_calls)
    t = Tool.from_function(get_weather)
    messages.append(r.message)
    for call in r.tool_calls:
        messages.append(Message.tool_result(call, t.invoke(call.arguments)))
    final = llm.complete_full(messages, tools=[t])
    assert final.finish_reason == "stop"
    assert final.text == "final: Paris: 21c | Oslo: 21f"
    assert final.tool_calls == []


def test_raw_schema_dict_tools(sim: SimServer) -> None:
    llm = LlmClient.openai("rawtools", base_url=sim.url, api_key=KEY)
    schema = {"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
    r = llm.complete_full('[[tool:lookup {"q": "x"}]]', tools=[schema], tool_choice="lookup")
    assert r.tool_calls == [ToolCall(r.tool_calls[0].id, "lookup", {"q": "x"})]
