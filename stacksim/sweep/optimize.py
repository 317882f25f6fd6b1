"""`stacksim optimize`: the cheapest configuration that meets the constraints.

```yaml
base: ../quickstart.yaml
knobs:                                   # discrete choices, by path (linked paths move together)
  pools.h100.accelerator: [h100-sxm, h200, a100-sxm-80gb]
  "pools.h100.count,deployments.chat.replicas": [[1, 1], [2, 2], [4, 4]]
constraints: {ttft_p99_ms: 500, tpot_p99_ms: 50}   # any headline metric: upper bounds
minimums: {slo_attainment: 0.99}                    # lower bounds
seeds: 2                                 # a candidate must meet the constraints on every seed
capacity: {path: workloads.chat.arrival.rate_per_s, range: [1, 200], tolerance: 0.05}
```

Spend does not need a simulation: it is every pool's accelerators times its price. So the
candidates are sorted by spend and simulated cheapest first; the first that meets every
constraint on every seed is the optimum of the grid (what a brute-force sweep would pick),
after simulating only the candidates that cost no more. Each cheaper candidate is reported with
the reason it failed. Optionally, the optimum's capacity is found by bisection on a traffic path
(the largest value that still meets the constraints).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from stacksim.errors import Problem, ScenarioError
from stacksim.metrics.summary import HOURS_PER_MONTH
from stacksim.scenario import load_scenario_text
from stacksim.scenario.schema import Strict
from stacksim.scenario.schema_limits import RunLimits
from stacksim.scenario.yamlio import is_regular_file, line_of, load_yaml_with_lines, read_text_file
from stacksim.sweep.runner import headline
from stacksim.sweep.spec import apply, check_path, runs_problem


class Capacity(Strict):
    path: str
    range: list[float] = Field(min_length=2, max_length=2)
    tolerance: float = Field(default=0.05, gt=0, lt=1, description="Relative width at which bisection stops.")

    @field_validator("range")
    @classmethod
    def _increasing(cls, v: list[float]) -> list[float]:
        # Bisection stops on the relative width (high - low) / high: it needs 0 < low < high.
        if len(v) == 2 and not 0 < v[0] < v[1]:
            raise ValueError(f"a range is [low, high] with 0 < low < high; got [{v[0]:g}, {v[1]:g}]")
        return v


class OptimizeFile(Strict):
    base: str
    knobs: dict[str, list[Any]] = Field(min_length=1)
    constraints: dict[str, float] = Field(default_factory=dict, description="Upper bounds on headline metrics.")
    minimums: dict[str, float] = Field(default_factory=dict, description="Lower bounds on headline metrics.")
    seeds: int = Field(default=1, ge=1)
    capacity: Capacity | None = Field(default=None, description="Bisection on traffic for the optimum's headroom.")
    limits: RunLimits = Field(default_factory=RunLimits, description="How many runs the search may ask for (max_runs: "
                              "candidates x seeds, counted before any is built).")


@dataclass
class Candidate:
    values: dict[str, Any]
    spend_usd_per_month: float | None = None
    status: str = "pending"  # invalid | fails | meets | not simulated
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)


def _metric_names() -> set[str]:
    fake = {
        "latency_ms": {k: {"p50": 0, "p99": 0} for k in ("ttft", "tpot", "e2e")},
        "requests": {"arrived": 0, "completed": 0, "rejected": 0, "in_flight": 0, "preemptions": 0},
        "throughput": {"requests_per_s": 0, "output_tokens_per_s": 0},
        "deployments": {},
        "slo": {},
        "spend": {"gpu_usd_per_hour": 0, "gpu_usd_per_month": 0},
    }
    return set(headline(fake))


def load_optimize(path: str | Path) -> tuple[OptimizeFile, Path, dict[str, Any]]:
    p = Path(path)
    name = str(path)
    data, lines = load_yaml_with_lines(read_text_file(p, "optimize"), name)
    try:
        spec = OptimizeFile.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(
            [Problem(e["msg"].removeprefix("Value error, "), field=".".join(map(str, e["loc"])), line=line_of(lines, tuple(e["loc"]))) for e in exc.errors(include_url=False)],
            file=name,
        ) from None
    base_path = (p.parent / spec.base).resolve()
    if not is_regular_file(base_path):
        raise ScenarioError([Problem(f"base scenario '{spec.base}' not found", field="base", line=line_of(lines, ("base",)))], file=name)
    base_data, _ = load_yaml_with_lines(read_text_file(base_path, "scenario"), str(base_path))
    probs = []
    names = _metric_names()
    for section in ("constraints", "minimums"):
        for k in getattr(spec, section):
            if k not in names:
                probs.append(Problem(f"unknown metric '{k}'; valid: {', '.join(sorted(names))}", field=f"{section}.{k}", line=line_of(lines, (section, k))))
    if spec.capacity is not None:
        why = check_path(base_data, spec.capacity.path)
        if why:
            probs.append(Problem(why, field="capacity.path", line=line_of(lines, ("capacity", "path"))))
    for knob, vals in spec.knobs.items():
        where = {"field": f"knobs.{knob}", "line": line_of(lines, ("knobs", knob))}
        if not vals:
            probs.append(Problem("no values", **where))
        for one in knob.split(","):
            why = check_path(base_data, one.strip())
            if why:
                probs.append(Problem(why, **where))
    if not spec.constraints and not spec.minimums:
        probs.append(Problem("give at least one constraint (e.g. constraints: {ttft_p99_ms: 500})", field="constraints"))
    if probs:
        raise ScenarioError(probs, file=name)
    sizes = [len(v) for v in spec.knobs.values()]
    too_many = runs_problem(math.prod(sizes) * spec.seeds, spec.limits, f"{' x '.join(f'{n:,}' for n in sizes)} "
                            f"candidates x {spec.seeds:,} seed{'s' if spec.seeds != 1 else ''}", lines)
    if too_many is not None:
        raise ScenarioError([too_many], file=name)
    return spec, base_path, base_data


def _text(base: dict[str, Any], values: dict[str, Any], seed: int) -> str:
    data = apply(base, {k: v for k, v in values.items()})
    data["seed"] = seed
    return yaml.safe_dump(data, sort_keys=False)


def _violations(spec: OptimizeFile, m: dict[str, Any]) -> list[str]:
    out = []
    for k, hi in spec.constraints.items():
        v = m.get(k)
        if v is None or v > hi:
            out.append(f"{k} {v if v is None else round(v, 3)} > {hi:g}")
    for k, lo in spec.minimums.items():
        v = m.get(k)
        if v is None or v < lo:
            out.append(f"{k} {v if v is None else round(v, 4)} < {lo:g}")
    return out


def evaluate(spec: OptimizeFile, base_path: Path, base: dict[str, Any], values: dict[str, Any]) -> tuple[bool, list[str], dict[str, Any]]:
    """Simulate ``values`` on every seed; meets only if every seed meets every constraint."""
    from stacksim.api import run_scenario

    worst: dict[str, Any] = {}
    reasons: list[str] = []
    for seed in range(spec.seeds):
        rs = load_scenario_text(_text(base, values, seed), str(base_path))
        m = headline(run_scenario(rs).summary)
        v = _violations(spec, m)
        if v:
            reasons += [f"seed {seed}: {x}" for x in v]
        for k, x in m.items():
            if isinstance(x, (int, float)) and x is not None:
                worst[k] = max(worst.get(k, x), x) if k not in spec.minimums else min(worst.get(k, x), x)
    return not reasons, reasons, worst


def optimize(path: str | Path) -> dict[str, Any]:
    spec, base_path, base = load_optimize(path)
    names = list(spec.knobs)
    cands = [Candidate(dict(zip(names, combo))) for combo in itertools.product(*spec.knobs.values())]
    for c in cands:
        try:
            rs = load_scenario_text(_text(base, c.values, 0), str(base_path))
        except ScenarioError as exc:
            c.status, c.reason = "invalid", f"{exc.problems[0].field}: {exc.problems[0].message}"
            continue
        per_hour = sum(p.spec.count * p.price_usd_per_gpu_hour for p in rs.pools.values())
        c.spend_usd_per_month = round(per_hour * HOURS_PER_MONTH, 4)
    valid = sorted((c for c in cands if c.status != "invalid"), key=lambda c: c.spend_usd_per_month or 0.0)
    best: Candidate | None = None
    for c in valid:
        if best is not None and (c.spend_usd_per_month or 0) > (best.spend_usd_per_month or 0):
            c.status, c.reason = "not simulated", "costs more than the optimum"
            continue
        ok, reasons, metrics = evaluate(spec, base_path, base, c.values)
        c.metrics = metrics
        if ok:
            c.status = "meets"
            if best is None or metrics.get("ttft_p99_ms", 0) < best.metrics.get("ttft_p99_ms", 0):
                best = c
        else:
            c.status, c.reason = "fails", "; ".join(reasons[:3])
    result: dict[str, Any] = {"spec": spec, "candidates": cands, "best": best, "base_path": base_path, "base": base}
    if best is not None:
        result["scenario_yaml"] = _text(base, best.values, 0)
    return result


def capacity(path: str | Path, values: dict[str, Any], cap: Capacity) -> tuple[float | None, list[tuple[float, bool]]]:
    """Largest value of ``cap.path`` (in ``cap.range``) at which ``values`` still meet the
    constraints, by bisection (assumes more traffic never helps)."""
    spec, base_path, base = load_optimize(path)
    lo, hi = cap.range
    trace: list[tuple[float, bool]] = []

    def meets(x: float) -> bool:
        try:
            ok = evaluate(spec, base_path, base, {**values, cap.path: x})[0]
        except ScenarioError as exc:  # the value itself is invalid there (e.g. a count of 2.5)
            p = exc.problems[0]
            raise ScenarioError([Problem(f"at {cap.path} = {x:g} the optimum is not a valid scenario ({p.field}: "
                                         f"{p.message}); narrow capacity.range", field="capacity.range")],
                                file=str(path)) from None
        trace.append((x, ok))
        return ok

    if not meets(lo):
        return None, trace
    if meets(hi):
        return hi, trace
    while (hi - lo) / hi > cap.tolerance:
        mid = (lo + hi) / 2
        if meets(mid):
            lo = mid
        else:
            hi = mid
    return lo, trace


def write_outputs(res: dict[str, Any], out: Path) -> list[Path]:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in res["candidates"]:
        rows.append({**{f"knob:{k}": str(v) for k, v in c.values.items()}, "spend_usd_per_month": c.spend_usd_per_month,
                     "status": c.status, "reason": c.reason, **{k: c.metrics.get(k) for k in ("ttft_p99_ms", "tpot_p99_ms", "e2e_p99_ms", "slo_attainment")}})
    written = [out / "candidates.csv"]
    pd.DataFrame(rows).sort_values("spend_usd_per_month", na_position="last").to_csv(written[0], index=False)
    if res.get("scenario_yaml"):
        p = out / "optimum.yaml"
        p.write_text(f"# The cheapest configuration meeting the constraints (stacksim optimize).\n# Base: {res['base_path']}\n" + res["scenario_yaml"])
        written.append(p)
    return written

