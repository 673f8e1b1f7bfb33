# Handoff: the front door. `make run` and `make test` are all a new user needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: help venv run test test-unit test-integration test-e2e lint kafka kafka-stop postgres bench drill hostile clean

help:
	@echo "make run    - broker + ingest/scoring/routing on SQLite with demo reps (Ctrl-C stops all)"
	@echo "make test   - unit, integration and end-to-end tests (brings up Kafka and PostgreSQL)"
	@echo "make lint   - ruff and mypy"
	@echo "make bench  - benchmarks against same-run baselines, results in bench/results/"
	@echo "make drill  - fault drills (SIGKILL, broker and database restarts) and their invariants"
	@echo "make hostile - a bounded battery of hostile requests against a running 'make run' (no 5xx, no hang)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

kafka: venv
	scripts/kafka.sh start

kafka-stop:
	scripts/kafka.sh stop

postgres:
	scripts/postgres.sh ensure

run: venv
	scripts/kafka.sh fetch
	$(PY) scripts/run.py

# The whole suite. Kafka and PostgreSQL are brought up by the test fixtures themselves (and stopped if they
# started them), so `pytest` alone works too; the steps here only make the first download visible.
test: venv
	scripts/kafka.sh fetch
	scripts/postgres.sh ensure
	command -v docker-compose >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose)
	@was_running=0; scripts/kafka.sh status >/dev/null 2>&1 && was_running=1; \
	scripts/kafka.sh start; \
	$(PY) -m pytest tests/unit tests/integration tests/e2e tests/drills; status=$$?; \
	[ $$was_running = 1 ] || scripts/kafka.sh stop; \
	exit $$status

test-unit: venv
	$(PY) -m pytest tests/unit -q

test-integration: venv
	$(PY) -m pytest tests/integration -q

test-e2e: venv
	$(PY) -m pytest tests/e2e -q

lint: venv
	$(VENV)/bin/ruff check services tests scripts bench
	$(VENV)/bin/ruff format --check services tests scripts bench || true
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

bench: venv
	scripts/kafka.sh fetch
	$(PY) -m bench.run

drill: venv
	scripts/kafka.sh fetch
	scripts/postgres.sh ensure
	$(PY) -m pytest tests/drills -q -m drill --drill-full

hostile: venv
	$(PY) -m tests.support.hostile

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
