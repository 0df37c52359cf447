"""parallelrag: retrieval-augmented generation at the speed the hardware and providers allow.

Public names are imported lazily so that ``import parallelrag`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AuthenticationError,
    BadRequestError,
    BatchError,
    CircuitOpenError,
    ConfigError,
    LoaderError,
    ParallelRagError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    ResponseError,
    ResponseTooLargeError,
    RuntimeShutdownError,
    RuntimeUsageError,
    ServerError,
    StoreError,
    TLSVerificationError,
    WorkflowError,
)

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "EmbeddingClient": "parallelrag.embeddings",
    "BatchResult": "parallelrag.embeddings",
    "BatchStats": "parallelrag.embeddings",
    "EmbeddingCache": "parallelrag.cache",
    "Document": "parallelrag.documents",
    "Chunk": "parallelrag.documents",
    "Secret": "parallelrag.config",
    "Timeouts": "parallelrag.config",
    "LlmClient": "parallelrag.llm",
    "LlmResponse": "parallelrag.llm",
    "Message": "parallelrag.llm",
    "ToolCall": "parallelrag.llm",
    "Usage": "parallelrag.llm",
    "tool": "parallelrag.tools",
    "Tool": "parallelrag.tools",
    "CharacterSplitter": "parallelrag.splitters",
    "TokenSplitter": "parallelrag.splitters",
    "SentenceSplitter": "parallelrag.splitters",
    "RecursiveSplitter": "parallelrag.splitters",
    "MarkdownSplitter": "parallelrag.splitters",
    "Index": "parallelrag.pipeline",
    "IngestReport": "parallelrag.pipeline",
    "Hit": "parallelrag.store",
    "Answer": "parallelrag.pipeline",
    "Workflow": "parallelrag.workflow",
    "Node": "parallelrag.workflow",
    "WorkflowResult": "parallelrag.workflow",
}

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BatchError",
    "CircuitOpenError",
    "ConfigError",
    "LoaderError",
    "ParallelRagError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeoutError",
    "QuotaExceededError",
    "RateLimitError",
    "ResponseError",
    "ResponseTooLargeError",
    "RuntimeShutdownError",
    "RuntimeUsageError",
    "ServerError",
    "StoreError",
    "TLSVerificationError",
    "WorkflowError",
    "__version__",
    *_LAZY,
]

if TYPE_CHECKING:
    from .cache import EmbeddingCache as EmbeddingCache
    from .config import Secret as Secret
    from .config import Timeouts as Timeouts
    from .documents import Chunk as Chunk
    from .documents import Document as Document
    from .embeddings import BatchResult as BatchResult
    from .embeddings import BatchStats as BatchStats
    from .embeddings import EmbeddingClient as EmbeddingClient


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'parallelrag' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
