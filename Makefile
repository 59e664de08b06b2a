# ratingparty: `make test` and (with the service) `make serve` are the two commands a newcomer runs.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install fmt lint test bench serve clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-8s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: 2.13.0 resolves to the CPU wheel already on the machine; any other spec
# would pull several GB of CUDA packages.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@# the browser tests drive Debian's chromium (Playwright's own browser download is not used)
	command -v chromium >/dev/null || ! command -v apt-get >/dev/null || \
		{ S=$$([ "$$(id -u)" = 0 ] || echo sudo); $$S apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive $$S apt-get install -y -qq chromium >/dev/null; }
	touch $(STAMP)

install: $(STAMP)  ## create .venv (if missing) and install the project with its test tools

fmt: $(STAMP)  ## format the code
	$(VENV)/bin/ruff format engine api sim client benchmarks tests
	$(VENV)/bin/ruff check --fix engine api sim client benchmarks tests

lint: $(STAMP)  ## ruff check and format check
	$(VENV)/bin/ruff check engine api sim client benchmarks tests
	$(VENV)/bin/ruff format --check engine api sim client benchmarks tests

test: $(STAMP) lint  ## lint, then run the whole test suite
	$(PY) -m pytest

bench: $(STAMP)  ## run the benchmarks, writing benchmarks/results/
	$(PY) -m benchmarks.selection_speed

# HOST, PORT, DATABASE_URL (default: SQLite in .ratingparty/) and DEMO=1 pass through.
serve: $(STAMP)  ## start the HTTP service on 127.0.0.1:8000 (DEMO=1 seeds a demo campaign)
	HOST="$(or $(HOST),127.0.0.1)" PORT="$(or $(PORT),8000)" DATABASE_URL="$(DATABASE_URL)" \
		DEMO="$(DEMO)" $(PY) -m api

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
