"""The main job: streaming ingest into the embedded store; search; answers with citations."""

from .index import DEFAULT_INDEX_DIR, AnswerStream, Index
from .types import Answer, Citation, IngestProgress, IngestReport

__all__ = [
    "DEFAULT_INDEX_DIR",
    "Answer",
    "AnswerStream",
    "Citation",
    "Index",
    "IngestProgress",
    "IngestReport",
]
