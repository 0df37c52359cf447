"""A workflow whose tools call the blocking (sync) clients: index search, embeddings and a
nested LLM call, from inside an agent running on parallelrag's event loop.

    python examples/workflow_tools.py

Sync tools run in worker threads, so a tool may block on any parallelrag call without
deadlocking the loop the agent runs on. With the simulated provider (no ``OPENAI_BASE_URL``),
the question carries ``[[tool:NAME {json}]]`` directives that make the simulated model call the
tools; a real model decides for itself.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from _provider import embedder_name, provider, write_sample_corpus

from parallelrag import EmbeddingClient, Index, LlmClient
from parallelrag.tools import tool
from parallelrag.workflow import Node, Workflow


def main() -> dict[str, str]:
    with provider() as prov, tempfile.TemporaryDirectory() as tmp:
        llm = LlmClient.openai(os.environ.get("EXAMPLE_LLM", "gpt-4o-mini"),
                               base_url=prov.base_url, api_key=prov.api_key)
        embedder = EmbeddingClient.local(embedder_name())
        with Index.open(Path(tmp) / "index", embedder=embedder) as index:
            index.ingest([write_sample_corpus(Path(tmp) / "docs")])

            @tool
            def search_docs(query: str, k: int = 2) -> list[str]:
                """Search the documentation.

                Args:
                    query: what to look for.
                    k: how many passages to return.
                """
                return [f"{h.source}: {h.text[:80]}" for h in index.search(query, k=k)]

            @tool
            def similarity(a: str, b: str) -> float:
                """Cosine similarity of two texts (local embedding model)."""
                va, vb = embedder.embed_many([a, b])
                return float(np.dot(va, vb) / (np.linalg.norm(va) * np.linalg.norm(vb)))

            @tool
            def summarize(text: str) -> str:
                """One-line summary of a text, written by the LLM (a nested blocking call)."""
                return str(llm.complete(f"Summarize in one line: {text}", max_tokens=40))

            question = "How are rate limits handled, and how close are 'rate limit' and '429'?"
            if prov.simulated:
                question += (' [[tool:search_docs {"query": "rate limits 429", "k": 2}]]'
                             ' [[tool:similarity {"a": "rate limit", "b": "429"}]]'
                             ' [[tool:summarize {"text": "token buckets and retries"}]]')

            wf = Workflow("docs-research")
            researcher = wf.add(Node.agent("researcher", prompt="Research: {input}", llm=llm,
                                           tools=[search_docs, similarity, summarize]))
            writer = wf.add(Node.agent("writer", prompt="Answer briefly from: {researcher}",
                                       llm=llm))
            wf.connect(researcher, writer)
            result = wf.run(input=question)
            result.raise_for_errors()

    calls = [ev for ev in result.trace if ev.kind == "tool_call"]
    for ev in calls:
        print(f"tool {ev.data['tool']} ({'ok' if ev.data['ok'] else 'failed'}): "
              f"{str(ev.data['result'])[:100]}")
    print(f"researcher: {str(result.outputs['researcher'])[:300]}")
    print(f"writer: {str(result.outputs['writer'])[:200]}")
    print(f"tokens: {result.usage.total_tokens}, wall {result.wall_s:.2f} s")
    return {k: str(v) for k, v in result.outputs.items()}


if __name__ == "__main__":
    main()
