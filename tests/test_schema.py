"""The published JSON Schema is current, `stacksim schema` prints it, and bundled scenarios validate."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from stacksim.cli import app
from stacksim.scenario import scenario_json_schema, schema_text

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "docs" / "scenario.schema.json"

runner = CliRunner()
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # Rich colours output when FORCE_COLOR is set


def test_committed_schema_matches_the_code() -> None:
    """docs/scenario.schema.json is exactly what the scenario models produce today."""
    assert SCHEMA_FILE.exists(), (
        "docs/scenario.schema.json is missing: run `make schema` and commit it"
    )
    committed = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    current = json.loads(schema_text())
    assert committed == current, (
        "docs/scenario.schema.json is out of date with stacksim/scenario/schema.py: "
        "run `make schema` and commit the result"
    )


def test_cli_schema_prints_valid_json_schema() -> None:
    """`stacksim schema` writes valid JSON with a "$schema" key, the same as the Python API."""
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert "$schema" in data
    assert data["$schema"].startswith("https://json-schema.org/")
    assert data == scenario_json_schema()
    assert {"pools", "deployments", "workloads", "horizon_s"} <= set(data["properties"])


def _is_sweep(path: Path) -> bool:
    """A sweep, optimize or mix file (built on a base scenario) is not itself a scenario; recognise
    one by name or key."""
    if "sweep" in path.stem.lower() or {"sweeps", "optimize", "mix"} & set(path.parts):  # test_sweep, test_optimize, test_mix
        return True
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return False  # let validation report it
    return isinstance(data, dict) and ("sweep" in data or {"base", "parameters"} <= set(data) or {"base", "knobs"} <= set(data)
                                      or {"base", "deployment", "accelerators"} <= set(data))


BUNDLED = sorted(p for p in (REPO / "scenarios").glob("**/*.yaml") if not _is_sweep(p))


def test_there_are_bundled_scenarios() -> None:
    """The glob below is not empty (the quickstart at least)."""
    assert REPO / "scenarios" / "quickstart.yaml" in BUNDLED


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: str(p.relative_to(REPO / "scenarios")))
def test_bundled_scenario_validates(path: Path) -> None:
    """Every bundled scenario passes `stacksim validate` (exit 0, 'OK' on stdout)."""
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, f"{path}:\n{result.stderr}"
    assert ANSI.sub("", result.stdout).startswith("OK"), result.stdout
