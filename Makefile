# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create the virtual environment (.venv) and install the kit into it first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= demo-output
PYTEST_ARGS ?=

.PHONY: demo test lint bench install clean codabench-bundle

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[model,dev]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m scorer.example_data $(DEMO)

lint: $(STAMP)
	$(BIN)/ruff check .

# The JUnit report lets .ci/run tell "all passed" from "nothing ran".
test: $(STAMP) lint
	mkdir -p build
	$(BIN)/python -m pytest --junitxml=build/test-results.xml $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/bench_score.py

# The Codabench / CodaLab Competitions scoring program: scorer/ and metadata.yaml at the zip's root.
codabench-bundle:
	rm -rf build/codabench && mkdir -p build/codabench dist
	cp -r scorer build/codabench/ && cp scorer/codabench/metadata.yaml build/codabench/
	find build/codabench -name __pycache__ -prune -exec rm -rf {} +
	cd build/codabench && $(PYTHON) -m zipfile -c ../../dist/scoring_program.zip metadata.yaml scorer

clean:
	rm -rf $(VENV) build $(DEMO) .pytest_cache .ruff_cache
