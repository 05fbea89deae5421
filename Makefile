# Two commands do all the set-up: `make run` and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ROWS   ?= 100000
DATA   ?= data/customers.parquet
ENV    ?= dev
# pytest-xdist workers for `make test` (a test file runs on one worker, tests/conftest.py). Serial by
# default: on 2 workers two timing-bound tests each failed once under load (README "Tests")
WORKERS ?= 1

NODE_STAMP := node_modules/.installed

.PHONY: install run test data down clean chromium dashboard

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Stagewise needs Python 3.11, found {sys.version.split()[0]}: make PYTHON=python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

data: $(DATA)

$(DATA): $(wildcard pipeline/generator/*.py) | $(STAMP)
	$(BIN)/stagewise data generate --rows $(ROWS) --out $(DATA)

## run the whole pipeline on 100,000 customers against the embedded AWS (no AWS account needed)
run: $(STAMP) $(DATA)
	$(BIN)/stagewise run --env $(ENV) --data $(DATA)

# asl-validator (npm) checks the compiled state machine in the tests
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

# headless Chromium (Debian's package) for the dashboard page test; installed when we may (root + apt)
chromium:
	@command -v chromium >/dev/null || [ -n "$$STAGEWISE_CHROMIUM" ] || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } || \
	  { echo "the dashboard test needs Chromium: apt-get install chromium (or set STAGEWISE_CHROMIUM)"; exit 1; }

## the test suite, in parallel on $(WORKERS) workers (each starts its own embedded AWS on a free port)
test: $(STAMP) $(NODE_STAMP) chromium
	$(BIN)/pytest -q $(if $(filter-out 0 1,$(WORKERS)),-n $(WORKERS) --dist loadfile --no-loadscope-reorder)

## the environment's dashboard, from the embedded AWS's metrics, as one HTML page
dashboard: $(STAMP)
	$(BIN)/stagewise dashboard --env $(ENV) --open

## stop the embedded AWS left running by `make run`
down: $(STAMP)
	$(BIN)/stagewise local down

clean: down
	rm -rf .stagewise data .pytest_cache node_modules
