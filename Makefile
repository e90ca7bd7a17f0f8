# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit bench up down status clean

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/feedloop demo

# The tests that need no service run in a second pytest beside the ones that do: those mostly wait on
# Airflow's scheduling with one core idle. Their output follows when both are done.
FAST := not integration and not airflow and not browser

test: install
	@mkdir -p test-artifacts; \
	$(BIN)/python -m pytest -m "$(FAST)" > test-artifacts/fast-tests.log 2>&1 & fast=$$!; \
	echo "tests without services: in the background (test-artifacts/fast-tests.log); tests with services:"; \
	$(BIN)/python -m pytest -m "integration or airflow or browser"; services=$$?; \
	wait $$fast; fast_rc=$$?; echo "== tests without services (exit $$fast_rc)"; cat test-artifacts/fast-tests.log; \
	echo "== exit: tests with services $$services, without $$fast_rc"; \
	test $$services -eq 0 && test $$fast_rc -eq 0

test-unit: install
	$(BIN)/python -m pytest tests/unit tests/dags

bench: install
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/validate.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/serve.py

up: install
	$(BIN)/feedloop stack up

down:
	$(BIN)/feedloop stack down

status:
	$(BIN)/feedloop stack status

clean: down
	rm -rf .feedloop
