"""Where the examples find an OpenAI-compatible provider.

``OPENAI_BASE_URL`` set (with ``OPENAI_API_KEY`` where the server needs one): that server, e.g.
OpenAI, vLLM, TEI, Ollama or LM Studio. ``PARALLELRAG_SIM_URL`` set: a running parallelrag
simulator (``python -m parallelrag.sim serve``; the tests start one). Neither: a simulator
started on 127.0.0.1 for the run (deterministic replies and embeddings, no network, no key).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Provider:
    base_url: str
    api_key: str | None
    simulated: bool


@contextmanager
def provider(latency: float = 0.0) -> Iterator[Provider]:
    """The configured provider, or a simulated one (``latency`` seconds per request)."""
    url = os.environ.get("OPENAI_BASE_URL")
    if url:
        yield Provider(url, os.environ.get("OPENAI_API_KEY"), simulated=False)
        return
    sim_url = os.environ.get("PARALLELRAG_SIM_URL")
    if sim_url:
        yield Provider(sim_url, "sk-simulated", simulated=True)
        return
    from parallelrag.sim import SimConfig, SimServer

    with SimServer(SimConfig(latency=latency)) as srv:
        yield Provider(srv.url, "sk-simulated", simulated=True)


SAMPLE_DOCS = {
    "runtime.md": (
        "# The runtime\n\nparallelrag runs one background event loop for the whole process. "
        "Every sync method submits a coroutine to that loop and waits on a future, so the "
        "waiting thread does not hold the GIL and other threads keep running."
    ),
    "limits.md": (
        "# Rate limits\n\nRequests to a provider share one rate limiter per base URL and model: "
        "token buckets for requests and tokens per minute, corrected from x-ratelimit headers. "
        "429 answers are retried with full jitter and honour Retry-After."
    ),
    "search.md": (
        "# Search\n\nHybrid search fuses a vector ranking and a BM25 keyword ranking with "
        "reciprocal rank fusion. Every hit carries its source and character offsets."
    ),
    "ingest.md": (
        "# Ingest\n\nIngest loads, splits, embeds and writes documents in concurrent stages "
        "joined by bounded queues. Unchanged files are skipped on the next run."
    ),
}


def write_sample_corpus(folder: Path) -> Path:
    """A few short Markdown files about parallelrag, for examples run without a folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in SAMPLE_DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def embedder_name() -> str:
    """The local embedding model: ``EXAMPLE_EMBED`` (minilm or wordllama), default minilm."""
    return os.environ.get("EXAMPLE_EMBED", "minilm")
