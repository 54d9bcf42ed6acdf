# Two commands: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-core
TEST_STAMP := $(VENV)/.installed-test
# apt-get needs root: sudo where make does not run as root
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test quick test-gpu lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

# The tests also build tiny vision models and talk to a loopback LLM stub: they need the model
# extras, the review app's tests the web extra and the Ray executor's the ray extra. torch is
# pinned to its CPU build here (an unpinned torch pulls a multi-GB CUDA build).
# The browser tests drive Debian's chromium through Playwright (never `playwright install`,
# which downloads its own browser and fails offline): installed with apt-get where missing.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet 'torch==2.13.0' -e '.[dev,models,web,ray]'
	command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/datasetagent demo -o demo-output

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

unit: $(TEST_STAMP)
	$(BIN)/pytest

test: lint typecheck unit

# A quick local run: the unit tests without the slow end-to-end modules (CI runs everything).
quick: $(TEST_STAMP)
	$(BIN)/pytest -m 'not slow and not gpu'

# On a machine with a CUDA GPU: the half-precision and device checks of the vision backends.
test-gpu: $(TEST_STAMP)
	$(BIN)/pytest -m gpu tests/test_hf.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_build.py

clean:
	rm -rf $(VENV) demo-output .mypy_cache .ruff_cache .pytest_cache
