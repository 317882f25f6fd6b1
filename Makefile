# One command sets up and runs the quickstart (`make run`); another sets up and tests (`make test`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stacksim-installed

.PHONY: setup run test bench schema calibrate readme clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/stacksim run scenarios/quickstart.yaml --out runs/quickstart

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py

calibrate: $(STAMP)
	$(BIN)/python -m stacksim.calibration --out calibration

readme: $(STAMP)
	$(BIN)/python docs/readme_check.py

schema: $(STAMP)
	$(BIN)/stacksim schema > docs/scenario.schema.json

clean:
	rm -rf $(VENV) runs .pytest_cache
