# Loyalty platform. Two commands matter: `make run` (the whole suite on embedded Postgres and
# Redis) and `make test` (lint, types, unit and integration tests). Both run `make setup` first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BUF_VERSION := 1.75.0
PROTOS := $(shell find protos -name '*.proto' | sort)
# Tests, `make run` and the benchmarks fork service processes while holding gRPC channels;
# gRPC's fork handlers can crash such a child (grpc/grpc#43055). We only fork to exec.
export GRPC_ENABLE_FORK_SUPPORT := 0

.PHONY: setup proto run test lint typecheck unit integration proto-lint proto-breaking clean help k8s check-invariants soak bench

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

setup: $(VENV)/.deps gen/.stamp  ## make the venv, install everything, generate the gRPC stubs (idempotent)

$(VENV)/.deps: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@# gen/ holds the generated stubs; put it (and the repo) on the venv's path.
	@site=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/gen" > $$site/loyalty-platform-paths.pth
	@touch $@

proto: gen/.stamp  ## generate Python, gRPC and mypy stubs from protos/

gen/.stamp: $(PROTOS) $(VENV)/.deps
	@rm -rf gen && mkdir -p gen
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos --python_out=gen --grpc_python_out=gen \
	  --mypy_out=gen --mypy_grpc_out=gen $(PROTOS)
	@touch $@

run: setup  ## start all six services on embedded Postgres and Redis (Ctrl-C stops everything)
	$(PY) -m devtools.run

lint: setup  ## ruff, and buf lint on the protos
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(MAKE) --no-print-directory proto-lint

typecheck: setup  ## mypy (strict on plumbing and the domain modules)
	$(PY) -m mypy plumbing services gateway devtools console tests bench

unit: setup  ## the fast tests: no database, no subprocess
	$(PY) -m pytest tests/unit

integration: setup  ## the tests against real Postgres, Redis and service processes
	$(PY) -m pytest tests/integration

test: lint typecheck  ## lint, types, then every test
	$(PY) -m pytest

bench: setup  ## every benchmark beside its baselines → bench/results/REPORT.md and plots (SECONDS per figure, default 10)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,bench]'
	$(PY) bench/report.py --seconds $(or $(SECONDS),10)

soak: setup  ## the chaos soak: load, SIGKILLs and Redis pauses, then the invariant checker (SECONDS=120)
	$(PY) -m devtools.soak --seconds $(or $(SECONDS),120)

check-invariants: setup  ## check every store's invariants (the suite of `make run`, or LOYALTY_POSTGRES_URL)
	$(PY) -m devtools.invariants

k8s: setup  ## regenerate deploy/k8s/base and the overlays' kustomizations from devtools/k8s.py
	$(PY) -m devtools.k8s

proto-lint:  ## buf lint (npm package @bufbuild/buf)
	npx --yes @bufbuild/buf@$(BUF_VERSION) lint

proto-breaking:  ## buf breaking against main (AGAINST=.git#branch=main)
	npx --yes @bufbuild/buf@$(BUF_VERSION) breaking --against '$(or $(AGAINST),.git#branch=main)'

clean:  ## remove the venv, generated code and caches (keeps .loyalty/ data)
	rm -rf $(VENV) gen .pytest_cache .mypy_cache .ruff_cache
