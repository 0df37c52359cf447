"""Shared helpers of the adapter tests: sim-backed clients and a small corpus."""

from __future__ import annotations

from pathlib import Path

from parallelrag import EmbeddingClient, LlmClient
from parallelrag.sim import SimServer

KEY = "sk-adapters-0123456789"

FACTS = {
    "lighthouse": "The lighthouse keeper's secret code is AZURE-PELICAN-42.",
    "volcano": "Mount Quillibrand erupted in the year 1783 according to the archive.",
    "recipe": "Grandmother's zucchini bread needs exactly seventeen walnuts.",
}


def embed_client(srv: SimServer, model: str = "emb", **kw: object) -> EmbeddingClient:
    return EmbeddingClient.openai(model, base_url=srv.url, api_key=KEY, dimensions=16, **kw)


def llm_client(srv: SimServer, model: str = "chat", flavor: str = "openai") -> LlmClient:
    """A chat client over the sim, in the OpenAI or the Anthropic wire format."""
    if flavor == "anthropic":
        return LlmClient.anthropic(model, api_key=KEY, base_url=srv.base)
    return LlmClient.openai(model, base_url=srv.url, api_key=KEY)


def write_corpus(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, fact in FACTS.items():
        (root / f"{name}.txt").write_text(f"Notes about the {name}.\n\n{fact}\n", encoding="utf-8")
    return root
