"""The clients import with the core dependencies only (issue 14).

``from parallelrag import LlmClient`` used to need pydantic without declaring it. This test
imports the clients in a fresh interpreter and checks that every third-party distribution that
got imported is a declared core dependency of the project (pyproject.toml), so a clean
``pip install parallelrag`` can import them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys, importlib.metadata as md
before = set(sys.modules)
from parallelrag import EmbeddingClient, LlmClient
EmbeddingClient.from_function(lambda ts: [[0.0]] * len(ts), dim=1)
tops = {m.split(".")[0] for m in set(sys.modules) - before}
dists = md.packages_distributions()
out = sorted({d for t in tops if t not in sys.stdlib_module_names for d in dists.get(t, [])})
print(json.dumps(out))
"""


def _name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_clients_import_only_declared_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]} | {"parallelrag"}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=120, check=True)
    imported = {d.lower().replace("_", "-") for d in json.loads(proc.stdout.strip().splitlines()[-1])}
    # a dependency's own dependencies come with it (aiohttp brings yarl, multidict, ...)
    undeclared = sorted(d for d in imported - declared if not _required_by(d, declared))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def _required_by(dist: str, declared: set[str]) -> bool:
    """Whether ``dist`` is installed as a requirement of a declared dependency (transitively)."""
    import importlib.metadata as md

    seen: set[str] = set()
    todo = list(declared - {"parallelrag"})
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in reqs:
            if "extra ==" in r:
                continue
            todo.append(_name(r))
    return dist in seen
