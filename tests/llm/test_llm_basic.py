"""LlmClient over real HTTP to the sim: both wire formats, basics, bad input, config, async
twins, sync calls from inside event loops (issue 4)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from parallelrag.errors import BadRequestError, ConfigError, RuntimeUsageError
from parallelrag.llm import LlmClient, LlmResponse, Message, Usage
from parallelrag.runtime import get_runtime
from parallelrag.sim import SimServer, count_tokens, sim_reply

KEY = "sk-test-0123456789"
FLAVORS = ["openai", "anthropic"]


def client(srv: SimServer, flavor: str, model: str = "m", **kw: object) -> LlmClient:
    if flavor == "openai":
        return LlmClient.openai(model, base_url=srv.url, api_key=KEY, **kw)  # type: ignore[arg-type]
    return LlmClient.anthropic(model, api_key=KEY, base_url=srv.base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_complete_returns_the_sim_reply(sim: SimServer, flavor: str) -> None:
    llm = client(sim, flavor, "basic-" + flavor)
    assert llm.complete("hello there") == sim_reply("basic-" + flavor, "hello there")
    assert llm.provider == flavor
    assert llm.model == "basic-" + flavor


@pytest.mark.parametrize("flavor", FLAVORS)
def test_complete_full_usage_finish_and_system(sim: SimServer, flavor: str) -> None:
    llm = client(sim, flavor, "full")
    r = llm.complete_full("what is up", system="be brief")
    assert isinstance(r, LlmResponse)
    assert r.text == sim_reply("full", "what is up")
    assert r.finish_reason == "stop"
    assert r.tool_calls == []
    assert r.model == "full"
    assert r.latency_s > 0
    # the sim counts the system prompt in prompt tokens: proves it was sent (top-level
    # `system` for Anthropic, a system message for OpenAI)
    expected_prompt = count_tokens("be brief") + count_tokens("what is up")
    ct = count_tokens(r.text)
    assert r.usage == Usage(expected_prompt, ct, expected_prompt + ct)
    assert llm.last_usage == r.usage
    assert r.raw  # the provider's JSON


@pytest.mark.parametrize("flavor", FLAVORS)
def test_max_tokens_gives_length_and_stop_gives_stop(sim: SimServer, flavor: str) -> None:
    llm = client(sim, flavor, "len")
    r = llm.complete_full("ECHO:one two three four five six", max_tokens=2)
    assert r.finish_reason == "length"
    assert r.text == "one two "[:8]
    r2 = llm.complete_full("ECHO:alpha beta STOP gamma", stop=["STOP"])
    assert r2.finish_reason == "stop"
    assert r2.text == "alpha beta "


@pytest.mark.parametrize("flavor", FLAVORS)
def test_chat_with_messages_and_dicts(sim: SimServer, flavor: str) -> None:
    llm = client(sim, flavor, "chat")
    msgs: list[Message | dict[str, Any]] = [
        Message.system("you are terse"),
        Message.user("first question"),
        Message.assistant("first answer"),
        {"role": "user", "content": "second question"},
    ]
    r = llm.chat(msgs)
    assert r.text == sim_reply("chat", "second question")


@pytest.mark.parametrize("flavor", FLAVORS)
def test_empty_prompt_is_rejected_before_any_request(sim: SimServer, flavor: str) -> None:
    llm = client(sim, flavor)
    for bad in ("", "   \n"):
        with pytest.raises(BadRequestError):
            llm.complete(bad)
    with pytest.raises(BadRequestError):
        llm.chat([])
    with pytest.raises(BadRequestError):
        llm.complete_many(["ok", ""])
    with pytest.raises(BadRequestError):
        llm.complete("x", max_tokens=0)
    assert sim.stats()["requests"] == 0


def test_config_errors_at_construction(sim: SimServer) -> None:
    with pytest.raises(ConfigError):
        LlmClient.from_url("bogus:model-x")
    with pytest.raises(ConfigError):
        LlmClient.from_url("openai:", base_url=sim.url, api_key=KEY)
    with pytest.raises(ConfigError):
        LlmClient.from_url("just-a-model")
    with pytest.raises(ConfigError):
        LlmClient.openai("", base_url=sim.url, api_key=KEY)
    with pytest.raises(ConfigError):
        LlmClient.anthropic("")
    with pytest.raises(ConfigError):  # the real endpoints need a key
        LlmClient.openai("gpt-4o-mini")
    with pytest.raises(ConfigError):
        LlmClient.anthropic("claude-x")
    with pytest.raises(ConfigError):
        LlmClient.openai("m", base_url=sim.url, api_key=KEY, no_such_limit=3)


def test_from_url_forms(sim: SimServer) -> None:
    a = LlmClient.from_url(f"openai://url-model?base_url={sim.url}&rpm=6000", api_key=KEY)
    assert a.provider == "openai" and a.model == "url-model"
    assert a.complete("hi") == sim_reply("url-model", "hi")
    b = LlmClient.from_url("anthropic:url-claude", base_url=sim.base, api_key=KEY)
    assert b.provider == "anthropic"
    assert b.complete("hi") == sim_reply("url-claude", "hi")
    c = LlmClient.from_url(f"azure://dep-1?endpoint={sim.base}&api_version=2024-10-21",
                           api_key=KEY)
    assert c.provider == "azure"
    assert c.complete("hi") == sim_reply("dep-1", "hi")


@pytest.mark.parametrize("flavor", FLAVORS)
def test_complete_many_returns_exceptions_in_place(sim: SimServer, flavor: str) -> None:
    llm = client(sim, flavor, "many-err")
    # a conversation without a user message is rejected by the sim with 400; an empty prompt is
    # rejected locally; both come back in place, in order, as exceptions
    prompts: list[object] = [
        "p0", [{"role": "assistant", "content": "no user turn"}], "p2", "", "p4",
    ]
    out = llm.complete_many(prompts, return_exceptions=True)
    assert out[0] == sim_reply("many-err", "p0")
    assert isinstance(out[1], BadRequestError) and out[1].status_code == 400
    assert out[2] == sim_reply("many-err", "p2")
    assert isinstance(out[3], BadRequestError) and out[3].status_code is None
    assert out[4] == sim_reply("many-err", "p4")
    # without return_exceptions the failure is raised (the exception, never a string)
    with pytest.raises(BadRequestError):
        llm.complete_many(["a", [{"role": "assistant", "content": "x"}], "b"])


def test_sync_calls_inside_asyncio_run_and_threads_in_a_loop(sim: SimServer) -> None:
    llm = client(sim, "openai", "in-loop")

    async def main() -> list[str]:
        direct = llm.complete("from inside asyncio.run")  # blocks this loop, must not deadlock
        in_thread = await asyncio.to_thread(llm.complete, "from a worker thread")
        streamed = "".join(llm.stream("streamed inside a loop"))
        return [direct, in_thread, streamed]

    out = asyncio.run(main())
    assert out == [
        sim_reply("in-loop", "from inside asyncio.run"),
        sim_reply("in-loop", "from a worker thread"),
        sim_reply("in-loop", "streamed inside a loop"),
    ]


def test_blocking_call_on_the_runtime_thread_raises(sim: SimServer) -> None:
    llm = client(sim, "openai")

    async def on_runtime() -> str:
        return llm.complete("x")

    with pytest.raises(RuntimeUsageError):
        get_runtime().run_sync(on_runtime())


@pytest.mark.parametrize("flavor", FLAVORS)
async def test_async_twins(sim: SimServer, flavor: str) -> None:
    llm = client(sim, flavor, "async")
    assert await llm.acomplete("a1") == sim_reply("async", "a1")
    r = await llm.acomplete_full("a2")
    assert r.text == sim_reply("async", "a2")
    r2 = await llm.achat([Message.user("a3")])
    assert r2.text == sim_reply("async", "a3")
    many = await llm.acomplete_many([f"q{i}" for i in range(20)], max_concurrency=5)
    assert many == [sim_reply("async", f"q{i}") for i in range(20)]
    parts = [d async for d in llm.astream("a4")]
    assert "".join(parts) == sim_reply("async", "a4")


def test_stats_count_calls_and_tokens(sim: SimServer) -> None:
    llm = client(sim, "openai", "stats")
    llm.complete("one")
    llm.complete_many(["two", "three"])
    st = llm.stats()
    assert st["calls"] == 2
    assert st["requests"] == 3
    assert st["completion_tokens"] > 0 and st["prompt_tokens"] > 0
    assert isinstance(st["provider"], dict)


def test_many_threads_share_one_client(sim: SimServer) -> None:
    llm = client(sim, "anthropic", "threads")
    results: dict[int, str] = {}

    def work(i: int) -> None:
        results[i] = llm.complete(f"t{i}")

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results == {i: sim_reply("threads", f"t{i}") for i in range(8)}

