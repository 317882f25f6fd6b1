"""Sweep files: a base scenario, the parameters to vary by their path in it, a design, seeds.

```yaml
base: ../quickstart.yaml            # relative to the sweep file
design: {kind: grid}                # grid | random (n) | lhs (n, Latin hypercube)
seeds: 2                            # seeds 0..n-1, or a list
parameters:
  pools.h100.count: [2, 4]                              # a list of values
  deployments.chat.replicas: [2, 4]
  workloads.chat.arrival.rate_per_s: {range: [5, 20], steps: 4}   # numeric range
  "pools.h100.count,deployments.chat.replicas": [[2, 2], [4, 4]]  # linked: moved together
```

A point's value is written at its path in the base scenario's data before validation, so every
sweep point is checked exactly like a scenario file. A path whose containers do not exist in the
base scenario is an error naming it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator
from scipy.stats import qmc

from stacksim.errors import Problem, ScenarioError, clip
from stacksim.scenario import load_scenario_text
from stacksim.scenario.schema import Strict
from stacksim.scenario.schema_limits import RunLimits
from stacksim.scenario.size import sci
from stacksim.scenario.yamlio import is_regular_file, line_of, load_yaml_with_lines, read_text_file


class Range(Strict):
    """Numbers from ``range[0]`` to ``range[1]``: ``steps`` evenly spaced values for a grid, or a
    continuous interval for random and Latin-hypercube designs; ``integer`` rounds them."""

    range: list[float] = Field(min_length=2, max_length=2, description="[low, high]")
    steps: int = Field(default=5, ge=2)
    integer: bool = False
    log: bool = False

    @model_validator(mode="after")
    def _order(self) -> Range:
        lo, hi = self.range
        if hi < lo:
            raise ValueError(f"range must be [low, high]; got [{lo}, {hi}]")
        if self.log and lo <= 0:
            raise ValueError("a log range needs a positive low end")
        return self

    def grid(self) -> list[Any]:
        lo, hi = self.range
        vals = np.geomspace(lo, hi, self.steps) if self.log else np.linspace(lo, hi, self.steps)
        return self._cast(vals)

    def at(self, u: np.ndarray) -> list[Any]:
        """Values at quantiles ``u`` in [0, 1)."""
        lo, hi = self.range
        vals = np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo))) if self.log else lo + u * (hi - lo)
        return self._cast(vals)

    def _cast(self, vals: np.ndarray) -> list[Any]:
        if self.integer:
            return [int(np.rint(v)) for v in vals]
        return [float(round(v, 12)) for v in vals]


Values = list[Any] | Range


class Grid(Strict):
    kind: Literal["grid"]


class RandomDesign(Strict):
    kind: Literal["random"]
    n: int = Field(ge=1)


class Lhs(Strict):
    kind: Literal["lhs"]
    n: int = Field(ge=1)


class SweepFile(Strict):
    base: str = Field(description="The base scenario, relative to the sweep file.")
    design: Annotated[Grid | RandomDesign | Lhs, Field(discriminator="kind")] = Field(default_factory=lambda: Grid(kind="grid"))
    seeds: int | list[int] = Field(default=1, description="n (seeds 0..n-1) or an explicit list.")
    seed: int = Field(default=0, ge=0, description="Seed of the random and Latin-hypercube designs.")
    parameters: dict[str, Values] = Field(min_length=1)
    per_request: bool = Field(default=False, description="Also store every run's requests table.")
    limits: RunLimits = Field(default_factory=RunLimits, description="How many runs the sweep may ask for (max_runs); "
                              "each run's own size is the base scenario's limits:.")

    @field_validator("seeds")
    @classmethod
    def _seed_list(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, list):
            if not v:
                raise ValueError("an empty list runs nothing; give a count (seeds: 2 runs seeds 0 and 1) or a list of "
                                 "seeds >= 0")
            if min(v) < 0:
                raise ValueError(f"a seed is >= 0; got {min(v)}")
            if len(set(v)) < len(v):
                raise ValueError("a seed is listed twice (its runs would be identical); list each seed once")
        return v

    @model_validator(mode="after")
    def _check(self) -> SweepFile:
        for path, v in self.parameters.items():
            if isinstance(v, list) and not v:
                raise ValueError(f"parameter '{path}' has no values")
        if isinstance(self.seeds, int) and self.seeds < 1:
            raise ValueError(f"seeds must be >= 1; got {self.seeds}")
        return self

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def n_points(self) -> int:
        """The design's points, counted without building them (an exact integer, however big)."""
        if isinstance(self.design, Grid):
            return math.prod(v.steps if isinstance(v, Range) else len(v) for v in self.parameters.values())
        return self.design.n

    def n_runs(self) -> int:
        return self.n_points() * (self.seeds if isinstance(self.seeds, int) else len(self.seeds))


@dataclass(frozen=True)
class Run:
    """One simulation of the sweep: a point of the design and a seed."""

    index: int
    point: int
    seed: int
    values: dict[str, Any]

    @property
    def run_id(self) -> str:
        blob = json.dumps({"values": self.values, "seed": self.seed}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Sweep:
    spec: SweepFile
    file: str
    base_path: Path
    base_text: str
    base_data: dict[str, Any]
    points: list[dict[str, Any]]

    def runs(self) -> list[Run]:
        out = []
        for p, values in enumerate(self.points):
            for s in self.spec.seed_list():
                out.append(Run(len(out), p, s, values))
        return out

    def scenario_text(self, values: dict[str, Any], seed: int) -> str:
        import yaml

        data = apply(self.base_data, values)
        data["seed"] = seed
        return yaml.safe_dump(data, sort_keys=False)

    def load(self, run: Run):  # type: ignore[no-untyped-def]
        """The resolved scenario of a run (validated like a file; relative paths from the base)."""
        return load_scenario_text(self.scenario_text(run.values, run.seed), str(self.base_path))


def _split(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for p in path.split("."):
        parts.append(int(p) if p.isdigit() else p)
    return parts


def _assignments(values: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for path, v in values.items():
        if "," in path:  # linked parameters: one value per path
            yield from zip(path.split(","), v)
        else:
            yield path, v


def apply(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with each value written at its dotted path."""
    data = copy.deepcopy(base)
    for path, v in _assignments(values):
        parts = _split(path)
        cur: Any = data
        for p in parts[:-1]:
            cur = cur[p]
        cur[parts[-1]] = v
    return data


def check_path(base: dict[str, Any], path: str) -> str | None:
    """Why ``path`` cannot be set in ``base`` (None if it can): every container must exist."""
    parts = _split(path)
    cur: Any = base
    walked: list[str] = []
    for p in parts[:-1]:
        if isinstance(cur, dict) and p in cur or isinstance(cur, list) and isinstance(p, int) and 0 <= p < len(cur):
            cur = cur[p]
        else:
            here = ".".join(map(str, walked)) or "the top level"
            keys = ", ".join(map(str, cur.keys())) if isinstance(cur, dict) else "none"
            return f"'{p}' does not exist under {here} of the base scenario (there: {keys})"
        walked.append(str(p))
    if not isinstance(cur, dict):
        return f"'{'.'.join(map(str, walked))}' is not a mapping, so '{parts[-1]}' cannot be set in it"
    return None


def expand(spec: SweepFile) -> list[dict[str, Any]]:
    """The design's points, in a fixed order."""
    names = list(spec.parameters)
    if isinstance(spec.design, Grid):
        axes = [v.grid() if isinstance(v, Range) else list(v) for v in spec.parameters.values()]
        mesh = np.array(np.meshgrid(*[np.arange(len(a)) for a in axes], indexing="ij")).reshape(len(axes), -1).T
        return [{n: axes[j][int(i)] for j, (n, i) in enumerate(zip(names, row))} for row in mesh]
    n = spec.design.n
    if isinstance(spec.design, Lhs):
        u = qmc.LatinHypercube(d=len(names), seed=spec.seed).random(n)
    else:
        u = np.random.Generator(np.random.PCG64(spec.seed)).random((n, len(names)))
    points: list[dict[str, Any]] = [{} for _ in range(n)]
    for j, (name, v) in enumerate(spec.parameters.items()):
        col = v.at(u[:, j]) if isinstance(v, Range) else [v[min(int(x * len(v)), len(v) - 1)] for x in u[:, j]]
        for i in range(n):
            points[i][name] = col[i]
    return points


def _design_how(spec: SweepFile) -> str:
    n_seeds = spec.seeds if isinstance(spec.seeds, int) else len(spec.seeds)
    if isinstance(spec.design, Grid):
        sizes = " x ".join(f"{v.steps if isinstance(v, Range) else len(v):,}" for v in spec.parameters.values())
        pts = f"a grid of {sizes} points"
    else:
        pts = f"design.n {spec.design.n:,} points"
    return f"{pts} x {n_seeds:,} seed{'s' if n_seeds != 1 else ''}"


def runs_problem(n: int, limits: RunLimits, how: str, lines: dict[Any, int], field: str = "limits.max_runs") -> Problem | None:
    """The one problem of a sweep, optimize or mix file that asks for more than ``limits.max_runs``
    runs (counted before any is built), or None."""
    if n <= limits.max_runs:
        return None
    return Problem(f"this would run {sci(n)} simulations ({how}); the limit is {limits.max_runs:,}: use fewer "
                   "points or seeds, or raise `limits.max_runs` to go on", field=field,
                   line=next((lines[k] for k in (("limits", "max_runs"), ("design",), ("parameters",)) if k in lines), None))


def _kind(v: Any) -> Any:
    """The type of a parameter value as a results table column sees it (ints and floats alike)."""
    if isinstance(v, bool):
        return "true/false"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "text"
    if isinstance(v, list):
        return tuple(_kind(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((str(k), _kind(x)) for k, x in v.items()))
    return type(v).__name__


def mixed_types(vals: list[Any]) -> str | None:
    """Why a parameter's values cannot share one column of the results table (None if they can):
    they must all be numbers, all text, all true/false (or lists and mappings of the same shape)."""
    kinds = {}
    for v in vals:
        if v is not None:
            kinds.setdefault(repr(_kind(v)), v)
    if len(kinds) <= 1:
        return None
    shown = ", ".join(f"{clip(k.strip(chr(39)))} {clip(repr(v))}" for k, v in list(kinds.items())[:3])
    return (f"values of different types ({shown}); a parameter's values are all numbers, all text or all "
            "true/false, since the results table has one column per parameter")


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; errors name the file, line and field like scenario errors."""
    p = Path(path)
    name = str(path)
    text = read_text_file(p, "sweep")
    data, lines = load_yaml_with_lines(text, name)
    from pydantic import ValidationError

    try:
        spec = SweepFile.model_validate(data)
    except ValidationError as exc:
        probs = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            probs.append(Problem(err["msg"].removeprefix("Value error, "), field=".".join(map(str, loc)), line=line_of(lines, loc)))
        raise ScenarioError(probs, file=name) from None
    base_path = (p.parent / spec.base).resolve()
    if not is_regular_file(base_path):
        raise ScenarioError([Problem(f"base scenario '{spec.base}' not found (looked at {base_path})", field="base", line=line_of(lines, ("base",)))], file=name)
    base_text = read_text_file(base_path, "scenario")
    base_data, _ = load_yaml_with_lines(base_text, str(base_path))
    probs = []
    for param, vals in spec.parameters.items():
        where = {"field": f"parameters.{param}", "line": line_of(lines, ("parameters", param))}
        paths = param.split(",")
        if len(paths) > 1 and (
            isinstance(vals, Range) or not all(isinstance(v, list) and len(v) == len(paths) for v in vals)
        ):
            probs.append(Problem(f"linked parameters need a list of {len(paths)}-element lists (one value per path)", **where))
            continue
        mixed = None if isinstance(vals, Range) else mixed_types(vals)
        if mixed is not None:
            probs.append(Problem(mixed, **where))
            continue
        for one in paths:
            why = check_path(base_data, one.strip())
            if why:
                probs.append(Problem(why, **where))
    if probs:
        raise ScenarioError(probs, file=name)
    too_many = runs_problem(spec.n_runs(), spec.limits, _design_how(spec), lines)
    if too_many is not None:
        raise ScenarioError([too_many], file=name)
    points = expand(spec)
    # Points are not validated here: a point the scenario rejects (a model that does not fit on
    # fewer GPUs) is a legitimate outcome, recorded as a failed run with its message.
    return Sweep(spec, name, base_path, base_text, base_data, points)
