# Two entry points for a fresh machine (Python 3.11 and the package registries are all it needs):
#   make demo   set up .venv, generate the demo data, extract features, train and evaluate MSPAN
#   make test   set up .venv, lint (ruff, hadolint) and run the whole test suite
# The same install steps are used by the Dockerfile: pip install torch/torchvision pins, then the project.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo_out

.PHONY: env test lint demo bench clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

env: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/hadolint Dockerfile

test: lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh $(DEMO)

bench: $(STAMP)
	$(BIN)/python benchmarks/extract_bench.py
	$(BIN)/python benchmarks/objects_bench.py
	$(BIN)/python benchmarks/train_bench.py
	$(BIN)/python benchmarks/data_bench.py

clean:
	rm -rf $(DEMO) build *.egg-info .pytest_cache .ruff_cache
