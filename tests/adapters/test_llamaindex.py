"""LlamaIndex adapters used in LlamaIndex's own flows (issue 14): a ``VectorStoreIndex`` built with
the embedding adapter and queried with the LLM adapter, ``IngestionPipeline(num_workers=2)``
(the embedding pickles into worker processes), the LLM's chat / complete / stream / async / tool
calling against the sim, and the retriever over ``Index.search``."""

from __future__ import annotations

import asyncio
import copy
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.core import Document, PromptTemplate, SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.llms import LLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore
from llama_index.core.tools import FunctionTool

from parallelrag import EmbeddingClient
from parallelrag.adapters.llamaindex import (
    ParallelRagEmbedding,
    ParallelRagLLM,
    ParallelRagRetriever,
)
from parallelrag.errors import ConfigError
from parallelrag.pipeline import Index
from parallelrag.sim import SimServer, sim_embedding

from ._helpers import FACTS, KEY, embed_client, llm_client

# the sim answers "ECHO:<text>" with <text>: the answer shows what the server received
ECHO_QA = PromptTemplate("ECHO:Context:\n{context_str}\nQuestion: {query_str}")


# ------------------------------------------------------------------ embedding
def test_embedding_is_a_base_embedding_with_large_batches(sim: SimServer) -> None:
    client = embed_client(sim)
    emb = client.as_llamaindex()
    assert isinstance(emb, BaseEmbedding) and isinstance(emb, ParallelRagEmbedding)
    assert emb.embed_batch_size >= 512  # LlamaIndex's default of 10 sent 50 requests for 500
    texts = [f"node text {i}" for i in range(500)]
    rows = emb.get_text_embedding_batch(texts)
    want = np.vstack([sim_embedding("emb", t, 16) for t in texts])
    assert np.allclose(np.array(rows), want, atol=1e-6)
    assert sim.stats()["by_endpoint"]["embeddings"] == 1  # what the server saw: one request
    assert np.allclose(emb.get_query_embedding("q"), sim_embedding("emb", "q", 16), atol=1e-6)
    arows = asyncio.run(emb.aget_text_embedding_batch(texts[:3]))
    assert np.allclose(np.array(arows), want[:3], atol=1e-6)
    assert np.allclose(asyncio.run(emb.aget_query_embedding("q")),
                       sim_embedding("emb", "q", 16), atol=1e-6)
    assert ParallelRagEmbedding(client, embed_batch_size=64).embed_batch_size == 64


def test_embedding_pickles_as_a_spec_with_its_key(make_sim: Any) -> None:
    srv = make_sim(api_key=KEY)  # the rebuilt client must authenticate
    emb = ParallelRagEmbedding(embed_client(srv), embed_batch_size=100)
    clone = pickle.loads(pickle.dumps(emb))
    assert clone.embed_batch_size == 100 and clone.model_name == emb.model_name
    assert clone.client is not emb.client
    assert np.allclose(clone.get_text_embedding("hello"), sim_embedding("emb", "hello", 16),
                       atol=1e-6)
    assert KEY not in repr(clone) and KEY not in repr(clone._spec)
    assert copy.deepcopy(emb).client is emb.client  # copies share the live client


def test_embedding_over_a_client_without_spec_says_why_it_cannot_pickle(sim: SimServer) -> None:
    client = embed_client(sim)
    emb = ParallelRagEmbedding(client)
    emb._spec = None  # as for a client over an in-process function
    with pytest.raises(ConfigError, match="cannot be rebuilt in another process"):
        pickle.dumps(emb)


def test_ingestion_pipeline_with_two_worker_processes(
    make_sim: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LlamaIndex's SentenceSplitter re-loads its tiktoken encoding by name in each spawned
    # worker; offline, that needs the copy LlamaIndex ships (a worker that fails to unpickle
    # its task exits, and multiprocessing.Pool then waits for ever)
    import llama_index.core

    static = Path(llama_index.core.__file__).parent / "_static" / "tiktoken_cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(static))
    srv = make_sim(api_key=KEY)
    client = embed_client(srv)
    docs = [Document(text=f"Document {i}. " + "It has a few sentences of text. " * 30,
                     metadata={"n": i}) for i in range(8)]
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=128, chunk_overlap=0),
                         ParallelRagEmbedding(client)],
    )
    nodes = pipeline.run(documents=docs, num_workers=2)
    assert len(nodes) > 8
    for node in nodes:
        text = node.get_content(metadata_mode=MetadataMode.EMBED)
        assert node.embedding is not None
        assert np.allclose(node.embedding, sim_embedding("emb", text, 16), atol=1e-6)
    assert client.stats()["calls"] == 0  # the embedding ran in the worker processes
    assert srv.stats()["by_endpoint"]["embeddings"] >= 2  # one batch per worker at least


# ------------------------------------------------------------------ VectorStoreIndex + LLM
@pytest.fixture(scope="module")
def minilm() -> Iterator[EmbeddingClient]:
    yield EmbeddingClient.local("minilm")


def _docs(corpus: Path) -> list[Document]:
    return SimpleDirectoryReader(str(corpus)).load_data()


def test_vector_store_index_with_embedding_and_llm(
    sim: SimServer, corpus: Path, minilm: EmbeddingClient
) -> None:
    index = VectorStoreIndex.from_documents(_docs(corpus), embed_model=minilm.as_llamaindex())
    llm = llm_client(sim).as_llamaindex()
    assert isinstance(llm, LLM) and isinstance(llm, ParallelRagLLM)
    engine = index.as_query_engine(llm=llm, similarity_top_k=1, text_qa_template=ECHO_QA)
    resp = engine.query("What is the lighthouse keeper's secret code?")
    text = str(resp)
    assert FACTS["lighthouse"] in text and FACTS["volcano"] not in text
    assert text.rstrip().endswith("Question: What is the lighthouse keeper's secret code?")
    assert resp.source_nodes[0].node.metadata["file_name"] == "lighthouse.txt"

    aresp = asyncio.run(engine.aquery("In which year did Mount Quillibrand erupt?"))
    assert FACTS["volcano"] in str(aresp)

    streaming = index.as_query_engine(llm=llm, similarity_top_k=1, text_qa_template=ECHO_QA,
                                      streaming=True)
    sresp = streaming.query("How many walnuts go into the zucchini bread?")
    pieces = list(sresp.response_gen)  # type: ignore[union-attr]
    assert len(pieces) > 1 and FACTS["recipe"] in "".join(pieces)


# ------------------------------------------------------------------ LLM
def test_llm_chat_complete_stream_and_async(sim: SimServer) -> None:
    llm = ParallelRagLLM(client=llm_client(sim), max_tokens=64)
    assert llm.metadata.is_chat_model and llm.metadata.model_name == "chat"
    assert llm.complete("ECHO:plain completion").text == "plain completion"
    msgs = [ChatMessage(role=MessageRole.SYSTEM, content="be brief"),
            ChatMessage(role=MessageRole.USER, content="ECHO:chat reply")]
    r = llm.chat(msgs)
    assert r.message.role == MessageRole.ASSISTANT and r.message.content == "chat reply"
    assert r.additional_kwargs["completion_tokens"] > 0
    text = "streamed words one after another"
    deltas = [c.delta for c in llm.stream_complete("ECHO:" + text)]
    assert len(deltas) > 1 and "".join(d or "" for d in deltas) == text
    chunks = list(llm.stream_chat([ChatMessage(role=MessageRole.USER, content="ECHO:" + text)]))
    assert len(chunks) > 1 and chunks[-1].message.content == text

    async def run() -> tuple[str, str, str, str]:
        a = await llm.acomplete("ECHO:async completion")
        b = await llm.achat([ChatMessage(role=MessageRole.USER, content="ECHO:async chat")])
        c = "".join([x.delta or "" async for x in await llm.astream_complete("ECHO:" + text)])
        d = [x async for x in await llm.astream_chat(
            [ChatMessage(role=MessageRole.USER, content="ECHO:" + text)])]
        return a.text, str(b.message.content), c, str(d[-1].message.content)

    assert asyncio.run(run()) == ("async completion", "async chat", text, text)


def get_weather(city: str) -> str:
    """Current weather of a city."""
    return f"sunny in {city}"


def test_llm_tool_calling(sim: SimServer) -> None:
    llm = ParallelRagLLM(client=llm_client(sim))
    weather = FunctionTool.from_defaults(fn=get_weather)
    ask = 'Weather? [[tool:get_weather {"city": "Oslo"}]]'
    resp = llm.chat_with_tools([weather], user_msg=ask)
    calls = llm.get_tool_calls_from_response(resp)
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("get_weather", {"city": "Oslo"})]
    # the tool result goes back as a tool message; the sim answers "final: <results>"
    history = [ChatMessage(role=MessageRole.USER, content=ask), resp.message,
               ChatMessage(role=MessageRole.TOOL, content=get_weather(**calls[0].tool_kwargs),
                           additional_kwargs={"tool_call_id": calls[0].tool_id})]
    assert llm.chat(history).message.content == "final: sunny in Oslo"
    out = llm.predict_and_call([weather], user_msg=ask)
    assert "sunny in Oslo" in str(out)
    with pytest.raises(Exception, match="tool call"):
        llm.get_tool_calls_from_response(llm.chat_with_tools([weather], user_msg="ECHO:no call"))


# ------------------------------------------------------------------ retriever
def test_retriever_over_index_search(sim: SimServer, sim_index: Index) -> None:
    r = sim_index.as_llamaindex_retriever(k=2, mode="keyword")
    assert isinstance(r, BaseRetriever) and isinstance(r, ParallelRagRetriever)
    got = r.retrieve("zucchini bread walnuts")
    assert got and isinstance(got[0], NodeWithScore)
    top = got[0]
    assert FACTS["recipe"] in top.node.get_content()
    assert top.node.metadata["source"].endswith("recipe.txt") and top.score is not None
    assert top.node.node_id == str(top.node.metadata["chunk_id"])
    only = ParallelRagRetriever(sim_index, k=3, where={"source": "*volcano*"})
    assert all(n.node.metadata["source"].endswith("volcano.txt")
               for n in only.retrieve("walnuts lighthouse volcano"))
    agot = asyncio.run(r.aretrieve("lighthouse keeper"))
    assert FACTS["lighthouse"] in agot[0].node.get_content()
    # in a LlamaIndex query engine, with the LLM adapter
    engine = RetrieverQueryEngine.from_args(
        ParallelRagRetriever(sim_index, k=1, mode="keyword"),
        llm=ParallelRagLLM(client=llm_client(sim)),
        text_qa_template=ECHO_QA,
    )
    assert FACTS["volcano"] in str(engine.query("When did Mount Quillibrand erupt?"))
    with pytest.raises(ConfigError):
        ParallelRagRetriever(sim_index, mode="semantic")


def test_function_agent_calls_a_tool(sim: SimServer) -> None:
    from llama_index.core.agent.workflow import FunctionAgent

    agent = FunctionAgent(tools=[get_weather], llm=llm_client(sim).as_llamaindex())

    async def run() -> Any:
        return await agent.run(user_msg='Weather? [[tool:get_weather {"city": "Oslo"}]]')

    result = asyncio.run(run())
    assert [t.tool_name for t in result.tool_calls] == ["get_weather"]
    assert str(result) == "final: sunny in Oslo"  # the sim's answer to the tool's result


def test_embedding_uses_the_query_and_document_prompts(sim: SimServer) -> None:
    # an asymmetric model (e5): LlamaIndex's query embedding is the query side, text
    # embeddings the document side (the sim's vector is a function of the text it received)
    emb = embed_client(sim, query_prompt="query: ", document_prompt="passage: ").as_llamaindex()
    assert np.allclose(emb.get_query_embedding("q"), sim_embedding("emb", "query: q", 16),
                       atol=1e-6)
    assert np.allclose(asyncio.run(emb.aget_query_embedding("q")),
                       sim_embedding("emb", "query: q", 16), atol=1e-6)
    assert np.allclose(emb.get_text_embedding("d"), sim_embedding("emb", "passage: d", 16),
                       atol=1e-6)
