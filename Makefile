# kis-stream: the two commands are `make demo` (main job) and `make test` (whole suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# rustup's cargo (kis_native) and Go (scripts/go-tool) where the machine puts them, even
# when the shell running make did not read a profile that adds them to PATH.
export PATH := $(HOME)/.cargo/bin:/usr/local/go/bin:$(PATH)

.PHONY: all venv fetch tools demo test lint typecheck unit services-up services-down bench clean

all: test

NATIVE_SRC := native/pyproject.toml native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)

$(STAMP): pyproject.toml $(NATIVE_SRC)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps ./native
	@touch $(STAMP)

venv: $(STAMP)

## fetch: download (once, cached) the Kafka and schema-registry jars from Maven Central.
fetch: venv
	$(BIN)/kis-stream services fetch

## tools: build (once, cached in ~/.cache/kis-stream) kustomize and the compose-go checker,
## with which the tests validate k8s/ and docker-compose.yml offline.
tools:
	scripts/go-tool kustomize >/dev/null
	scripts/go-tool compose-check >/dev/null

## demo: the whole pipeline on the embedded simulator, with a live terminal view.
demo: fetch
	$(BIN)/kis-stream demo

## test: lint, type-check, then every test (unit, integration, e2e) against real services.
test: fetch tools lint typecheck
	$(BIN)/python -m pytest

unit: venv tools
	$(BIN)/python -m pytest -m "not kafka and not e2e"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

services-up: fetch
	$(BIN)/kis-stream services up

services-down: venv
	$(BIN)/kis-stream services down

## bench: every benchmark in turn (each prints its figures; see docs/benchmarks.md).
bench: fetch
	$(BIN)/kis-stream bench decode
	$(BIN)/kis-stream bench sim
	$(BIN)/kis-stream bench produce
	$(BIN)/kis-stream bench process

clean: services-down
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache
