# Berth: `make run` serves the registry locally, `make test` runs every test, `make bench` compares
# it with docker-registry. Each installs what it needs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make test` runs the test files on this many pytest-xdist workers, a file to a worker (its
# module fixtures, servers and `make run` processes are set up once); each worker has its own moto.
# 0 runs them in one process.
TEST_WORKERS ?= 2

.PHONY: run test bench system-deps clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

system-deps:
	bash scripts/install-system-deps.sh

run: $(STAMP)
	$(PY) -m berth_local.run

test: $(STAMP) system-deps
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP) system-deps
	bash bench/run.sh

clean:
	rm -rf $(VENV) .pytest_cache
