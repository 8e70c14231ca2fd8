# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create the virtual environment (.venv) and install the kit into it first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO ?= demo-output
PYTEST_ARGS ?=

.PHONY: demo test lint bench install clean codabench-bundle image scoring-image codabench-image hadolint

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[model,dev]'
	touch $@

install: $(STAMP)

# The whole competition on generated data (demo/run.py); a second run reuses what the first made.
demo: $(STAMP)
	$(BIN)/python demo/run.py --out $(DEMO)

# One formatter (ruff format, applied to the whole tree) and the linter; `ruff format .` mends the first.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# The JUnit report lets .ci/run tell "all passed" from "nothing ran".
test: $(STAMP) lint
	mkdir -p build
	$(BIN)/python -m pytest --junitxml=build/test-results.xml $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/bench_score.py

# The Codabench / CodaLab Competitions scoring program alone (metadata.yaml and the scorer modules
# it imports); `mura codabench bundle` writes a whole Codabench competition with it.
codabench-bundle: $(STAMP)
	mkdir -p dist
	$(BIN)/mura codabench scoring-program dist/scoring_program.zip

# The docker images (docker/): `make image [EVAL_BASE=...] [EVAL_EXTRAS=model]`, `make scoring-image`,
# `make codabench-image` (the evaluation image laid out for Codabench's compute workers).
# A CA bundle in $PIP_CERT (a proxy's) is handed to pip inside the build via docker/certs/.
# The default names are Python's too (scorer.harness.docker_runner.EVALUATION_IMAGE, the
# default of `mura evaluate --image`; scorer.codabench.bundle.IMAGE): tests hold them equal.
EVAL_IMAGE ?= mura-evaluation:latest
EVAL_BASE ?=
EVAL_EXTRAS ?= model
SCORING_IMAGE ?= mura-scoring:latest
CODABENCH_IMAGE ?= mura-codabench:latest
DOCKER_BUILD = docker build --network host

docker/certs/build-ca.crt:
	@if [ -f "$${PIP_CERT:-}" ]; then cp "$$PIP_CERT" $@; fi

image: docker/certs/build-ca.crt
	$(DOCKER_BUILD) -f docker/evaluation.Dockerfile $(if $(EVAL_BASE),--build-arg BASE=$(EVAL_BASE)) \
		--build-arg EXTRAS=$(EVAL_EXTRAS) -t $(EVAL_IMAGE) .

scoring-image: docker/certs/build-ca.crt
	$(DOCKER_BUILD) -f docker/scoring.Dockerfile -t $(SCORING_IMAGE) .

codabench-image: image
	$(DOCKER_BUILD) -f docker/codabench.Dockerfile --build-arg BASE=$(EVAL_IMAGE) -t $(CODABENCH_IMAGE) .

hadolint: $(STAMP)
	$(BIN)/hadolint docker/evaluation.Dockerfile docker/scoring.Dockerfile docker/codabench.Dockerfile

clean:
	rm -rf $(VENV) build $(DEMO) .pytest_cache .ruff_cache
