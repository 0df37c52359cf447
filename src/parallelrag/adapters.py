"""Adapters so LangChain / LlamaIndex users can pass parallelrag clients where theirs go.

Neither framework is a dependency: the LlamaIndex class is built on first use, from the installed
``llama_index.core``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .embeddings import EmbeddingClient

__all__ = ["llamaindex_embedding"]

_cls: Any = None


def llamaindex_embedding(client: EmbeddingClient) -> Any:
    """A ``llama_index.core.base.embeddings.base.BaseEmbedding`` that calls ``client``."""
    global _cls
    if _cls is None:
        try:
            from llama_index.core.base.embeddings.base import BaseEmbedding
        except ImportError as exc:
            raise ConfigError(f"as_llamaindex() needs llama-index-core installed: {exc}") from None

        class ParallelRagLlamaIndexEmbedding(BaseEmbedding):  # type: ignore[misc]
            def __init__(self, client: Any, **kw: Any) -> None:
                super().__init__(model_name=client.model, **kw)
                self._client = client

            @classmethod
            def class_name(cls) -> str:
                return "ParallelRagEmbedding"

            def _get_query_embedding(self, query: str) -> list[float]:
                return self._client.embed(query).tolist()  # type: ignore[no-any-return]

            def _get_text_embedding(self, text: str) -> list[float]:
                return self._client.embed(text).tolist()  # type: ignore[no-any-return]

            def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
                return self._client.embed_many(texts).tolist()  # type: ignore[no-any-return]

            async def _aget_query_embedding(self, query: str) -> list[float]:
                return (await self._client.aembed(query)).tolist()  # type: ignore[no-any-return]

            async def _aget_text_embedding(self, text: str) -> list[float]:
                return (await self._client.aembed(text)).tolist()  # type: ignore[no-any-return]

            async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
                return (await self._client.aembed_many(texts)).tolist()  # type: ignore[no-any-return]

        _cls = ParallelRagLlamaIndexEmbedding
    return _cls(client)
