# One command sets up and runs the quickstart (`make run`); another sets up and tests (`make test`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stacksim-installed

.PHONY: setup run test bench schema calibrate accuracy readme clean

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

# Kernel-level families (2023-2025 tables), then the current engines' family fitted on simulated
# serving runs, with its cross-validation (calibration/REPORT.md).
calibrate: $(STAMP)
	$(BIN)/python -m stacksim.calibration --out calibration
	$(BIN)/python -m stacksim.calibration.accuracy --fit

# Held-out errors of the current engines' family, recomputed (each fold refits; ~30-60 min on 2 cores).
accuracy: $(STAMP)
	$(BIN)/python -m stacksim.calibration.accuracy $(ARGS)

readme: $(STAMP)
	$(BIN)/python docs/readme_check.py

schema: $(STAMP)
	$(BIN)/stacksim schema > docs/scenario.schema.json

clean:
	rm -rf $(VENV) runs .pytest_cache
