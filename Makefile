# Two commands do everything on a fresh machine:
#   make run    the whole system as local processes (Ctrl-C stops it)
#   make test   the whole test suite
# Both install the locked environment first (uv, from uv.lock) and start RabbitMQ, Redis and
# PostgreSQL if they are installed but not running.

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
PY := $(VENV)/bin/python
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(PYTHON)

.PHONY: install run test test-fast test-e2e test-chaos lint format bench validate-deploy clean

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen
	touch $@

install: $(VENV)/.synced

run: install
	$(PY) -m devtools.run

test: install
	$(PY) -m devtools.infra
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -m "not e2e and not chaos"

test-e2e: install
	$(PY) -m pytest -q -m e2e

test-chaos: install
	$(PY) -m pytest -q -m chaos

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	$(PY) -m devtools.infra
	$(PY) -m benchmarks

validate-deploy: install
	$(PY) -m devtools.validate_deploy

clean:
	rm -rf .venv .tools .run .mypy_cache .ruff_cache
