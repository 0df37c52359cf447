"""Helpers of the CLI tests: a small corpus and a runner that returns exit code, stdout and stderr apart (stdout is not a terminal there,
as when piped)."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from parallelrag.cli import main

LONG_LINE = ("This line is deliberately much longer than eighty columns so that any hard wrap "
             "at the terminal width would split it, and it mentions "
             "pip install 'parallelrag[local]' with its brackets intact.")

DOCS = {
    "alpha.txt": "Alpha talks about the global interpreter lock and threads that wait.",
    "beta.txt": "Beta is about rate limits, token buckets and retries with backoff.",
    "gamma.md": "# Gamma\n\nGamma explains hybrid search with reciprocal rank fusion.",
    "long.txt": LONG_LINE,
}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]


def invoke(args: Sequence[str], env: Mapping[str, str | None] | None = None) -> Run:
    """Run the real command in-process (click's runner; stdout and stderr are not TTYs)."""
    result = CliRunner().invoke(main, list(args), env=dict(env or {}))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the CLI raised instead of exiting: {result.exception!r}\n"
                             f"stderr: {result.stderr}") from result.exception
    return Run(result.exit_code, result.stdout, result.stderr)


def assert_one_line_error(run: Run, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, exactly one ``error:`` line on stderr containing needles."""
    assert run.code == code, (run.code, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr and "Traceback" not in run.stdout
    errors = [ln for ln in run.err_lines if ln.startswith(("error:", "Error:"))]
    assert len(errors) == 1, run.stderr
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def make_corpus(root: Path) -> Path:
    docs = root / "docs"
    docs.mkdir(parents=True)
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    return docs


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
