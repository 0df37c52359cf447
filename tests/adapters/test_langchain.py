"""LangChain adapters used in LangChain's own flows, over the sim (issue 14): an LCEL chain with
the retriever feeding the prompt, tool calling through ``bind_tools``, streaming, embeddings."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import numpy as np
import pydantic
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnablePassthrough
from langchain_core.tools import tool

from parallelrag.adapters.langchain import (
    ParallelRagChatModel,
    ParallelRagEmbeddings,
    ParallelRagRetriever,
)
from parallelrag.pipeline import Index
from parallelrag.sim import SimServer, sim_embedding

from ._helpers import FACTS, KEY, embed_client, llm_client


# ------------------------------------------------------------------ embeddings
def test_embeddings_is_a_langchain_embeddings(sim: SimServer) -> None:
    client = embed_client(sim)
    emb = client.as_langchain()
    assert isinstance(emb, Embeddings)
    assert isinstance(emb, ParallelRagEmbeddings) and emb.client is client


def test_embeddings_send_large_batches_in_order(sim: SimServer) -> None:
    emb = ParallelRagEmbeddings(embed_client(sim))
    texts = [f"document number {i}" for i in range(600)]
    rows = emb.embed_documents(texts)
    want = np.vstack([sim_embedding("emb", t, 16) for t in texts])
    assert np.allclose(np.array(rows), want, atol=1e-6)
    # one request for all 600 texts (LangChain peers send one per 16..1000 texts)
    assert sim.stats()["by_endpoint"]["embeddings"] == 1
    assert np.allclose(emb.embed_query("document number 3"), want[3], atol=1e-6)

    async def both() -> tuple[list[list[float]], list[float]]:
        return await emb.aembed_documents(texts[:5]), await emb.aembed_query(texts[7])

    adocs, aquery = asyncio.run(both())
    assert np.allclose(np.array(adocs), want[:5], atol=1e-6)
    assert np.allclose(aquery, want[7], atol=1e-6)
    assert emb.embed_documents([]) == []


def test_embeddings_pickle_rebuilds_the_client(make_sim: Any) -> None:
    srv = make_sim(api_key=KEY)  # the rebuilt client must still authenticate
    emb = ParallelRagEmbeddings(embed_client(srv))
    blob = pickle.dumps(emb)
    copy = pickle.loads(blob)
    assert copy.client is not emb.client
    assert np.allclose(copy.embed_query("pickled"), sim_embedding("emb", "pickled", 16), atol=1e-6)
    assert "sk-" not in repr(copy) and "sk-" not in repr(copy.client)


# ------------------------------------------------------------------ retriever + LCEL chain
def _format(docs: list[Document]) -> str:
    return "\n".join(d.page_content.strip() for d in docs)


def test_lcel_chain_with_retriever_and_chat_model(sim: SimServer, sim_index: Index) -> None:
    retriever = sim_index.as_langchain_retriever(k=1, mode="keyword")
    assert isinstance(retriever, BaseRetriever) and isinstance(retriever, ParallelRagRetriever)
    chat = llm_client(sim).as_langchain()
    assert isinstance(chat, BaseChatModel) and isinstance(chat, ParallelRagChatModel)
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Answer from the context only."),
        # ECHO: makes the sim answer with the rest of the user message, so the answer shows
        # exactly what the server received
        ("human", "ECHO:Context: {context}\nQuestion: {question}"),
    ])
    chain = (
        {"context": retriever | _format, "question": RunnablePassthrough()}
        | prompt | chat | StrOutputParser()
    )
    out = chain.invoke("What is the secret code of the lighthouse keeper?")
    assert out.startswith("Context: ")
    assert FACTS["lighthouse"] in out
    assert FACTS["volcano"] not in out and FACTS["recipe"] not in out
    assert out.endswith("Question: What is the secret code of the lighthouse keeper?")

    outs = chain.batch(["When did Mount Quillibrand erupt?", "How many walnuts in zucchini bread?"])
    assert FACTS["volcano"] in outs[0] and FACTS["recipe"] in outs[1]
    aout = asyncio.run(chain.ainvoke("zucchini bread walnuts"))
    assert FACTS["recipe"] in aout
    # chunks streamed through the parser, in order
    pieces = list(chain.stream("lighthouse keeper code"))
    assert len(pieces) > 1 and FACTS["lighthouse"] in "".join(pieces)


def test_retriever_documents_k_mode_where(sim_index: Index) -> None:
    r = ParallelRagRetriever(index=sim_index, k=3, mode="keyword")
    docs = r.invoke("zucchini walnuts")
    assert docs and FACTS["recipe"] in docs[0].page_content
    top = docs[0].metadata
    assert top["source"].endswith("recipe.txt")
    assert {"score", "chunk_id", "start", "end", "chunk_index"} <= set(top)
    assert docs[0].id == str(top["chunk_id"])
    only = ParallelRagRetriever(index=sim_index, k=3, where={"source": "*volcano*"})
    got = only.invoke("zucchini walnuts lighthouse")
    assert got and all(d.metadata["source"].endswith("volcano.txt") for d in got)
    adocs = asyncio.run(r.ainvoke("lighthouse keeper"))
    assert FACTS["lighthouse"] in adocs[0].page_content
    assert len(sim_index.as_langchain_retriever(k=1, mode="keyword").invoke("volcano")) == 1


# ------------------------------------------------------------------ chat model
def test_chat_model_messages_and_usage(sim: SimServer) -> None:
    chat = ParallelRagChatModel(client=llm_client(sim), max_tokens=64)
    msg = chat.invoke([SystemMessage("be brief"), HumanMessage("ECHO:hello there")])
    assert isinstance(msg, AIMessage) and msg.content == "hello there"
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] > 0
    assert msg.response_metadata["finish_reason"] == "stop"
    amsg = asyncio.run(chat.ainvoke("ECHO:async hello"))
    assert amsg.content == "async hello"
    # stop sequences reach the server
    assert chat.invoke("ECHO:one two three", stop=["three"]).content == "one two "


@tool
def get_weather(city: str) -> str:
    """Current weather of a city."""
    return f"sunny in {city}"


class Lookup(pydantic.BaseModel):
    """Look a term up in the glossary."""

    term: str


@pytest.mark.parametrize("flavor", ["openai", "anthropic"])
def test_bind_tools_round_trip(sim: SimServer, flavor: str) -> None:
    chat = ParallelRagChatModel(client=llm_client(sim, flavor=flavor))
    bound = chat.bind_tools([get_weather, Lookup])
    question = HumanMessage('What is the weather? [[tool:get_weather {"city": "Paris"}]]')
    ai = bound.invoke([question])
    assert isinstance(ai, AIMessage)
    assert [(c["name"], c["args"]) for c in ai.tool_calls] == [("get_weather", {"city": "Paris"})]
    call = ai.tool_calls[0]
    assert call["id"]
    result = get_weather.invoke(call["args"])
    final = bound.invoke([question, ai, ToolMessage(result, tool_call_id=call["id"])])
    assert final.content == "final: sunny in Paris" and not final.tool_calls

    forced = chat.bind_tools([Lookup], tool_choice="any")
    ai2 = forced.invoke('[[tool:Lookup {"term": "RRF"}]]')
    assert ai2.tool_calls[0]["name"] == "Lookup" and ai2.tool_calls[0]["args"] == {"term": "RRF"}

    # tool calls also arrive when streaming: merged chunks give the parsed call
    chunks = list(bound.stream([question]))
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]


def test_with_structured_output(sim: SimServer) -> None:
    chat = ParallelRagChatModel(client=llm_client(sim))
    structured = chat.with_structured_output(Lookup)
    out = structured.invoke('[[tool:Lookup {"term": "BM25"}]]')
    assert out == Lookup(term="BM25")


@pytest.mark.parametrize("flavor", ["openai", "anthropic"])
def test_streaming_sync_and_async(sim: SimServer, flavor: str) -> None:
    chat = ParallelRagChatModel(client=llm_client(sim, flavor=flavor))
    text = "streamed words arrive one after another here"
    chunks = list(chat.stream("ECHO:" + text))
    deltas = [str(c.content) for c in chunks if c.content]
    assert len(deltas) > 1 and "".join(deltas) == text
    merged = chunks[0]
    for c in chunks[1:]:
        merged = merged + c
    assert merged.content == text
    assert merged.usage_metadata is not None and merged.usage_metadata["output_tokens"] > 0
    assert merged.response_metadata["finish_reason"] == "stop"

    async def collect() -> list[str]:
        return [str(c.content) async for c in chat.astream("ECHO:" + text) if c.content]

    adeltas = asyncio.run(collect())
    assert len(adeltas) > 1 and "".join(adeltas) == text
    # leaving early closes the stream; the client stays usable
    for _ in chat.stream("ECHO:" + text):
        break
    assert chat.invoke("ECHO:after").content == "after"


def test_bad_content_block_is_an_error(sim: SimServer) -> None:
    from parallelrag.errors import BadRequestError

    chat = ParallelRagChatModel(client=llm_client(sim))
    with pytest.raises(BadRequestError, match="image_url"):
        chat.invoke([HumanMessage(content=[{"type": "image_url", "image_url": {"url": "x"}}])])


def test_embeddings_use_the_query_and_document_prompts(sim: SimServer) -> None:
    # an asymmetric model (e5): LangChain's embed_query is the query side, embed_documents the
    # document side (the sim's vector is a function of the exact text it received)
    emb = ParallelRagEmbeddings(embed_client(sim, query_prompt="query: ",
                                             document_prompt="passage: "))
    assert np.allclose(emb.embed_query("q"), sim_embedding("emb", "query: q", 16), atol=1e-6)
    assert np.allclose(asyncio.run(emb.aembed_query("q")), sim_embedding("emb", "query: q", 16),
                       atol=1e-6)
    assert np.allclose(emb.embed_documents(["d"])[0], sim_embedding("emb", "passage: d", 16),
                       atol=1e-6)
