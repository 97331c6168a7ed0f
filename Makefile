# One entry point for people and CI alike: make run, make test, make lint, make bench.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The lowest-versions run: a second venv, and the tests of the store and the collector.
LOWEST := .venv-lowest
LOWEST_TESTS := tests/test_collector.py tests/test_collector_properties.py \
	tests/test_store_queries.py tests/test_store_routing.py tests/test_retention.py \
	tests/test_buckets.py tests/test_scripts.py

.PHONY: run test test-lowest lint format bench soak screenshot redis-server clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

## run: start the whole system on its embedded default (API on http://127.0.0.1:8000)
run: $(STAMP)
	@scripts/ensure-redis-server || echo "no redis-server: metrics-store will fall back to fakeredis"
	$(BIN)/metrics-store up

## test: run the test suite against a private redis-server (and headless Chromium)
## (a tool that cannot be installed skips its tests with a warning; under CI=true, an error)
test: $(STAMP)
	scripts/ensure-redis-server
	@scripts/ensure-test-tool chromium scripts/ensure-chromium
	@scripts/ensure-test-tool docker-compose scripts/ensure-apt-tool docker-compose docker-compose
	@scripts/ensure-test-tool prometheus scripts/ensure-apt-tool prometheus prometheus
	@scripts/ensure-test-tool promtool scripts/ensure-apt-tool promtool prometheus
	$(BIN)/pytest -q

## test-lowest: the store and collector tests on the lowest versions pyproject.toml admits
# uv reads the package index from UV_INDEX_URL (default PyPI), not from pip's configuration.
test-lowest: $(STAMP)
	scripts/ensure-redis-server
	rm -rf $(LOWEST)
	$(BIN)/uv venv --quiet --python $(PYTHON) $(LOWEST)
	$(BIN)/uv pip install --quiet --python $(LOWEST)/bin/python \
		--resolution lowest-direct -e '.[all,test]'
	$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider $(LOWEST_TESTS)

## lint: ruff (lint and format), mypy strict on the three packages, and the import layers
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy metrics_store api workers
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: the benchmarks in bench/ (quick mode; FULL=1 for the full run)
bench: $(STAMP)
	scripts/ensure-redis-server
	scripts/ensure-bench-tools
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench $(if $(FULL),--full,)

## soak: the fault soak, SOAK_MINUTES (5) on single Redis, then on Sentinel with
## SOAK_SENTINEL_ACKS (1) replica acknowledgements; SOAK_SEED fixes the fault schedule
SOAK_MINUTES ?= 5
SOAK_SENTINEL_ACKS ?= 1
soak: $(STAMP)
	scripts/ensure-redis-server
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES) --topology single $(if $(SOAK_SEED),--seed $(SOAK_SEED),)
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES) --topology sentinel \
		--acks $(SOAK_SENTINEL_ACKS) $(if $(SOAK_SEED),--seed $(SOAK_SEED),)

## screenshot: docs/dashboard.png, the dashboard on the browser tests' data
screenshot: $(STAMP)
	scripts/ensure-redis-server
	scripts/ensure-chromium
	$(BIN)/python scripts/screenshot.py

clean:
	rm -rf $(VENV) $(LOWEST) .pytest_cache .mypy_cache .ruff_cache .metrics-store
