# The two commands a newcomer needs:  make dev   (run the gateway)
#                                     make test  (lint, type-check, full test suite)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: dev test lint typecheck pytest pytest-pgbouncer pgbouncer services localstack browser bench clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	# the Python client (its own distribution), tested in tests/client against the gateway
	$(BIN)/python -m pip install -q -e clients/python
	@touch $(STAMP)

dev: $(STAMP)
	$(BIN)/gateway dev

services:
	@$(BIN)/python -c "import socket,sys; socket.create_connection(('127.0.0.1',5432),2)" 2>/dev/null || { \
	  echo "Postgres does not answer on 127.0.0.1:5432. Start it with:"; \
	  echo "  pg_ctlcluster --skip-systemctl-redirect \$$(ls /etc/postgresql) main start"; exit 1; }
	@$(BIN)/python -c "import socket,sys; socket.create_connection(('127.0.0.1',6379),2)" 2>/dev/null || { \
	  echo "Redis does not answer on 127.0.0.1:6379. Start it with:"; \
	  echo "  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no"; exit 1; }

lint: $(STAMP)
	$(BIN)/ruff check gateway devtools tests bench clients examples
	$(BIN)/ruff format --check gateway devtools tests bench clients examples

typecheck: $(STAMP)
	$(BIN)/mypy

# LocalStack (an S3 that validates signatures) lives in its own Python 3.13 venv.
localstack:
	bash scripts/localstack-venv.sh

pytest: $(STAMP) services pgbouncer
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Debian's pgbouncer (1.18). The tests start their own process on a free loopback
# port (tests/support/pgbouncer.py); they never use the system service.
pgbouncer:
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer \
	  || { apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; } \
	  || { echo "the tests need pgbouncer (Debian's package): apt-get install -y pgbouncer"; exit 1; }

# The exactness, event, rebuild and sweeper tests again, with every gateway reaching
# Postgres through PgBouncer in transaction pooling mode.
PGBOUNCER_TESTS := tests/integration/test_admission_exactness.py tests/integration/test_events.py \
                   tests/integration/test_quota_rebuilds.py tests/integration/test_expiry_and_audit.py
pytest-pgbouncer: $(STAMP) services pgbouncer
	$(BIN)/pytest -q -p no:cacheprovider --via-pgbouncer $(PGBOUNCER_TESTS)

test: $(STAMP) services lint typecheck localstack pytest pytest-pgbouncer

bench: $(STAMP) services
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
	  || { echo "bench needs wrk (Debian's package): apt-get install -y wrk"; exit 1; }
	$(BIN)/python bench/bench_presign.py
	$(BIN)/python bench/bench_upload_path.py
	$(BIN)/python bench/bench_events.py
	$(BIN)/python bench/bench_http_layers.py
	$(BIN)/python bench/bench_cluster.py

clean:
	rm -rf $(VENV) .venv-localstack .pytest_cache .mypy_cache .ruff_cache test-output
