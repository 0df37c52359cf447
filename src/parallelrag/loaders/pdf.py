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
    at which each page's text starts (so a chunk's offset maps to its page). The PDF's outline
    (bookmarks), where it has one, becomes ``Document.outline``: each entry at the start of the
    page it points to, nesting depth as level. Encrypted PDFs that do not open with an empty
    password, and files pypdf cannot read, raise :class:`LoaderError`.
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
        marks = _outline_pages(reader)
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
    outline = sorted(((starts[p], level, text) for p, level, text in marks
                      if 0 <= p < len(starts)), key=lambda e: e[0])
    return [Document("".join(parts), metadata=metadata, outline=outline)]


def _outline_pages(reader: Any) -> list[tuple[int, int, str]]:
    """``(page index, level, title)`` of the PDF's bookmarks, in outline order; ``[]`` when it
    has none or they cannot be read (a broken outline must not lose the text)."""
    out: list[tuple[int, int, str]] = []

    def walk(items: Any, level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            title = getattr(item, "title", None)
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # destinations pypdf cannot resolve
                continue
            if isinstance(title, str) and title.strip() and page is not None and page >= 0:
                out.append((int(page), min(level, 6), " ".join(title.split())))

    try:
        walk(reader.outline, 1)
    except Exception:  # pypdf raises many types for damaged outlines
        return []
    return out
