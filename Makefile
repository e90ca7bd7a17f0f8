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

# One pytest on both cores: most tests with services wait on Airflow's scheduling with a core idle.
# tests/conftest.py keeps each module (and the browser package: one Airflow) on one worker.
test: install
	$(BIN)/python -m pytest -n 2

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
