"""The context a chunk is embedded and keyword-indexed with: its document's title and the heading
path it sits under.

A 128-token chunk of a reference page often never names its page's subject ("Return the time
of last modification of path" says nothing about files); prefixing the title and the headings
above it when embedding and keyword-indexing lets a question find it by the words of its page
and section. ``Chunk.text`` and its offsets are not changed: the store keeps the context beside
the text (``Chunk.context``).

Headings come from ``Document.outline`` (``(char offset, level, text)``, filled by the HTML and
PDF loaders); a document without one whose text has Markdown ATX headings (``## Install``)
outside code fences gets its outline from them here (:func:`markdown_outline`).
"""

from __future__ import annotations

import bisect
import re

from ..documents import Chunk, Document

__all__ = ["MAX_CONTEXT_CHARS", "chunk_context", "heading_path", "markdown_outline"]

#: Longest context, in characters: the context shares the embedder's input window (MiniLM reads
#: 256 word pieces) with the chunk, so it is kept to a line.
MAX_CONTEXT_CHARS = 200
_MAX_HEADING_CHARS = 100
_SEP = " > "
_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def markdown_outline(text: str) -> list[tuple[int, int, str]]:
    """``(offset, level, text)`` of the ATX headings of a Markdown text, code fences skipped."""
    out: list[tuple[int, int, str]] = []
    if "#" not in text:
        return out
    fence: str | None = None
    pos = 0
    for line in text.splitlines(keepends=True):
        f = _FENCE.match(line)
        if f is not None:
            mark = f.group(1)
            if fence is None:
                fence = mark[0] * len(mark)
            elif mark.startswith(fence):
                fence = None
        elif fence is None and line.lstrip(" ").startswith("#"):
            m = _ATX.match(line.rstrip("\r\n"))
            if m is not None:
                out.append((pos, len(m.group(1)), m.group(2).strip()))
        pos += len(line)
    return out


# The last document's outline and heading offsets: chunk_context is called once per chunk, in
# document order, so one entry saves re-parsing (and re-listing offsets) per chunk. The entry
# holds the text and outline objects themselves, so an identity match cannot be a stale hit.
_last: tuple[str, object, list[tuple[int, int, str]], list[int]] | None = None


def _outline(doc: Document) -> tuple[list[tuple[int, int, str]], list[int]]:
    global _last
    given: list[tuple[int, int, str]] | None = getattr(doc, "outline", None)
    last = _last
    if last is not None and last[0] is doc.text and last[1] is given:
        return last[2], last[3]
    outline = given if given else markdown_outline(doc.text)
    offsets = [o for o, _, _ in outline]
    _last = (doc.text, given, outline, offsets)
    return outline, offsets


def heading_path(outline: list[tuple[int, int, str]], offset: int,
                 offsets: list[int] | None = None) -> list[str]:
    """The headings enclosing ``offset``: the last heading at or before it, and each earlier
    heading of a higher level (smaller number), top first. ``offsets``: the outline's offsets,
    when the caller has them."""
    if offsets is None:
        offsets = [o for o, _, _ in outline]
    i = bisect.bisect_right(offsets, offset)
    path: list[str] = []
    level = 7
    for j in range(i - 1, -1, -1):
        _, lv, text = outline[j]
        if lv < level:
            path.append(text)
            level = lv
            if lv <= 1:
                break
    path.reverse()
    return path


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


def chunk_context(doc: Document, chunk: Chunk) -> str:
    """``title > heading > subheading`` for ``chunk`` of ``doc`` (the headings above the chunk's
    start); the title is left out when the top heading already says it. ``""`` when the document
    has neither a title nor headings."""
    title = doc.metadata.get("title")
    title = _clip(title, _MAX_HEADING_CHARS) if isinstance(title, str) and title.strip() else ""
    outline, offsets = _outline(doc)
    path = [_clip(h, _MAX_HEADING_CHARS) for h in heading_path(outline, chunk.start, offsets)]
    path = [h for h in path if h]
    if title and not (path and path[0].casefold() in title.casefold()):
        path.insert(0, title)
    while len(path) > 2 and len(_SEP.join(path)) > MAX_CONTEXT_CHARS:
        del path[1]  # keep the top (what the page is) and the innermost (where the chunk is)
    return _clip(_SEP.join(path), MAX_CONTEXT_CHARS)
