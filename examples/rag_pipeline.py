"""The whole RAG pipeline, in parallel: ingest a folder, answer many questions at once, stream
one answer with its numbered sources.

    python examples/rag_pipeline.py [FOLDER]

Embeddings come from the local model (offline); answers from an OpenAI-compatible LLM:
``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` and ``EXAMPLE_LLM`` (default gpt-4o-mini), or, with no
``OPENAI_BASE_URL``, the simulated provider started for the run. Without a FOLDER, a few sample
files are written to a temporary folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _provider import embedder_name, provider, write_sample_corpus

from parallelrag import EmbeddingClient, Index, LlmClient

QUESTIONS = [
    "How does a sync call wait without holding the GIL?",
    "What happens when the provider answers 429?",
    "How does hybrid search rank hits?",
    "Which files does a second ingest skip?",
]


def main(folder: str | None = None) -> None:
    with provider() as prov, tempfile.TemporaryDirectory() as tmp:
        corpus = Path(folder) if folder else write_sample_corpus(Path(tmp) / "docs")
        llm = LlmClient.openai(os.environ.get("EXAMPLE_LLM", "gpt-4o-mini"),
                               base_url=prov.base_url, api_key=prov.api_key)
        embedder = EmbeddingClient.local(embedder_name())

        with Index.open(Path(tmp) / "index", embedder=embedder) as index:
            # 1. ingest: load, split, embed and write in concurrent stages
            report = index.ingest([corpus])
            print(f"ingest: {report.added} documents, {report.chunks} chunks "
                  f"in {report.wall_s:.2f} s")

            # 2. many questions at once: retrieval and LLM calls run concurrently
            t0 = time.perf_counter()
            answers = index.answer_many(QUESTIONS, llm=llm, k=3)
            print(f"answer_many: {len(answers)} answers in {time.perf_counter() - t0:.2f} s")
            for ans in answers:
                first = ans.text.strip().splitlines()[0] if ans.text.strip() else ""
                print(f"  Q: {ans.question}\n  A: {first[:100]}")
                print(f"     sources: {', '.join(h.source for h in ans.hits)}")

            # 3. one answer streamed as it is written, then its numbered sources
            print(f"\nstreaming: {QUESTIONS[0]}")
            stream = index.stream_answer(QUESTIONS[0], llm=llm, k=3)
            for delta in stream:
                print(delta, end="", flush=True)
            print()
            for i, hit in enumerate(stream.hits, 1):
                print(f"  [{i}] {hit.source} (chars {hit.start}-{hit.end})")
        if prov.simulated:
            print("(answers from the simulated provider: set OPENAI_BASE_URL for a real LLM)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
