"""Timeouts over real sockets: the sync facade raises what the async API raises; a read timeout
is retried at most twice; a few timeouts among many successes leave the shared limit alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from servers import StallServer

from parallelrag.errors import ProviderTimeoutError
from parallelrag.llm import LlmClient
from parallelrag.resilience import reset_shared


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    reset_shared()
    yield
    reset_shared()


@pytest.fixture
def silent() -> Iterator[StallServer]:
    srv = StallServer(silent=True).start()
    yield srv
    srv.stop()


@pytest.fixture
def stalling() -> Iterator[StallServer]:
    srv = StallServer().start()
    yield srv
    srv.stop()


def test_sync_timeout_raises_exactly_what_async_raises(silent: StallServer) -> None:
    llm = LlmClient.openai("m", base_url=silent.url, api_key="sk-test", timeout=0.3,
                           max_retries=1, base_delay_s=0.01)
    with pytest.raises(ProviderTimeoutError) as async_info:
        asyncio.run(llm.acomplete("hello"))
    with pytest.raises(ProviderTimeoutError) as sync_info:
        llm.complete("hello")
    a, s = async_info.value, sync_info.value
    assert type(s) is type(a)
    assert s.provider == a.provider and s.provider is not None
    assert str(s) == str(a)
    assert "gave up after 2 attempts" in str(s)
    assert "within None s" not in str(s)


def test_a_silent_server_sees_at_most_three_posts_per_call(silent: StallServer) -> None:
    llm = LlmClient.openai("m", base_url=silent.url, api_key="sk-test", timeout=0.3,
                           base_delay_s=0.01)
    before = llm.stats()["provider"]["concurrency_limit"]
    with pytest.raises(ProviderTimeoutError) as info:
        llm.complete("hello")
    assert silent.posts == 3, silent.posts  # the call and two retries
    assert "gave up after 3 attempts" in str(info.value)
    # one lone call timing out is not congestion: the shared limit stays where it was
    assert llm.stats()["provider"]["concurrency_limit"] == before


def test_three_timeouts_among_100_successes_keep_the_shared_limit(
    stalling: StallServer,
) -> None:
    llm = LlmClient.openai("m", base_url=stalling.url, api_key="sk-test", timeout=0.5,
                           base_delay_s=0.01)

    async def main() -> list[object]:
        prompts = [("STALL " if i % 33 == 5 else "") + f"prompt {i}" for i in range(100)]
        return await asyncio.gather(*(llm.acomplete(p) for p in prompts),
                                    return_exceptions=True)

    outs = asyncio.run(main())
    timeouts = [o for o in outs if isinstance(o, ProviderTimeoutError)]
    assert len(timeouts) == 3, [o for o in outs if isinstance(o, BaseException)][:3]
    assert sum(o == "ok" for o in outs) == 97
    provider = llm.stats()["provider"]
    # a halving at most (timeouts treated as overloads cut it once per retry round)
    assert provider["concurrency_limit"] >= 16, provider
    assert stalling.stalled == 9  # 3 calls x (1 + 2 retries)
