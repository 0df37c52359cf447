"""parallelrag inside LlamaIndex: an index as a retriever behind a query engine, an LlmClient as
the LLM and an EmbeddingClient as the embed model of a LlamaIndex VectorStoreIndex.

    pip install 'parallelrag[llamaindex]'
    python examples/llamaindex_interop.py

The LLM: ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``EXAMPLE_LLM``, or the simulated provider.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from _provider import SAMPLE_DOCS, embedder_name, provider, write_sample_corpus
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.query_engine import RetrieverQueryEngine

from parallelrag import EmbeddingClient, Index, LlmClient

QUESTIONS = ["How are rate limits handled?", "How does hybrid search rank hits?"]


def main() -> list[str]:
    with provider() as prov, tempfile.TemporaryDirectory() as tmp:
        llm = LlmClient.openai(os.environ.get("EXAMPLE_LLM", "gpt-4o-mini"),
                               base_url=prov.base_url, api_key=prov.api_key)
        embedder = EmbeddingClient.local(embedder_name())
        li_llm = llm.as_llamaindex(max_tokens=128)
        with Index.open(Path(tmp) / "index", embedder=embedder) as index:
            index.ingest([write_sample_corpus(Path(tmp) / "docs")])

            # a parallelrag index behind a LlamaIndex query engine
            engine = RetrieverQueryEngine.from_args(index.as_llamaindex_retriever(k=2),
                                                    llm=li_llm)
            answers = []
            for q in QUESTIONS:
                resp = engine.query(q)
                sources = [n.node.metadata.get("source") for n in resp.source_nodes]
                answers.append(str(resp))
                print(f"Q: {q}\nA: {str(resp)[:100]}\n   sources: {sources}")

            # async queries run concurrently on the same clients
            async def many() -> list[str]:
                results = await asyncio.gather(*(engine.aquery(q) for q in QUESTIONS))
                return [str(r) for r in results]

            print(f"aquery x{len(QUESTIONS)}: {len(asyncio.run(many()))} answers")

            # the parallelrag embedder as a LlamaIndex embed model
            docs = [Document(text=t, metadata={"name": n}) for n, t in SAMPLE_DOCS.items()]
            vindex = VectorStoreIndex.from_documents(docs, embed_model=embedder.as_llamaindex())
            top = vindex.as_retriever(similarity_top_k=1).retrieve("reciprocal rank fusion")
            print(f"LlamaIndex VectorStoreIndex, best match: {top[0].node.metadata['name']}")
    return answers


if __name__ == "__main__":
    main()
