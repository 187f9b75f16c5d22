# criruntime: `make run` starts the daemon, `make test` runs the test suite.
# Each target installs what it needs (Debian packages, the venv, generated protos) and is safe to rerun.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
PROTO := proto/runtime/v1/api.proto
GEN := criruntime/api/runtime/v1/api_pb2.py
ARGS ?=

.PHONY: all deps run test lint proto bench clean

all: deps

$(STAMPS)/apt-%: hack/install-deps.sh
	@mkdir -p $(STAMPS)
	hack/install-deps.sh $*
	@touch $@

$(STAMPS)/venv: pyproject.toml $(STAMPS)/apt-runtime
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

$(GEN): $(PROTO) hack/gen-proto.sh $(STAMPS)/venv
	hack/gen-proto.sh

proto: $(GEN)

deps: $(STAMPS)/venv $(GEN)

run: deps
	hack/install-cni.sh
	$(VENV)/bin/criruntime serve $(ARGS)

test: deps $(STAMPS)/apt-test
	$(PY) -m pytest $(ARGS)

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: deps $(STAMPS)/apt-test $(STAMPS)/apt-bench
	$(PY) -m bench $(ARGS)

clean:
	rm -rf $(VENV) $(STAMPS) criruntime/api/runtime
