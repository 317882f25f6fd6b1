"""`stacksim mix`: the cheapest mix of accelerator types for a deployment's traffic (Mélange).

```yaml
base: ../papers/melange-fleet.yaml       # the scenario: model, engine and traffic
deployment: short                        # the deployment to place on each type (model, precision, tp, engine)
workloads: [short, long]                 # the traffic (default: every workload); shares from their Poisson rates
accelerators: {l40s: null, a100-sxm-80gb: null, h100-sxm: 3.0}   # USD per GPU-hour; null = catalog price
rates: [1, 2, 4, 8, 16, 32]              # total requests/s to size for
slo: {tpot_ms: 120}                      # default: the base scenario's slo
```

For each accelerator type and each request-size bucket (Mélange's grid by default) one replica
is profiled: the highest Poisson rate of requests at the bucket's edges it serves with
``attainment`` of them within the SLO (plus a TTFT stability guard unless the SLO sets TTFT: a
TPOT target alone is met by an overloaded replica). The cheapest mix at each rate is Mélange's
ILP (:mod:`stacksim.sweep.mix`), and so is the cheapest single type; with ``check`` both fleets
are simulated with every request routed to the type its bucket was given.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from pydantic import Field, TypeAdapter, ValidationError, field_validator

from stacksim.errors import Problem, ScenarioError, StackSimError
from stacksim.scenario import load_scenario_text
from stacksim.scenario import schema as S
from stacksim.scenario.schema import Strict
from stacksim.scenario.schema_limits import RunLimits
from stacksim.scenario.yamlio import is_regular_file, line_of, load_yaml_with_lines, read_text_file
from stacksim.sweep import mix
from stacksim.sweep.spec import runs_problem

# Mélange's profiling grid (tyler-griggs/melange-release melange/profiling/benchmark-launcher.sh:
# input and output lengths 25, 100, 250, 500, 1000, 2000). Its workloads fit a 4k context; for
# longer ones the default grid goes on doubling (4000 ... 128000), so a long prompt is profiled
# at most at twice its length; the top edge is the longest request drawn (added per run).
MELANGE_EDGES = (25, 100, 250, 500, 1000, 2000)
DEFAULT_EDGES = MELANGE_EDGES + (4000, 8000, 16000, 32000, 64000, 128000)
STABILITY_TTFT_MS = 5000.0
MIN_PROFILE_REQUESTS = 50  # a profiling run lasts long enough for this many arrivals on average
# The slowest rate a profile tries before calling a bucket unservable: an A10G takes about a
# minute per 2,000 + 2,000-token request of Llama-2-7B, so 1/64 req/s was not low enough.
PROFILE_FLOOR = 1 / 1024
SAMPLE = 20000  # requests drawn to measure the bucket shares


class MixSlo(Strict):
    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)


class MixFile(Strict):
    base: str
    deployment: str = Field(description="The deployment of the base scenario to place on each accelerator type.")
    workloads: list[str] | None = Field(default=None, description="The traffic (default: every workload of the base).")
    accelerators: dict[str, float | None] = Field(min_length=1, description="Catalog id -> USD per GPU-hour (null: catalog price).")
    rates: list[float] = Field(min_length=1, description="Total requests/s to size the fleet for.")
    slo: MixSlo | None = Field(default=None, description="Default: the base scenario's slo.")
    attainment: float = Field(default=0.99, gt=0, le=1)
    input_edges: list[int] = Field(default_factory=lambda: list(DEFAULT_EDGES), min_length=1)
    output_edges: list[int] = Field(default_factory=lambda: list(DEFAULT_EDGES), min_length=1)
    slice_factor: int = Field(default=4, ge=1, le=16)
    profile_horizon_s: float = Field(default=120.0, gt=0)
    check: bool = True
    limits: RunLimits = Field(default_factory=RunLimits, description="How many profiles and checks the plan may ask "
                              "for (max_runs: accelerators x length buckets, plus two checks a rate).")

    @field_validator("input_edges", "output_edges")
    @classmethod
    def _edges_increase(cls, v: list[int]) -> list[int]:
        # Bucket edges are token counts: each bucket is (previous edge, edge], so they must rise from 1.
        if v and (v[0] < 1 or any(b <= a for a, b in itertools.pairwise(v))):
            raise ValueError(f"edges are token counts >= 1 in increasing order, e.g. [25, 100, 250]; got {v}")
        return v


@dataclass
class Plan:
    """A loaded mix file, checked against its base scenario."""

    spec: MixFile
    base: dict[str, Any]
    base_path: Path
    prices: dict[str, float]  # per replica-hour (GPUs per replica x price per GPU-hour)
    shares: dict[str, float]  # workload -> share of requests
    context: int  # the deployment's max_model_len
    gpus_per_replica: int
    in_edges: tuple[int, ...] = ()  # set by bucket_shares (the top edge is the longest sampled request)
    out_edges: tuple[int, ...] = ()
    tput: dict[str, dict[mix.Bucket, float]] = field(default_factory=dict)


def _edges(edges: list[int], top: int) -> tuple[int, ...]:
    """The grid's edges below ``top``, then ``top`` itself (the longest request)."""
    return tuple(sorted({e for e in edges if e < top} | {top}))


def load_mix(path: str | Path, overrides: dict[str, Any] | None = None) -> Plan:
    """Read and check a mix file; errors name the file, line and field (exit code 2).
    ``overrides`` replaces top-level keys before validation."""
    p, name = Path(path), str(path)
    data, lines = load_yaml_with_lines(read_text_file(p, "mix"), name)
    if not isinstance(data, dict):
        raise ScenarioError([Problem("a mix file is a YAML mapping (base, deployment, accelerators, rates)", line=1)], file=name)
    if overrides:
        data = {**data, **overrides}
        lines = {k: v for k, v in lines.items() if not (k and k[0] in overrides)}
    base_rel = data.get("base")
    if not isinstance(base_rel, str):
        raise ScenarioError([Problem("give the scenario to plan for: base: path/to/scenario.yaml (relative to this file)",
                                     field="base", line=line_of(lines, ("base",)))], file=name)
    base_path = (p.parent / base_rel).resolve()
    if not is_regular_file(base_path):
        raise ScenarioError([Problem(f"base scenario '{base_rel}' not found", field="base", line=line_of(lines, ("base",)))], file=name)
    base, _ = load_yaml_with_lines(read_text_file(base_path, "scenario"), str(base_path))
    return plan_for({k: v for k, v in data.items() if k != "base"}, base, base_path, name, lines)


def plan_for(data: dict[str, Any], base: dict[str, Any], base_path: Path, name: str = "<mix>",
             lines: dict[Any, int] | None = None) -> Plan:
    """A plan from mix settings (``data``, a mix file's keys; ``base`` may be left out) over an
    already-read scenario ``base`` whose relative paths resolve next to ``base_path`` (the
    dashboard plans the scenario as edited, not as saved)."""
    lines = lines or {}
    try:
        spec = MixFile.model_validate({"base": str(base_path), **data})
    except ValidationError as exc:
        raise ScenarioError([Problem(e["msg"].removeprefix("Value error, "), field=".".join(map(str, e["loc"])), line=line_of(lines, tuple(e["loc"])))
                             for e in exc.errors(include_url=False)], file=name) from None
    # Counted before any profile: a bucket per pair of edges (and the longest request's), two checks a rate.
    n_acc, n_in, n_out = len(spec.accelerators), len(spec.input_edges) + 1, len(spec.output_edges) + 1
    n_checks = 2 * len(spec.rates) if spec.check else 0
    too_many = runs_problem(n_acc * n_in * n_out + n_checks, spec.limits, f"{n_acc:,} accelerators x {n_in:,} x {n_out:,} "
                            f"length buckets, plus {n_checks:,} checks", lines)
    if too_many is not None:
        raise ScenarioError([too_many], file=name)
    rs = load_scenario_text(yaml.safe_dump(base, sort_keys=False), str(base_path))  # the base must be valid itself
    probs: list[Problem] = []

    def problem(msg: str, *where: str | int) -> None:
        probs.append(Problem(msg, field=".".join(map(str, where)), line=line_of(lines, tuple(where))))

    deps = base.get("deployments") or {}
    if spec.deployment not in deps:
        problem(f"no deployment '{spec.deployment}' in {base_path.name}; valid: {', '.join(deps) or '(none)'}", "deployment")
        raise ScenarioError(probs, file=name)
    wls = base.get("workloads") or {}
    chosen = spec.workloads if spec.workloads is not None else list(wls)
    shares: dict[str, float] = {}
    for w in chosen:
        if w not in wls:
            problem(f"no workload '{w}' in {base_path.name}; valid: {', '.join(wls) or '(none)'}", "workloads")
            continue
        arr = wls[w].get("arrival", {})
        if arr.get("kind") != "poisson":
            problem(f"workload '{w}' has {arr.get('kind')} arrivals; mix weighs workloads by their Poisson "
                    "rate_per_s (give them Poisson arrivals in the base)", "workloads")
            continue
        if wls[w].get("input_tokens", {}).get("kind") == "trace" or wls[w].get("output_tokens", {}).get("kind") == "trace":
            problem(f"workload '{w}' takes its lengths from a trace's rows; use kind: empirical for the same lengths", "workloads")
            continue
        shares[w] = float(arr["rate_per_s"])
    if not chosen:
        problem("the base scenario has no workloads", "workloads")
    from stacksim.catalog import UnknownId, get_accelerator

    d = rs.deployments[spec.deployment].spec
    gpus_per_replica = d.tensor_parallel * d.pipeline_parallel * d.data_parallel
    prices: dict[str, float] = {}
    for acc, price in spec.accelerators.items():
        try:
            row = get_accelerator(acc)
        except UnknownId as exc:
            problem(str(exc), "accelerators", acc)
            continue
        usd = price if price is not None else row.default_price_usd_per_gpu_hour
        if usd is None:
            problem(f"the catalog has no price for '{acc}'; give one (USD per GPU-hour)", "accelerators", acc)
            continue
        if usd <= 0:
            problem("a price must be > 0 (USD per GPU-hour)", "accelerators", acc)
            continue
        prices[acc] = usd * gpus_per_replica
    if any(r <= 0 for r in spec.rates):
        problem("rates must be > 0 (requests/s)", "rates")
    slo = spec.slo or MixSlo.model_validate(base.get("slo") or {})
    if slo.ttft_ms is None and slo.tpot_ms is None and slo.e2e_ms is None:
        problem("give an SLO to size for (slo: {tpot_ms: ...}), here or in the base scenario", "slo")
    if probs:
        raise ScenarioError(probs, file=name)
    spec = spec.model_copy(update={"slo": slo})
    total = sum(shares.values())
    context = rs.deployments[spec.deployment].max_model_len
    plan = Plan(spec, base, base_path, prices, {w: r / total for w, r in shares.items()}, context, gpus_per_replica)
    for acc in prices:  # the deployment must fit on each type (memory, parallelism), said here, not mid-run
        sc = _scenario(plan, {acc: 1}, spec.profile_horizon_s)
        sc["workloads"] = {"w": {"target": acc, "arrival": {"kind": "poisson", "rate_per_s": 1.0},
                                 "input_tokens": {"kind": "fixed", "value": 1}, "output_tokens": {"kind": "fixed", "value": 1}}}
        try:
            load_scenario_text(yaml.safe_dump(sc, sort_keys=False), str(base_path))
        except ScenarioError as exc:
            problem(f"deployment '{spec.deployment}' on {acc}: " + "; ".join(x.message for x in exc.problems), "accelerators", acc)
    if probs:
        raise ScenarioError(probs, file=name)
    return plan


def requests(plan: Plan, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, answer) lengths of ``n`` requests of the plan's traffic, drawn by stacksim's own
    samplers in the workloads' shares; answers cut to the context like the engine does."""
    from stacksim.workload.lengths import LENGTHS

    rng, length = np.random.default_rng(seed), TypeAdapter(S.Length)
    names = list(plan.shares)
    which = rng.choice(len(names), size=n, p=list(plan.shares.values()))
    inp, out = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for k, w in enumerate(names):
        idx = np.flatnonzero(which == k)
        for col, key in ((inp, "input_tokens"), (out, "output_tokens")):
            spec = length.validate_python(plan.base["workloads"][w][key])
            extra = {"path": str((plan.base_path.parent / spec.path).resolve()), "which": key.split("_")[0]} if spec.kind == "empirical" else {}
            col[idx] = LENGTHS[spec.kind](spec, rng, idx.size, **extra)
    inp = np.minimum(inp, plan.context - 1)
    return inp, np.maximum(np.minimum(out, plan.context - inp), 1)


def bucket_shares(plan: Plan, seed: int | None = None) -> dict[mix.Bucket, float]:
    """Share of the traffic's requests per (prompt, answer) bucket, from a large sample; the top
    edges are the longest prompt and answer drawn, so every bucket's profile bounds it."""
    inp, out = requests(plan, SAMPLE, plan.base.get("seed", 0) if seed is None else seed)
    plan.in_edges = _edges(plan.spec.input_edges, int(inp.max()))
    plan.out_edges = _edges(plan.spec.output_edges, int(out.max()))
    return mix.bucket_shares(inp, out, plan.in_edges, plan.out_edges)


def _scenario(plan: Plan, accs: dict[str, int], horizon_s: float) -> dict[str, Any]:
    """The base reduced to the deployment on ``accs`` ({accelerator: replicas}), no traffic yet."""
    sc = {k: copy.deepcopy(v) for k, v in plan.base.items() if k in ("name", "seed", "models")}
    tmpl = copy.deepcopy(plan.base["deployments"][plan.spec.deployment])
    tmpl.pop("autoscaling", None)  # a fleet of fixed size per type is what is being sized
    # Prices live in the plan (per replica); the pools' own are placeholders.
    sc.update(horizon_s=horizon_s, warmup_s=horizon_s / 6, drain=True, workloads={},
              pools={a: {"accelerator": a, "count": plan.gpus_per_replica * max(1, n), "price_usd_per_gpu_hour": 1.0}
                     for a, n in accs.items()},
              deployments={a: {**tmpl, "pool": a, "replicas": n} for a, n in accs.items()})
    slo = plan.spec.slo
    assert slo is not None
    sc["slo"] = {k: v for k, v in slo.model_dump().items() if v is not None}
    if slo.ttft_ms is None:
        sc["slo"]["ttft_ms"] = STABILITY_TTFT_MS
    return sc


def _attainment(sc: dict[str, Any], plan: Plan) -> float:
    from stacksim.engine.simulation import Simulation
    from stacksim.metrics.summary import build_result

    rs = load_scenario_text(yaml.safe_dump(sc, sort_keys=False), str(plan.base_path))
    return float(build_result(Simulation(rs).run()).summary["slo"].get("attainment_all") or 0.0)


def highest_rate(meets: Callable[[float], bool], lo: float = 1.0, hi: float = 4.0, tol: float = 1.03,
                 floor: float | None = None) -> float:
    """Highest rate (to ``tol``) for which ``meets(rate)``, by doubling from [lo, hi] and then
    bisection on a log scale; 0 when even ``floor`` (default lo/64) fails."""
    floor = lo / 64 if floor is None else floor
    while not meets(lo):
        lo, hi = lo / 2, lo
        if lo < floor:
            return 0.0
    while meets(hi):
        lo, hi = hi, hi * 2
    while hi / lo > tol:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if meets(mid) else (lo, mid)
    return lo


def profile(plan: Plan, acc: str, bucket: mix.Bucket) -> float:
    """Requests/s one replica on ``acc`` serves of requests at ``bucket``'s edges within the SLO."""
    i = min(bucket[0], plan.context - 1)
    o = max(1, min(bucket[1], plan.context - i))

    def meets(rate: float) -> bool:
        # At least MIN_PROFILE_REQUESTS arrivals on average: a slow rate runs longer, not emptier.
        sc = _scenario(plan, {acc: 1}, max(plan.spec.profile_horizon_s, MIN_PROFILE_REQUESTS / rate))
        sc["workloads"] = {"w": {"target": acc, "arrival": {"kind": "poisson", "rate_per_s": rate},
                                 "input_tokens": {"kind": "fixed", "value": i}, "output_tokens": {"kind": "fixed", "value": o}}}
        return _attainment(sc, plan) >= plan.spec.attainment

    return highest_rate(meets, floor=PROFILE_FLOOR)


def check(plan: Plan, alloc: mix.Allocation, rate: float, horizon_s: float | None = None, seed: int = 1) -> float:
    """SLO attainment of the fleet ``alloc`` at ``rate`` req/s: Poisson arrivals of the plan's
    traffic, each request routed to a type its bucket was given (a sliced bucket's requests split
    at random in its slices' shares), each type's replicas behind their own balancer."""
    horizon_s = horizon_s or plan.spec.profile_horizon_s
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(rate * horizon_s))
    t = np.sort(rng.uniform(0.0, horizon_s, n))
    inp, out = requests(plan, n, seed + 1)
    bi, bo = mix.bucket_of(inp, plan.in_edges), mix.bucket_of(out, plan.out_edges)
    to = np.empty(n, dtype=object)
    # A bucket the planning sample never drew goes to the type with the most replicas.
    fallback = {max(alloc.replicas, key=alloc.replicas.__getitem__): 1.0}
    for k in range(n):
        shares = alloc.assign.get((plan.in_edges[bi[k]], plan.out_edges[bo[k]]), fallback)
        names = list(shares)
        to[k] = names[0] if len(names) == 1 else names[rng.choice(len(names), p=list(shares.values()))]
    sc = _scenario(plan, alloc.replicas, horizon_s)
    start = np.datetime64("2024-01-01T00:00:00")
    with tempfile.TemporaryDirectory() as tmp:
        for a in alloc.replicas:
            mine = to == a
            if not mine.any():
                continue
            path = Path(tmp) / f"{a}.csv"
            pd.DataFrame({"TIMESTAMP": (start + (t[mine] * 1e6).astype("timedelta64[us]")).astype(str),
                          "ContextTokens": inp[mine], "GeneratedTokens": out[mine]}).to_csv(path, index=False)
            sc["workloads"][a] = {"target": a, "arrival": {"kind": "trace", "path": str(path), "format": "azure"},
                                  "input_tokens": {"kind": "trace"}, "output_tokens": {"kind": "trace"}}
        return _attainment(sc, plan)


def profiles(plan: Plan, buckets: list[mix.Bucket], workers: int = 1,
             step: Callable[[], None] | None = None) -> dict[str, dict[mix.Bucket, float]]:
    """Every accelerator type's profile on every bucket, on ``workers`` processes (each profile
    is its own deterministic bisection, so the result does not depend on the number)."""
    jobs = [(a, b) for a in plan.prices for b in buckets]
    out: dict[str, dict[mix.Bucket, float]] = {a: {} for a in plan.prices}
    if workers <= 1 or len(jobs) < 2:
        for a, b in jobs:
            out[a][b] = profile(plan, a, b)
            if step:
                step()
        return out
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from stacksim.sweep.runner import pool_context

    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=pool_context()) as pool:
        futs = {pool.submit(profile, plan, a, b): (a, b) for a, b in jobs}
        for f in as_completed(futs):
            a, b = futs[f]
            out[a][b] = f.result()
            if step:
                step()
    return {a: {b: out[a][b] for b in buckets} for a in plan.prices}  # in the plan's order


def fleets(plan: Plan, shares: dict[mix.Bucket, float], rate: float) -> tuple[mix.Allocation | None, mix.Allocation, float | None]:
    """At ``rate`` req/s (from the profiles in ``plan.tput``): the cheapest single-type fleet (None
    if no type serves every bucket), the cheapest mix, and the mix's saving over the single type."""
    rate_of = {b: rate * s for b, s in shares.items()}
    single = mix.cheapest_single(rate_of, plan.tput, plan.prices)
    best = mix.cheapest_mix(rate_of, plan.tput, plan.prices, plan.spec.slice_factor)
    return single, best, None if single is None else 1.0 - best.usd_per_h / single.usd_per_h


def run_mix(path: str | Path, progress: Callable[[int, int], None] | None = None, workers: int | None = None) -> dict[str, Any]:
    """:func:`run_plan` of a mix file."""
    return run_plan(load_mix(path), progress, workers)


def run_plan(plan: Plan, progress: Callable[[int, int], None] | None = None, workers: int | None = None) -> dict[str, Any]:
    """Profile (on ``workers`` processes, default one per core), allocate at every rate, and
    (``check``) simulate both fleets; ``progress(done, total)`` after each profile and check."""
    shares = bucket_shares(plan)
    total = len(plan.prices) * len(shares) + (2 * len(plan.spec.rates) if plan.spec.check else 0)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    plan.tput = profiles(plan, list(shares), workers if workers is not None else (os.cpu_count() or 1), step)
    unserved = [b for b in shares if all(plan.tput[a][b] <= 0 for a in plan.prices)]
    if unserved:
        worst = max(unserved, key=shares.__getitem__)
        raise StackSimError(
            f"no accelerator type serves requests of up to {worst[0]:,} prompt and {worst[1]:,} answer tokens within the SLO "
            f"({len(unserved)} bucket(s), {sum(shares[b] for b in unserved):.2%} of the traffic), not even at 1/1024 req/s: "
            "add a larger type (or more GPUs per replica), relax the SLO, or cap the workload's lengths")
    rows = []
    for rate in plan.spec.rates:
        single, best, saving = fleets(plan, shares, rate)
        row: dict[str, Any] = {"rate": rate, "mix": best, "single": single, "saving": saving}
        if plan.spec.check:
            row["mix_attainment"] = check(plan, best, rate)
            step()
            row["single_attainment"] = None if single is None else check(plan, single, rate)
            step()
        rows.append(row)
    return {"plan": plan, "shares": shares, "rows": rows}


def write_outputs(res: dict[str, Any], out: Path) -> list[Path]:
    """mix.json (profile, allocations, checks), profile.csv and cost_vs_rate.png."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    plan, shares = res["plan"], res["shares"]
    prof = pd.DataFrame([{"input_le": b[0], "output_le": b[1], "share": s, "accelerator": a, "requests_per_s": plan.tput[a][b],
                          "requests_per_usd_hour": plan.tput[a][b] / plan.prices[a]} for b, s in shares.items() for a in plan.tput])
    prof.to_csv(out / "profile.csv", index=False)

    def alloc(a: mix.Allocation | None) -> dict[str, Any] | None:
        if a is None:
            return None
        return {"replicas": a.replicas, "usd_per_h": a.usd_per_h,
                "assign": {f"{b[0]}/{b[1]}": v for b, v in a.assign.items()}}

    doc = {"base": str(plan.base_path), "deployment": plan.spec.deployment, "price_usd_per_replica_hour": plan.prices,
           "slo": plan.spec.slo.model_dump() if plan.spec.slo else None, "attainment": plan.spec.attainment,
           "workload_shares": plan.shares, "method": "Mélange (Griggs et al., 2024): bucketed profiles + cost-aware bin-packing ILP",
           "rows": [{**{k: v for k, v in r.items() if k not in ("mix", "single")}, "mix": alloc(r["mix"]), "single": alloc(r["single"])}
                    for r in res["rows"]]}
    (out / "mix.json").write_text(json.dumps(doc, indent=1))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    rates = [r["rate"] for r in res["rows"]]
    ax.plot(rates, [r["mix"].usd_per_h for r in res["rows"]], "o-", label="cheapest mix")
    ax.plot(rates, [r["single"].usd_per_h if r["single"] else np.nan for r in res["rows"]], "s--", label="cheapest single type")
    ax.set_xlabel("requests / s")
    ax.set_ylabel("USD / hour")
    ax.set_title(f"{plan.spec.deployment}: fleet cost by request rate")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "cost_vs_rate.png", dpi=120)
    plt.close(fig)
    return [out / "mix.json", out / "profile.csv", out / "cost_vs_rate.png"]
