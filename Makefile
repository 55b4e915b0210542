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

.PHONY: install tools chromium run test test-unit test-fast test-e2e test-chaos test-cluster test-fuzz lint format bench profile clean

# The fast tier runs with every server URL pointing at a closed port: it proves it needs none.
CLOSED := 127.0.0.1:1
OFFLINE_ENV := HERALD_TEST_OFFLINE=1 \
	HERALD_TEST_AMQP=amqp://guest:guest@$(CLOSED) HERALD_TEST_REDIS=redis://$(CLOSED)/0 \
	HERALD_TEST_POSTGRES=postgresql+asyncpg://postgres@$(CLOSED) \
	RABBITMQ_URL=amqp://guest:guest@$(CLOSED)/ REDIS_URL=redis://$(CLOSED)/0 \
	DATABASE_URL=postgresql+asyncpg://postgres@$(CLOSED)/x \
	USER_DATABASE_URL=postgresql+asyncpg://postgres@$(CLOSED)/x \
	TEMPLATE_DATABASE_URL=postgresql+asyncpg://postgres@$(CLOSED)/x \
	DLQ_DATABASE_URL=postgresql+asyncpg://postgres@$(CLOSED)/x \
	USER_SERVICE_URL=http://$(CLOSED) TEMPLATE_SERVICE_URL=http://$(CLOSED) \
	SMTP_HOST=127.0.0.1 SMTP_PORT=1 FCM_BASE_URL=http://$(CLOSED) SENDGRID_BASE_URL=http://$(CLOSED)

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen
	touch $@

install: $(VENV)/.synced

# Binaries the tests and the benchmark run, from Debian's packages, installed only when missing:
# promtool (package prometheus; only promtool is used) and kubectl (for `kubectl kustomize`; the
# machines' image ships the `kubectl` package, Debian's own kubernetes-client 1.20 is too old)
# for tests/deploy; wrk (HTTP load) for make bench and its small version in tests/e2e.
tools:
	@command -v promtool >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	@command -v kubectl >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubectl; }
	@command -v wrk >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk; }

# The console's browser tests drive Debian's Chromium through Playwright (which cannot download a
# browser of its own here); installed only when missing.
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

run: install
	$(PY) -m devtools.run

# Two pytest-xdist workers: the whole-system tests mostly wait (on services, outages, retries),
# so a second worker roughly halves the suite on two cores. tests/conftest.py puts the chaos tests
# in one group and the other whole-system tests in another; a group runs on one worker, one test
# at a time.
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: install tools chromium
	$(PY) -m devtools.infra
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup

test-unit: install
	$(OFFLINE_ENV) $(PY) -m pytest -q -p no:cacheprovider -m unit

test-fast: install tools
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadgroup -m "not e2e and not chaos and not cluster"

test-e2e: install tools chromium
	$(PY) -m pytest -q -p no:cacheprovider -m e2e

test-chaos: install
	$(PY) -m pytest -q -p no:cacheprovider -m chaos

test-cluster: install
	$(PY) -m devtools.infra
	$(PY) -m pytest -q -p no:cacheprovider -m cluster

test-fuzz: install
	$(PY) -m devtools.infra
	$(PY) -m pytest -q -p no:cacheprovider -m fuzz

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .
	$(VENV)/bin/lint-imports

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Options are BENCH_* variables (benchmarks/config.py), e.g. `make bench BENCH_QUICK=1` (a few
# minutes). Writes benchmarks/results/ and docs/benchmarks.md.
bench: install tools
	$(PY) -m devtools.infra
	$(PY) -m benchmarks

# Where each process spends its CPU under the bench's loads (py-spy; a few minutes): prints the
# shares by part that docs/benchmarks.md quotes; the raw profiles stay in BENCH_WORKDIR.
profile: install tools
	$(PY) -m devtools.infra
	$(PY) -m benchmarks.profiles

clean:
	rm -rf .venv .tools .run .mypy_cache .ruff_cache
