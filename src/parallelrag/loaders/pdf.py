"""PDF loader (needs ``pypdf``): the text of every page, pages separated by a blank line."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ..documents import Document
from ..errors import LoaderError

__all__ = ["load_pdf"]

PAGE_SEPARATOR = "\n\n"


def load_pdf(path: Path, data: bytes, /, **options: Any) -> list[Document]:
    """One document per PDF.

    ``metadata["pages"]`` is the page count and ``metadata["page_starts"]`` the character offset
    at which each page's text starts (so a chunk's offset maps to its page). Encrypted PDFs that
    do not open with an empty password, and files pypdf cannot read, raise :class:`LoaderError`.
    """
    try:
        import pypdf
    except ImportError as exc:
        raise LoaderError("pypdf not installed (pip install pypdf)") from exc
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception as exc:
                raise LoaderError(f"encrypted PDF ({type(exc).__name__})") from exc
            if not opened:
                raise LoaderError("encrypted PDF")
        pages = [page.extract_text() or "" for page in reader.pages]
        info = reader.metadata
        title = info.title if info is not None else None
    except LoaderError:
        raise
    except Exception as exc:  # pypdf raises many types for damaged files
        raise LoaderError(f"invalid PDF: {type(exc).__name__}: {exc}") from exc
    parts: list[str] = []
    starts: list[int] = []
    pos = 0
    for i, page in enumerate(pages):
        page = page.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").strip()
        if i:
            parts.append(PAGE_SEPARATOR)
            pos += len(PAGE_SEPARATOR)
        starts.append(pos)
        parts.append(page)
        pos += len(page)
    metadata: dict[str, Any] = {"mime": "application/pdf", "pages": len(pages), "page_starts": starts}
    if isinstance(title, str) and title.strip():
        metadata["title"] = title.strip()
    return [Document("".join(parts), metadata=metadata)]
