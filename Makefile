# The Makefile is the interface: README, CI (.ci/run) and people call these targets.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export INTELLIOPTICS_DATA_DIR ?= $(CURDIR)/data
BACKBONE := $(INTELLIOPTICS_DATA_DIR)/backbones/efficientnet_lite0/backbone.onnx
STAMP := $(VENV)/.installed
PARTS := common training edge/inference edge/api edge/streams cloud/api cloud/worker
PYPROJECTS := $(foreach p,$(PARTS),$(p)/pyproject.toml)

.PHONY: help install system-deps backbone web-ui frontend frontend-client test test-unit lint format run bench bench-edge bench-multi bench-streams bench-rules bench-frontend soak clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

install: system-deps $(STAMP) backbone ## Create .venv, install every part, build the ONNX backbone (idempotent)

system-deps: ## Install missing Debian packages (nginx, chromium, docker-compose, postgresql)
	@scripts/install-system-deps.sh

$(STAMP): constraints.txt requirements-dev.txt $(PYPROJECTS)
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found; set PYTHON=python3"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -r requirements-dev.txt \
		$(foreach p,$(PARTS),-e ./$(p))
	touch $(STAMP)

backbone: $(BACKBONE) ## Export the ImageNet EfficientNet-Lite0 backbone to ONNX into the data directory

$(BACKBONE): $(STAMP)
	$(BIN)/intellioptics backbone export --out $(dir $(BACKBONE))

frontend: ## Install, test and build the web UI into cloud/frontend/dist
	cd cloud/frontend && npm ci --no-audit --no-fund && npm test && npm run build

frontend-client: $(STAMP) ## Regenerate cloud/frontend/src/api/schema.d.ts from the cloud's OpenAPI
	cd cloud/frontend && PYTHON=$(CURDIR)/$(BIN)/python npm run gen:api

test: install ## Run the whole test suite (what CI runs after lint)
	$(BIN)/pytest

# Tests that start no service (no PostgreSQL, nginx, Azurite, browser or stack) and train
# nothing for long: the quick loop while editing, a few minutes.
test-unit: install ## Run the tests that start no services (a few minutes)
	$(BIN)/pytest -m "not integration and not postgres and not browser and not soak and not slow"

MYPY_PACKAGES := common/src/intellioptics_common training/src/intellioptics_training \
	edge/inference/src/intellioptics_inference edge/api/src/intellioptics_edge \
	edge/streams/src/intellioptics_streams cloud/api/src/intellioptics_cloud \
	cloud/worker/src/intellioptics_worker

lint: $(STAMP) ## ruff (rules and format), mypy on every Python part, tsc and eslint on the web UI
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy $(MYPY_PACKAGES)
	cd cloud/frontend && { test -x node_modules/.bin/eslint || npm ci --no-audit --no-fund; } \
		&& npm run --silent typecheck && npm run --silent lint

format: $(STAMP) ## Apply ruff formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

run: install web-ui ## Start the whole stack as local processes (Ctrl-C stops it)
	$(BIN)/python scripts/run_stack.py

web-ui: ## Build the web UI once (cloud/frontend/dist), when npm is available
	@if [ -f cloud/frontend/dist/index.html ]; then exit 0; fi; \
	if command -v npm >/dev/null; then cd cloud/frontend && npm ci --no-audit --no-fund && npm run build; \
	else echo "npm not found: the cloud API runs without the web UI"; fi

bench: install ## Long measurements (training, then the edge); each writes its own section of docs/benchmarks.md
	$(BIN)/python -m intellioptics_training.bench
	$(MAKE) --no-print-directory bench-edge

# About 4-5 minutes on 2 cores: 8 one-second slices of each of 14 runs, then the cache cycle.
bench-edge: install ## Edge latency/throughput: raw ONNX Runtime, inference, edge API, nginx (the Edge inference section)
	$(BIN)/python -m tests.support.edge_stack --duration 8
	$(MAKE) --no-print-directory bench-multi

# About 2 minutes: 8 one-second slices of 17 runs.
bench-multi: install ## Many detectors on one frame: N x /infer against one /infer/multi, N = 1, 2, 4, 8
	$(BIN)/python -m intellioptics_inference.bench_multi --duration 8

# About 3 minutes: 60 s of 4 streams x 2 fps x 2 detectors, then a 30 s camera outage.
# The issue's 10 minutes: $(BIN)/python -m edge.streams.bench.load --duration 600
bench-streams: install ## Stream service: PyAV vs OpenCV frame sources, then the 4-camera load target (Stream service section)
	$(BIN)/python -m edge.streams.bench.frame_sources
	$(BIN)/python -m edge.streams.bench.load

soak: install ## Long reliability runs (tests/soak: 60 s load, long fuzzing, 2-minute cloud outage; about 30 minutes)
	INTELLIOPTICS_SOAK=1 $(BIN)/pytest -s -m soak tests/soak

bench-rules: install ## Rule stage: share of answers and time on a day with a third of the frames unusable (Rule stage section)
	$(BIN)/python -m edge.api.bench.rules_bench

bench-frontend: install ## Review-page labeling bench (writes the Web UI section of docs/benchmarks.md)
	$(BIN)/python -m cloud.frontend.tests.bench_review

clean: ## Remove the venv and build outputs (keeps data/)
	rm -rf $(VENV) .pytest_cache .ruff_cache
