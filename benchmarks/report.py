"""Output helpers shared by the benchmark scripts: print lines and keep them for a Markdown file."""

from __future__ import annotations

from pathlib import Path

LINES: list[str] = []


def out(line: str = "") -> None:
    """Print ``line`` now and keep it for :func:`write`."""
    print(line, flush=True)
    LINES.append(line)


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table under a ``###`` title."""
    out(f"\n### {title}\n")
    out("| " + " | ".join(header) + " |")
    out("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        out("| " + " | ".join(r) + " |")


def write(path: str | Path) -> None:
    """Write every line printed so far to ``path``."""
    Path(path).write_text("\n".join(LINES) + "\n", encoding="utf-8")
