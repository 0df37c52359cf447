"""HTML → plain text that keeps the document's shape.

Headings become Markdown-style lines (``## Installing``) so that Markdown-aware splitters cut at
sections, and are listed in the document's ``outline`` (offset of the heading line, level, text) so
that each chunk can carry the heading path it sits under; block elements (paragraphs, list items, table rows, ...) start new lines; ``<pre>`` keeps
its whitespace; scripts, styles, templates, ``<noscript>``, inline SVG and page chrome (``<nav>``,
elements with a navigation/banner/contentinfo role or a sidebar/footer/related/headerlink class)
are dropped; entities are decoded. Built on the standard library's :class:`html.parser.HTMLParser`, with per-tag dispatch
through dicts so that the common inline tags cost one lookup.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from ..documents import Document
from .encoding import decode_text

__all__ = ["HtmlText", "html_to_text", "load_html"]

_WS = re.compile(r"\s+")
_META_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_\-:.]+)""", re.IGNORECASE
)
_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object", "canvas",
                   "nav"})
# Page chrome that is not the document's content (it pollutes search results): navigation bars,
# sidebars, footers, permalink markers (Sphinx's "¶"), by ARIA role or common class names.
_CHROME_ROLES = frozenset({"navigation", "search", "banner", "contentinfo"})
_CHROME_CLASSES = frozenset({
    "sphinxsidebar", "sidebar", "related", "footer", "headerlink", "navbar", "breadcrumbs",
    "breadcrumb", "skip-link", "mobile-nav", "site-footer", "site-header",
})


def _is_chrome(attrs: list[tuple[str, str | None]]) -> bool:
    for name, value in attrs:
        if not value:
            continue
        if name == "role" and value in _CHROME_ROLES:
            return True
        if name == "class" and not _CHROME_CLASSES.isdisjoint(value.split()):
            return True
    return False
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# Newlines a block element puts around itself: 2 separates paragraphs, 1 separates lines.
_BLOCKS = {
    "p": 2, "blockquote": 2, "table": 2, "figure": 2, "hr": 2, "section": 2, "article": 2,
    "header": 1, "footer": 1, "main": 1, "aside": 1, "div": 1, "body": 1, "form": 1,
    "fieldset": 1, "legend": 1, "address": 1, "details": 1, "summary": 1, "dialog": 1,
    "dl": 1, "dt": 1, "dd": 1, "tr": 1, "caption": 1, "figcaption": 1, "center": 1,
    "hgroup": 1, "option": 1, "thead": 1, "tbody": 1, "tfoot": 1, "menu": 1,
}
_LISTS = frozenset({"ul", "ol", "dir"})
_CELLS = frozenset({"td", "th"})
_HEADING_TRAILERS = " \t¶#§"


class HtmlText(HTMLParser):
    """Incremental HTML → text converter: ``feed()`` then ``close()``; read ``text`` and ``title``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._line: list[str] = []
        self._pending = 0
        self._prefix = ""
        self._skip_tag: str | None = None
        self._skip_depth = 0
        self._pre = 0
        self._heading = 0
        self._lists = 0
        self._in_title = False
        self._title: list[str] = []
        self._first_h1: str | None = None
        self._len = 0  # characters in _parts
        self.text = ""
        self.title: str | None = None
        #: ``(offset of the heading line in text, level 1-6, heading text)``, in text order
        self.outline: list[tuple[int, int, str]] = []

    # -- output -------------------------------------------------------------------------------
    def _flush(self) -> None:
        if not self._line:
            return
        raw = "".join(self._line)
        self._line.clear()
        if self._pre:
            text = raw.strip("\n").rstrip()
            if not text.strip():
                return
        else:
            text = _WS.sub(" ", raw).strip()
            if not text:
                return
        heading: str | None = None
        if self._heading:
            text = text.rstrip(_HEADING_TRAILERS)
            if not text:
                return
            if self._heading == 1 and self._first_h1 is None:
                self._first_h1 = text
            heading = text
            text = "#" * self._heading + " " + text
        elif self._prefix:
            text = self._prefix + text
        self._prefix = ""
        if self._parts:
            sep = "\n" * max(self._pending, 1)
            self._parts.append(sep)
            self._len += len(sep)
        if heading is not None:
            self.outline.append((self._len, self._heading, heading))
        self._parts.append(text)
        self._len += len(text)
        self._pending = 0

    def _block(self, newlines: int) -> None:
        self._flush()
        if newlines > self._pending:
            self._pending = newlines

    # -- parser callbacks ---------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth += 1
            return
        if attrs and _is_chrome(attrs):
            self._block(1)
            self._skip_tag = tag
            self._skip_depth = 1
            return
        n = _BLOCKS.get(tag)
        if n is not None:
            self._block(n)
            return
        if tag in _CELLS:
            if self._line:
                self._line.append(" | ")
        elif tag == "br":
            if self._pre:
                self._line.append("\n")
            else:
                self._block(1)
        elif tag == "li":
            self._block(1)
            self._prefix = "  " * max(self._lists - 1, 0) + "- "
        elif tag in _LISTS:
            self._block(2 if self._lists == 0 else 1)
            self._lists += 1
        elif tag in _HEADINGS:
            self._block(2)
            self._heading = _HEADINGS[tag]
        elif tag == "pre":
            self._block(2)
            self._pre += 1
        elif tag in _SKIP:
            self._skip_tag = tag
            self._skip_depth = 1
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if self._skip_tag is not None:
            if tag == self._skip_tag:
                self._skip_depth -= 1
                if self._skip_depth == 0:
                    self._skip_tag = None
            return
        n = _BLOCKS.get(tag)
        if n is not None:
            self._block(n)
            return
        if tag in _HEADINGS:
            self._flush()
            self._heading = 0
            self._pending = max(self._pending, 2)
        elif tag == "li":
            self._block(1)
        elif tag in _LISTS:
            if self._lists:
                self._lists -= 1
            self._block(2 if self._lists == 0 else 1)
        elif tag == "pre":
            self._flush()
            if self._pre:
                self._pre -= 1
            self._pending = max(self._pending, 2)
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._skip_tag is not None:
            return
        if self._in_title:
            self._title.append(data)
        else:
            self._line.append(data)

    def close(self) -> None:
        super().close()
        self._flush()
        self.text = "".join(self._parts)
        title = _WS.sub(" ", "".join(self._title)).strip()
        self.title = title or self._first_h1


def html_to_text(html: str) -> tuple[str, str | None]:
    """Convert an HTML string to ``(text, title)``; ``title`` is ``<title>`` or else the first h1."""
    parser = HtmlText()
    parser.feed(html)
    parser.close()
    return parser.text, parser.title


def declared_charset(data: bytes) -> str | None:
    """The charset an HTML document declares in a ``<meta>`` tag within its first 4 KiB."""
    m = _META_CHARSET.search(data[:4096])
    return m.group(1).decode("ascii", "replace") if m else None


def load_html(path: Path, data: bytes, /, **options: Any) -> list[Document]:
    """Loader for ``.html`` / ``.htm``: text with Markdown-style headings, ``title`` in metadata,
    the h1-h6 headings in ``outline``."""
    html = decode_text(data, declared=declared_charset(data))
    parser = HtmlText()
    parser.feed(html)
    parser.close()
    metadata: dict[str, Any] = {"mime": "text/html"}
    if parser.title:
        metadata["title"] = parser.title
    return [Document(parser.text, metadata=metadata, outline=parser.outline)]
