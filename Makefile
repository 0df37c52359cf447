# parallelrag: `make demo` runs the main job on the embedded default; `make test` runs everything.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint typecheck unit import-check bench-env bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: a local CPU wheel here (an unpinned torch pulls a multi-GB CUDA build)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[local,dev,postgres,ray,langchain,llamaindex]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/parallelrag demo

lint: install
	$(BIN)/ruff check src tests benchmarks

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q
	# Ray tests: in a network namespace with only loopback (Ray listens on every interface)
	.ci/netns $(BIN)/pytest -q tests/distributed

# the package must import in a fresh venv with its core dependencies only (no extras)
import-check: install
	rm -rf $(VENV)-bare
	$(PY) -m venv $(VENV)-bare
	$(VENV)-bare/bin/python -m pip install -q .
	cd /tmp && $(CURDIR)/$(VENV)-bare/bin/python $(CURDIR)/.ci/import_check.py
	rm -rf $(VENV)-bare

test: lint typecheck import-check unit

bench-env:
	bash benchmarks/setup_env.sh

bench: install bench-env
	$(BIN)/python benchmarks/runtime_overhead.py
	.bench-venv/bin/python benchmarks/embeddings.py
	.bench-venv/bin/python benchmarks/llm.py
	.bench-venv/bin/python benchmarks/splitters.py
	.bench-venv/bin/python benchmarks/pipeline.py
	.bench-venv/bin/python benchmarks/workflow.py
	.bench-venv/bin/python benchmarks/gil_ticker.py
	$(BIN)/python benchmarks/index_size.py
	$(BIN)/python benchmarks/store_pg.py --sizes 100000
	.ci/netns $(BIN)/python benchmarks/ray_scaling.py
	$(BIN)/python benchmarks/eval_retrieval.py

clean:
	rm -rf $(VENV) .bench-venv .mypy_cache .ruff_cache .pytest_cache
