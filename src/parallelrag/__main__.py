"""``python -m parallelrag`` runs the CLI."""

from .cli import run

run()
