"""Plain-text loaders: text, Markdown, reStructuredText (and sniffed text of unknown types)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..documents import Document
from .encoding import decode_text

__all__ = ["load_markdown", "load_rst", "load_text", "markdown_title", "rst_title"]

_TITLE_SCAN = 65536
_MD_ATX = re.compile(r"^ {0,3}#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_MD_SETEXT = re.compile(r"^ {0,3}(\S[^\n]*)\n {0,3}=+[ \t]*$", re.MULTILINE)
_MD_FRONT_TITLE = re.compile(r"\A---\n(?:.*\n)*?title:[ \t]*[\"']?(.+?)[\"']?[ \t]*\n(?:.*\n)*?---\n")
_RST_TITLE = re.compile(
    r"^(?:([=\-~^\"'`#*+<>:._])\1{2,}[ \t]*\n)?[ \t]*(\S[^\n]*?)[ \t]*\n([=\-~^\"'`#*+<>:._])\3{2,}[ \t]*$",
    re.MULTILINE,
)
_MIME_BY_SUFFIX = {
    ".md": "text/markdown", ".markdown": "text/markdown", ".mdown": "text/markdown",
    ".mkd": "text/markdown", ".rst": "text/x-rst", ".csv": "text/csv",
    ".tsv": "text/tab-separated-values",
}


def markdown_title(text: str) -> str | None:
    """Front-matter ``title:``, else the first ``# heading`` (ATX or setext level 1)."""
    head = text[:_TITLE_SCAN]
    m = _MD_FRONT_TITLE.match(head)
    if m:
        return m.group(1).strip()
    atx = _MD_ATX.search(head)
    setext = _MD_SETEXT.search(head)
    if atx and setext:
        return (atx if atx.start() < setext.start() else setext).group(1).strip()
    found = atx or setext
    return found.group(1).strip() if found else None


def rst_title(text: str) -> str | None:
    """The first section title (a line underlined, optionally overlined, with punctuation)."""
    m = _RST_TITLE.search(text[:_TITLE_SCAN])
    return m.group(2) if m else None


def _mime(path: Path) -> str:
    return _MIME_BY_SUFFIX.get(path.suffix.lower(), "text/plain")


def load_text(path: Path, data: bytes, /, **options: Any) -> list[Document]:
    """Loader for plain text (``.txt``, ``.log``, ``.csv``, ... and sniffed unknown types)."""
    return [Document(decode_text(data), metadata={"mime": _mime(path)})]


def load_markdown(path: Path, data: bytes, /, **options: Any) -> list[Document]:
    """Loader for Markdown: the text as is, the title from front matter or the first heading."""
    text = decode_text(data)
    metadata: dict[str, Any] = {"mime": "text/markdown"}
    title = markdown_title(text)
    if title:
        metadata["title"] = title
    return [Document(text, metadata=metadata)]


def load_rst(path: Path, data: bytes, /, **options: Any) -> list[Document]:
    """Loader for reStructuredText: the text as is, the title from the first section title."""
    text = decode_text(data)
    metadata: dict[str, Any] = {"mime": "text/x-rst"}
    title = rst_title(text)
    if title:
        metadata["title"] = title
    return [Document(text, metadata=metadata)]
