"""Hostile-user probes of the framework adapters: settings that cannot work are refused when the
adapter is built (not on the first call, after a pipeline has started), as the clients do."""

from __future__ import annotations

import math

import pytest

from parallelrag.pipeline import Index
from parallelrag.sim import SimServer

from ._helpers import llm_client


@pytest.mark.parametrize("bad", [{"max_tokens": 0}, {"max_tokens": -5},
                                 {"temperature": math.nan}, {"temperature": -1.0}])
def test_chat_models_refuse_impossible_defaults(sim: SimServer, bad: dict[str, float]) -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from parallelrag.adapters.langchain import ParallelRagChatModel
    from parallelrag.adapters.llamaindex import ParallelRagLLM

    llm = llm_client(sim)
    sim.reset_stats()
    with pytest.raises(ValueError):
        ParallelRagChatModel(client=llm, **bad)
    with pytest.raises(ValueError):
        ParallelRagLLM(client=llm, **bad)
    with pytest.raises(ValueError):
        llm.as_langchain(**bad)
    assert sim.stats()["requests"] == 0
    ok = ParallelRagLLM(client=llm, max_tokens=7, temperature=0.0)
    assert ok.metadata.num_output == 7 and ok.complete("hi").text


@pytest.mark.parametrize("bad", [{"k": 0}, {"k": -1}, {"mode": "semantic"}])
def test_retrievers_refuse_impossible_settings(sim_index: Index, bad: dict[str, object]) -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from parallelrag.adapters.langchain import ParallelRagRetriever as LcRetriever
    from parallelrag.adapters.llamaindex import ParallelRagRetriever as LiRetriever

    with pytest.raises(ValueError):
        LcRetriever(index=sim_index, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        LiRetriever(sim_index, **bad)  # type: ignore[arg-type]
    assert len(LcRetriever(index=sim_index, k=2).invoke("lighthouse")) == 2
