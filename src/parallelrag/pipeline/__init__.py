"""The main job: streaming ingest into a vector store; search; answers with citations."""

from .index import (
    DEFAULT_INDEX_DIR,
    DEFAULT_SYSTEM,
    AnswerStream,
    AsyncAnswerStream,
    Index,
    Source,
    splitter_config,
    splitter_from_config,
)
from .types import Answer, Citation, IngestProgress, IngestReport

__all__ = [
    "DEFAULT_INDEX_DIR",
    "DEFAULT_SYSTEM",
    "Answer",
    "AnswerStream",
    "AsyncAnswerStream",
    "Citation",
    "Index",
    "IngestProgress",
    "IngestReport",
    "Source",
    "splitter_config",
    "splitter_from_config",
]
