"""Benchmark corpora shared by the benchmarks.

* :func:`pydoc_corpus`: the Python 3.11 HTML documentation from Debian's ``python3.11-doc``
  package, as plain text (stdlib ``html.parser``; headings kept as their own lines, marked with
  ``#`` so Markdown-aware splitters see them), cached under ``benchmarks/.cache/pydoc/``.
* :func:`ascii_mb` / :func:`cjk_mb`: 1 MB of deterministic generated ASCII / CJK text.

Obtaining the package needs ``apt-get`` (``apt-get download`` into ``benchmarks/.cache``; run
``apt-get update`` first if the package is unknown) and ``dpkg-deb``.
"""

from __future__ import annotations

import glob
import html.parser
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

_VERSION = 2  # bump when the text conversion changes
CACHE = Path(__file__).resolve().parent / ".cache"
PYDOC_DIR = CACHE / "pydoc"
PACKAGE = "python3.11-doc"

_BLOCK = {
    "p", "div", "section", "article", "li", "ul", "ol", "dl", "dt", "dd", "pre", "table", "tr",
    "blockquote", "br", "hr", "title",
}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_SKIP = {"script", "style", "head", "nav", "footer"}


class _TextExtractor(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.pre = 0
        self.heading = 0
        self.in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag in _HEADINGS:
            self.heading = _HEADINGS[tag]
            self.parts.append("\n\n" + "#" * self.heading + " ")
        elif tag == "pre":
            self.pre += 1
            self.parts.append("\n\n```\n")
        elif tag in _BLOCK:
            self.parts.append("\n\n" if tag in ("p", "dl", "table", "ul", "ol") else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _HEADINGS:
            self.heading = 0
            if self.parts and self.parts[-1].startswith("\n\n#"):
                self.parts.pop()  # an empty heading (sidebar markup)
            else:
                self.parts.append("\n\n")
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
            self.parts.append("\n```\n\n")
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            self.parts.append(data)
        else:
            text = " ".join(data.split())
            if self.heading:
                text = text.replace("¶", "").strip()
            if text:
                if data[:1].isspace() and self.parts and not self.parts[-1].endswith(("\n", " ")):
                    text = " " + text
                if data[-1:].isspace():
                    text += " "
                self.parts.append(text)

    def text(self) -> str:
        raw = "".join(self.parts)
        lines = [ln.rstrip() for ln in raw.split("\n")]
        out: list[str] = []
        blank = 0
        for ln in lines:
            if ln.strip():
                blank = 0
                out.append(ln)
            else:
                blank += 1
                if blank == 1:
                    out.append("")
        return "\n".join(out).strip() + "\n"


def html_to_text(source: str) -> str:
    """Plain text of an HTML page: block structure as blank lines, headings as ``# ...`` lines."""
    parser = _TextExtractor()
    parser.feed(source)
    parser.close()
    return parser.text()


def _download() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    debs = sorted(glob.glob(str(CACHE / f"{PACKAGE}_*.deb")))
    if not debs:
        cmd = ["apt-get", "download", PACKAGE]
        res = subprocess.run(cmd, cwd=CACHE, capture_output=True, text=True)
        if res.returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, check=False)
            subprocess.run(cmd, cwd=CACHE, check=True, capture_output=True)
        debs = sorted(glob.glob(str(CACHE / f"{PACKAGE}_*.deb")))
    root = CACHE / "python3.11-doc-root"
    if not root.exists():
        subprocess.run(["dpkg-deb", "-x", debs[-1], str(root)], check=True)
    return root


def pydoc_corpus() -> list[tuple[str, str]]:
    """``(path, text)`` for every HTML page of the Python 3.11 docs, sorted by path."""
    index = PYDOC_DIR / f"INDEX.v{_VERSION}"
    if not index.exists():
        root = _download()
        pages = sorted(glob.glob(str(root / "usr/share/doc/python3.11/html/**/*.html"), recursive=True))
        PYDOC_DIR.mkdir(parents=True, exist_ok=True)
        names = []
        for page in pages:
            rel = os.path.relpath(page, root / "usr/share/doc/python3.11/html")
            with open(page, encoding="utf-8", errors="replace") as fh:
                text = html_to_text(fh.read())
            if not text.strip():
                continue
            dest = PYDOC_DIR / (rel[: -len(".html")] + ".txt")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
            names.append(rel[: -len(".html")] + ".txt")
        index.write_text("\n".join(names) + "\n", encoding="utf-8")
    out = []
    for name in index.read_text(encoding="utf-8").split():
        out.append((name, (PYDOC_DIR / name).read_text(encoding="utf-8")))
    return out


_WORDS = ["the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they", "you", "were", "her", "she", "there", "been", "one", "all", "we", "their", "has", "would", "when", "if", "so", "no", "what", "function", "return", "value", "object", "class", "module", "import", "string", "list", "dict", "type", "error", "python", "data", "file", "thread", "process", "async", "await", "loop", "event", "queue", "buffer", "memory", "system", "call", "argument"]


def ascii_mb(size: int = 1_000_000, seed: int = 1) -> Iterator[str]:
    """Yields one deterministic ASCII text of ``size`` characters: sentences and paragraphs."""
    rng = random.Random(seed)
    parts: list[str] = []
    n = 0
    while n < size:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(5, 25))]
        sent = " ".join(words).capitalize() + rng.choice([". ", ". ", "? ", "! "])
        if rng.random() < 0.12:
            sent += "\n\n"
        parts.append(sent)
        n += len(sent)
    yield "".join(parts)[:size]


_CJK_PUNCT = ["。", "。", "！", "？", "，", "、"]


def cjk_mb(size: int = 1_000_000, seed: int = 2) -> Iterator[str]:
    """Yields one deterministic CJK text of ``size`` characters (no spaces; CJK punctuation)."""
    rng = random.Random(seed)
    parts: list[str] = []
    n = 0
    while n < size:
        k = rng.randint(6, 30)
        sent = "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(k)) + rng.choice(_CJK_PUNCT)
        if rng.random() < 0.05:
            sent += "\n\n"
        parts.append(sent)
        n += len(sent)
    yield "".join(parts)[:size]


if __name__ == "__main__":
    docs = pydoc_corpus()
    total = sum(len(t) for _, t in docs)
    print(f"{len(docs)} pages, {total / 1e6:.1f} M chars; e.g. {docs[0][0]}")
