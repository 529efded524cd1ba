# tunehub: the two README commands are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench models clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)  ## start a service + worker here, tune the example models, print tuned vs untuned
	$(BIN)/tunehub demo

test: $(STAMP)  ## the whole suite (SQLite and PostgreSQL, real TVM, real processes)
	$(BIN)/python -m pytest -ra --durations=15

test-fast: $(STAMP)  ## skip the slow end-to-end tests
	$(BIN)/python -m pytest -ra -m "not slow"

bench: $(STAMP)  ## benchmarks, side by side in one run; JSON to bench/results/ (PostgreSQL at 127.0.0.1:5432 for the queue)
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python bench/queue_throughput.py
	$(BIN)/python bench/measurement_noise.py
	$(BIN)/python bench/search_quality.py --quick   # the full suite (no --quick) takes hours on 2 cores

models: $(STAMP)  ## regenerate examples/*.onnx
	$(BIN)/python examples/make_models.py examples

clean:
	rm -rf $(VENV) tunehub-demo tunehub-data .pytest_cache
