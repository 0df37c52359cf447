"""LangChain and LlamaIndex classes over parallelrag clients and indexes.

Neither framework is a dependency of the core package. Import the submodule of the framework you
use; importing it without that framework installed raises :class:`~parallelrag.errors.ConfigError`
naming the extra to install::

    from parallelrag.adapters.langchain import (     # pip install 'parallelrag[langchain]'
        ParallelRagChatModel, ParallelRagEmbeddings, ParallelRagRetriever)
    from parallelrag.adapters.llamaindex import (    # pip install 'parallelrag[llamaindex]'
        ParallelRagEmbedding, ParallelRagLLM, ParallelRagRetriever)

The clients offer shortcuts: ``EmbeddingClient.as_langchain()`` / ``as_llamaindex()``,
``LlmClient.as_langchain()`` / ``as_llamaindex()``, ``Index.as_langchain_retriever(**kw)`` /
``as_llamaindex_retriever(**kw)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._spec import EmbedderSpec, missing_extra

if TYPE_CHECKING:
    from ..embeddings import EmbeddingClient

__all__ = ["EmbedderSpec", "llamaindex_embedding", "missing_extra"]


def llamaindex_embedding(client: EmbeddingClient, **kw: Any) -> Any:
    """A LlamaIndex ``BaseEmbedding`` over ``client`` (same as ``client.as_llamaindex()``)."""
    from .llamaindex import ParallelRagEmbedding

    return ParallelRagEmbedding(client, **kw)
