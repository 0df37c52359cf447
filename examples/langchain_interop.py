"""parallelrag inside LangChain: an index as a retriever, an LlmClient as the chat model and an
EmbeddingClient as LangChain embeddings, in an LCEL chain run for several questions at once.

    pip install 'parallelrag[langchain]'
    python examples/langchain_interop.py

LangChain's ``batch`` runs its inputs in threads; each blocking parallelrag call waits without
the GIL on parallelrag's runtime loop, where the shared rate and concurrency limits apply.
The LLM: ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``EXAMPLE_LLM``, or the simulated provider.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from _provider import embedder_name, provider, write_sample_corpus
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from parallelrag import EmbeddingClient, Index, LlmClient

QUESTIONS = ["How are rate limits handled?", "How does hybrid search rank hits?",
             "What does ingest skip?"]


def _format(docs: list[Any]) -> str:
    return "\n\n".join(f"[{i}] ({d.metadata['source']}) {d.page_content}"
                       for i, d in enumerate(docs, 1))


def main() -> list[str]:
    with provider() as prov, tempfile.TemporaryDirectory() as tmp:
        llm = LlmClient.openai(os.environ.get("EXAMPLE_LLM", "gpt-4o-mini"),
                               base_url=prov.base_url, api_key=prov.api_key)
        embedder = EmbeddingClient.local(embedder_name())
        with Index.open(Path(tmp) / "index", embedder=embedder) as index:
            index.ingest([write_sample_corpus(Path(tmp) / "docs")])

            retriever = index.as_langchain_retriever(k=2)
            prompt = ChatPromptTemplate.from_messages([
                ("system", "Answer from these sources, citing [n]:\n\n{context}"),
                ("human", "{question}"),
            ])
            chain = ({"context": retriever | _format, "question": RunnablePassthrough()}
                     | prompt | llm.as_langchain(max_tokens=128) | StrOutputParser())

            answers: list[str] = chain.batch(QUESTIONS)  # several questions at once
            for q, a in zip(QUESTIONS, answers, strict=True):
                print(f"Q: {q}\nA: {a[:100]}")
            print("stream: ", end="")
            for delta in chain.stream(QUESTIONS[0]):
                print(delta, end="", flush=True)
            print()

            # the same embedder inside a LangChain vector store
            store = InMemoryVectorStore(embedding=embedder.as_langchain())
            store.add_texts(["token buckets limit requests", "BM25 ranks keywords"])
            best = store.similarity_search("rate limiting", k=1)[0].page_content
            print(f"LangChain vector store, best match: {best}")
    return answers


if __name__ == "__main__":
    main()
