"""`stacksim compare`: several scenarios over the same seeds, side by side, with uncertainty.

Each scenario runs once per seed (``seed_base .. seed_base + seeds - 1``). For every headline
metric (read from each run's ``summary.json`` dict) the per-seed values give a mean and a
standard deviation per scenario, and each scenario after the first (the baseline) gets its
difference from it. Seed s of every scenario draws from the same random streams, so the runs
are paired by seed and the interval is built on the per-seed differences
``d_s = X_s - A_s`` (a paired design cancels the noise the two runs share):

* a mean-like metric (throughput, spend, SLO attainment, counts): the paired t interval,
  ``mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n)`` (``scipy.stats.ttest_rel(...).confidence_interval``);
* a percentile metric (TTFT / end-to-end / agent-task p50, p90, p99: skewed from seed to seed):
  a percentile bootstrap of ``mean(d)`` over the seeds (``scipy.stats.bootstrap``, a fixed
  resampling seed so the same runs print the same interval); with fewer than ``MIN_SEEDS``
  pairs the paired t interval instead, since so few seeds leave the bootstrap almost no
  distinct resamples.

Only seeds where both runs produced the metric are paired. A difference is significant when its
interval excludes zero. With one pair there is no interval; where every difference is the same
(a spend fixed by the fleet) the difference is exact. With fewer than ``MIN_SEEDS`` pairs the
interval is printed with a warning: see :data:`FEW_SEEDS`. The % change is the difference over the
baseline's mean.

The core imports no plotting and no CLI libraries; ``report/compare_plots.py`` draws the PNGs.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from stacksim.errors import StackSimError
from stacksim.metrics.summary import HOURS_PER_MONTH
from stacksim.scenario.schema_limits import DEFAULT_MAX_RUNS

CONFIDENCE = 0.95
# Below 5 pairs an interval is too unstable to act on: the t quantile is 12.7 at 1 degree of
# freedom, 4.3 at 2 and 3.2 at 3 (2.8 at 4), so one odd seed swings it by several times the
# difference; and n seeds give the bootstrap only C(2n-1, n) distinct resamples (10 at n = 3,
# 126 at n = 5), too few for a 2.5% tail.
MIN_SEEDS = 5
METHOD = (
    "difference = scenario - baseline (the first scenario), mean over seeds of the per-seed differences "
    "(seeds are shared, so runs are paired by seed); 95% interval: paired t (scipy.stats.ttest_rel) for means, "
    "paired bootstrap of the per-seed differences (scipy.stats.bootstrap, percentile) for p50/p90/p99 metrics "
    f"(paired t below {MIN_SEEDS} seeds); "
    "significant (*) when the interval excludes zero; % change = difference / baseline mean"
)
FEW_SEEDS = ("warning: {n} seed{s} per scenario: the intervals (and *) are too unstable to act on below "
             f"{MIN_SEEDS} seeds; rerun with --seeds {MIN_SEEDS} or more")
BOOTSTRAP_RESAMPLES = 9999  # scipy's default
BOOTSTRAP_SEED = 0  # a fixed resampling stream: the same runs print the same interval
SPEND_COMPUTED = (
    f"spend per month: GPUs = summary spend.gpu_usd_per_month (the run's hourly rate x {HOURS_PER_MONTH:g} h); "
    f"API, egress and agent tools = this run's amount x {HOURS_PER_MONTH:g} h / simulated hours (time.end_s); "
    "total = their sum"
)
SPEND_MONTHLY = "spend per month: summary spend.monthly as the run reports it"

# Display order and names of the spend split (summary spend.monthly keys without "_usd").
SPEND_PARTS = {"total": "total", "gpu": "GPUs", "api": "hosted APIs", "egress": "egress", "agent_tools": "agent tools",
               "tools": "tools", "services": "services"}

# Groups keep the table in a fixed order whichever scenario brings a metric first.
GROUPS = ("latency", "agents", "slo", "throughput", "spend", "deprecation", "residency", "requests")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str  # ms, s, share, req/s, tok/s, $/month, $, count
    group: str
    percentile: bool = False  # a per-run percentile (p50/p90/p99): its differences are bootstrapped


def _num(x: Any) -> float | None:
    """A finite number, or None (missing, not a number, bool, NaN)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def extract(summary: dict[str, Any]) -> tuple[dict[str, float], dict[str, Metric], str | None]:
    """The headline metrics of one run: values, their descriptions, and how spend was read
    (None when the run has no spend section)."""
    vals: dict[str, float] = {}
    meta: dict[str, Metric] = {}

    def put(key: str, label: str, unit: str, group: str, v: Any, percentile: bool = False) -> None:
        x = _num(v)
        if x is not None:
            vals[key] = x
            meta[key] = Metric(key, label, unit, group, percentile)

    for m, name in (("ttft", "TTFT"), ("e2e", "end-to-end")):
        for q in ("p50", "p90", "p99"):
            put(f"{m}_{q}_ms", f"{name} {q}", "ms", "latency", _get(summary, "latency_ms", m, q), percentile=True)
    for q in ("p50", "p90"):
        put(f"agent_task_{q}_s", f"agent task {q}", "s", "agents", _get(summary, "agents", "all", "latency_s", q),
            percentile=True)
    put("slo_attainment_all", "SLO attainment, all", "share", "slo", _get(summary, "slo", "attainment_all"))
    att = _get(summary, "slo", "attainment")
    for target, v in (att or {}).items() if isinstance(att, dict) else ():
        put(f"slo_attainment_{target}", f"SLO {str(target).removesuffix('_ms').upper()}", "share", "slo", v)
    put("requests_per_s", "throughput", "req/s", "throughput", _get(summary, "throughput", "requests_per_s"))
    put("output_tokens_per_s", "output tokens", "tok/s", "throughput", _get(summary, "throughput", "output_tokens_per_s"))

    spend_basis = _spend(summary, put)

    overall = _get(summary, "deprecation_risk", "overall")
    if isinstance(overall, dict):
        known = {"p_any_retirement": ("P(any retirement)", "share"), "expected_migration_cost_usd": ("expected migration cost", "$"),
                 # lifecycle/risk.py: the run's spend on the routes' models (this run, not per month)
                 "spend_usd_total": ("spend on the models, this run", "$"),
                 "spend_usd_not_modelled": ("spend not modelled, this run", "$"),
                 "expected_spend_migrating_usd": ("expected spend migrating, this run", "$"),
                 "p90_spend_migrating_usd": ("p90 spend migrating, this run", "$")}
        for k in [*known, *(k for k in overall if k not in known)]:
            unit = "$" if "_usd" in k else "share" if "share" in k or k.startswith("p_") else "count"
            label, unit = known.get(k, (k.replace("_usd", "").replace("_", " "), unit))
            put(f"deprecation_{k}", label, unit, "deprecation", overall.get(k))

    res = _get(summary, "gateway", "residency")
    if isinstance(res, dict):
        put("residency_failed_closed", "residency fail-closed", "count", "residency", res.get("failed_closed"))
        viol = res.get("violations")
        put("residency_violations", "residency violations", "count", "residency", len(viol) if isinstance(viol, list | dict) else viol)
    put("failed_requests", "failed requests", "count", "requests", _get(summary, "requests", "failed"))
    put("rejected_requests", "rejected requests", "count", "requests", _get(summary, "requests", "rejected"))
    return vals, meta, spend_basis


def _spend(summary: dict[str, Any], put: Callable[[str, str, str, str, Any], None]) -> str | None:
    sp = summary.get("spend")
    if not isinstance(sp, dict):
        return None
    monthly = sp.get("monthly")
    if isinstance(monthly, dict) and any(_num(v) is not None for v in monthly.values()):
        order = [f"{p}_usd" for p in SPEND_PARTS]
        keys = sorted((k for k in monthly if _num(monthly[k]) is not None),
                      key=lambda k: (order.index(k) if k in order else len(order), k))
        for k in keys:
            part = k.removesuffix("_usd")
            put(f"spend_{part}_usd_per_month", f"spend {SPEND_PARTS.get(part, part.replace('_', ' '))}", "$/month", "spend", monthly[k])
        why = sp.get("monthly_basis")
        return SPEND_MONTHLY + (f" ({why})" if isinstance(why, str) and why else "")
    end_s = _num(_get(summary, "time", "end_s"))
    scale = HOURS_PER_MONTH / (end_s / 3600.0) if end_s else None
    parts: dict[str, float] = {}
    gpu = _num(sp.get("gpu_usd_per_month"))
    if gpu is not None:
        parts["gpu"] = gpu
    for k in ("api", "egress", "agent_tools"):
        v = _num(sp.get(f"{k}_usd"))
        if v is not None and scale is not None:
            parts[k] = v * scale
    if not parts:
        return None
    put("spend_total_usd_per_month", "spend total", "$/month", "spend", sum(parts.values()))
    for k, v in parts.items():
        put(f"spend_{k}_usd_per_month", f"spend {SPEND_PARTS[k]}", "$/month", "spend", v)
    return SPEND_COMPUTED


def paired(baseline: Sequence[float | None], other: Sequence[float | None], percentile: bool = False,
           confidence: float = CONFIDENCE) -> dict[str, Any]:
    """``other - baseline`` paired by seed (position), with its interval (see the module docstring).

    ``None`` marks a seed whose run lacks the metric; that seed is left out of both sides. The
    returned ``diff`` is the mean of the per-seed differences, ``pct_change`` that over the
    baseline's mean on the same seeds (None when that mean is 0)."""
    pairs = [(a, b) for a, b in zip(baseline, other, strict=True) if a is not None and b is not None]
    a = np.array([p[0] for p in pairs], dtype=float)
    b = np.array([p[1] for p in pairs], dtype=float)
    # n seeds give the bootstrap C(2n-1, n) distinct resamples (3 at n = 2): below MIN_SEEDS its
    # 2.5% tails would be the extreme seeds, an interval far too narrow. The t interval is honest there.
    boot = percentile and len(pairs) >= MIN_SEEDS
    method = "paired bootstrap" if boot else "paired t" + (f" (under {MIN_SEEDS} seeds: too few to bootstrap)" if percentile else "")
    out: dict[str, Any] = {"diff": None, "pct_change": None, "ci_low": None, "ci_high": None, "n_pairs": len(pairs),
                           "method": method, "significant": None}
    if not pairs:
        out["note"] = "no seed where both runs have this metric"
        return out
    d = b - a
    diff = float(d.mean())
    base = float(a.mean())
    out.update(diff=diff, pct_change=diff / abs(base) * 100 if base != 0.0 else None)
    if len(pairs) < 2:
        out["note"] = "interval unavailable: needs at least 2 seeds per scenario"
        return out
    if np.ptp(d) == 0.0:
        # Every seed moves by the same amount (a fleet's GPU spend): the difference is exact.
        out.update(ci_low=diff, ci_high=diff, significant=diff != 0.0, note="no variation over seeds: exact")
        return out
    if boot:
        ci = stats.bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                             method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
    else:
        ci = stats.ttest_rel(b, a).confidence_interval(confidence)
    lo, hi = float(ci.low), float(ci.high)
    out.update(ci_low=lo, ci_high=hi, significant=bool(lo > 0 or hi < 0))
    return out


def _run_one(path: str, seed: int) -> dict[str, Any]:
    """One run (in a worker): its summary, or the error. Never raises."""
    from stacksim.api import run_scenario

    try:
        return {"summary": run_scenario(path, seed=seed).summary}
    except StackSimError as exc:
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one failed run is reported, the others go on
        return {"error": f"{type(exc).__name__}: {exc}"}


def _labels(names: list[str], paths: list[Path]) -> list[str]:
    out: list[str] = []
    for name, p in zip(names, paths):
        base = name if names.count(name) == 1 else f"{name} [{p.name}]"
        label, k = base, 2
        while label in out:
            label, k = f"{base} #{k}", k + 1
        out.append(label)
    return out


def run_jobs(jobs: list[tuple[str, int]], workers: int, progress: Callable[[int, int], None] | None) -> list[dict[str, Any]]:
    """Run (path, seed) jobs on ``workers`` processes; results in job order.

    (The sweep's LocalBackend is tied to sweep files and keeps only its headline row; a
    comparison needs each run's whole summary, so this is the same bounded pool over
    :func:`_run_one`.)"""
    results: list[dict[str, Any]] = [{} for _ in jobs]
    if progress:
        progress(0, len(jobs))
    if workers == 1:
        for i, (p, s) in enumerate(jobs):
            results[i] = _run_one(p, s)
            if progress:
                progress(i + 1, len(jobs))
        return results
    done_n = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending = {pool.submit(_run_one, p, s): i for i, (p, s) in enumerate(jobs[: workers * 2])}
        nxt = len(pending)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                results[pending.pop(f)] = f.result()
                done_n += 1
                if progress:
                    progress(done_n, len(jobs))
                if nxt < len(jobs):
                    pending[pool.submit(_run_one, *jobs[nxt])] = nxt
                    nxt += 1
    return results


def compare(
    paths: Sequence[str | Path],
    seeds: int = 5,
    seed_base: int = 0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Run every scenario on the same seeds and compare each with the first.

    Raises :class:`StackSimError` on bad input (a scenario file the loader rejects, fewer than two
    scenarios, seeds < 1) before anything runs. A run that fails is listed under ``failures`` and
    left out of the statistics.
    """
    from stacksim.scenario import load_scenario

    if len(paths) < 2:
        raise StackSimError(f"compare needs at least two scenario files (the first is the baseline); got {len(paths)}")
    if seeds < 1:
        raise StackSimError(f"--seeds must be >= 1; got {seeds}")
    if seed_base < 0:
        raise StackSimError(f"--seed-base must be >= 0; got {seed_base}")
    if len(paths) * seeds > DEFAULT_MAX_RUNS:  # a sweep's default limits.max_runs (its source is there)
        raise StackSimError(f"--seeds: {len(paths)} scenarios x {seeds:,} seeds is {len(paths) * seeds:,} runs; compare runs "
                            f"at most {DEFAULT_MAX_RUNS:,} (the default run-count limit of a sweep file, where it can be raised)")
    if workers is not None and workers < 1:
        raise StackSimError(f"--workers must be >= 1; got {workers}")
    files = [Path(p) for p in paths]
    names = [load_scenario(p).scenario.name for p in files]  # the loader's message on a bad file
    labels = _labels(names, files)
    seed_list = list(range(seed_base, seed_base + seeds))
    jobs = [(str(p.resolve()), s) for p in files for s in seed_list]
    n_workers = min(len(jobs), workers or os.cpu_count() or 1)
    runs = run_jobs(jobs, n_workers, progress)
    res = compare_runs(labels, seed_list, runs, confidence)
    return {"scenarios": [{"label": lb, "name": n, "path": str(p)} for lb, n, p in zip(labels, names, files)], **res}


def compare_runs(labels: Sequence[str], seed_list: Sequence[int], runs: Sequence[dict[str, Any]],
                 confidence: float = CONFIDENCE) -> dict[str, Any]:
    """The statistics of :func:`compare` over runs already made (the dashboard makes its own):
    ``runs`` holds ``{"summary": ...}`` or ``{"error": ...}`` per scenario and seed, scenario by
    scenario (``labels[0]``'s seeds first, in ``seed_list`` order). ``labels[0]`` is the baseline."""
    labels, seed_list = list(labels), list(seed_list)
    seeds = len(seed_list)
    if len(runs) != len(labels) * seeds:
        raise ValueError(f"{len(runs)} runs for {len(labels)} scenarios x {seeds} seeds")
    values: dict[str, dict[str, list[float | None]]] = {}  # metric -> label -> per-seed
    meta: dict[str, Metric] = {}
    spend_basis: dict[str, str] = {}  # scenario -> how its spend per month was read (its first run)
    failures = []
    for j, r in enumerate(runs):
        label, seed = labels[j // seeds], seed_list[j % seeds]
        if "error" in r:
            failures.append({"scenario": label, "seed": seed, "error": r["error"]})
            continue
        vals, m, basis = extract(r["summary"])
        meta.update({k: v for k, v in m.items() if k not in meta})
        if basis:
            spend_basis.setdefault(label, basis)
        for k, v in vals.items():
            values.setdefault(k, {lb: [None] * seeds for lb in labels})[label][j % seeds] = v

    order = sorted(meta, key=lambda k: GROUPS.index(meta[k].group))  # stable: first-seen within a group
    metrics: dict[str, Any] = {}
    base = labels[0]
    for k in order:
        per: dict[str, Any] = {}
        for lb in labels:
            xs = [v for v in values[k][lb] if v is not None]
            per[lb] = {
                "mean": float(np.mean(xs)) if xs else None,
                "std": float(np.std(xs, ddof=1)) if len(xs) > 1 else None,
                "n": len(xs),
                "values": values[k][lb],
            }
        diffs: dict[str, Any] = {}
        for lb in labels[1:]:
            d = paired(values[k][base], values[k][lb], meta[k].percentile, confidence)
            diffs[lb] = d if d["diff"] is not None else None
        metrics[k] = {"label": meta[k].label, "unit": meta[k].unit, "group": meta[k].group,
                      "percentile": meta[k].percentile, "scenarios": per, "differences": diffs}
    warnings = [FEW_SEEDS.format(n=seeds, s="" if seeds == 1 else "s")] if 1 < seeds < MIN_SEEDS else []
    return {
        "baseline": base,
        "seeds": seed_list,
        "confidence": confidence,
        "method": METHOD if seeds > 1 else "one seed per scenario: confidence intervals are unavailable (use --seeds 2 or more)",
        "warnings": warnings,
        "spend_basis": spend_basis,
        "metrics": metrics,
        "failures": failures,
    }


# ---- presentation helpers shared by the CLI, the CSV and the plots ----------------------------------


def fmt_value(unit: str, x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    sign = "+" if signed else ""
    if unit == "share":
        return f"{x * 100:{sign},.1f}" + (" pp" if signed else "%")
    nd = {"ms": 1, "s": 2, "req/s": 2, "tok/s": 0, "$/month": 0, "$": 0, "count": 1}.get(unit, 2)
    return f"{x:{sign},.{nd}f}"


def fmt_cell(unit: str, stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "-"
    s = fmt_value(unit, stat["mean"])
    if stat["std"] is not None:
        s += f" ± {fmt_value(unit, stat['std']).removesuffix('%')}"
    return s


def fmt_diff(unit: str, d: dict[str, Any] | None) -> str:
    if d is None:
        return "-"
    s = fmt_value(unit, d["diff"], signed=True)
    if d["ci_low"] is None:
        return s + " (no CI)"
    if d.get("note", "").startswith("no variation"):
        return s + (" exact *" if d["significant"] else " exact")
    lo, hi = (fmt_value(unit, d[k], signed=True).removesuffix(" pp") for k in ("ci_low", "ci_high"))
    return f"{s} [{lo}, {hi}]" + (" *" if d["significant"] else "")


def fmt_pct(d: dict[str, Any] | None) -> str:
    """The % change of a difference: +12.3%; '-' where the baseline's mean is 0."""
    if d is None or d.get("pct_change") is None:
        return "-"
    return f"{d['pct_change']:+,.1f}%"


UNIT_LABEL = {"share": "%", "$/month": "$/month", "$": "$"}


def table(res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Column headers and rows of strings: metric, then per scenario its mean ± sd and (after the
    baseline) its difference from the baseline with the interval, and that difference as a %
    change. Spend parts that are zero in every run are left out (the JSON keeps them)."""
    labels = [s["label"] for s in res["scenarios"]]
    cols = ["metric"]
    for i, lb in enumerate(labels):
        cols.append(lb)
        if i:
            cols += [f"{lb} - {labels[0]}", "change" if len(labels) == 2 else f"{lb} change"]
    rows = []
    for key, m in res["metrics"].items():
        if m["group"] == "spend" and key != "spend_total_usd_per_month" and not any(
            v for st in m["scenarios"].values() for v in st["values"]
        ):
            continue  # a spend part that is zero (or missing) in every run: in the JSON only
        row = [f"{m['label']} ({UNIT_LABEL.get(m['unit'], m['unit'])})"]
        for i, lb in enumerate(labels):
            row.append(fmt_cell(m["unit"], m["scenarios"][lb]))
            if i:
                row += [fmt_diff(m["unit"], m["differences"][lb]), fmt_pct(m["differences"][lb])]
        rows.append(row)
    return cols, rows


def basis_lines(res: dict[str, Any]) -> list[str]:
    """How spend per month was read: one line if every scenario's is the same, else one each."""
    b = res["spend_basis"]
    if len(set(b.values())) <= 1:
        return list(set(b.values()))
    return [f"{lb}: {why}" for lb, why in b.items()]


def write_outputs(res: dict[str, Any], out: str | Path, plots: bool = True) -> list[Path]:
    """``compare.json``, ``compare.csv`` (one row per metric and scenario) and, with ``plots``,
    one PNG per metric under ``plots/``."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "compare.json", out / "compare.csv"]
        written[0].write_text(json.dumps(res, indent=2, allow_nan=False) + "\n")
        with written[1].open("w", newline="") as f:
            w = csv.writer(f)
            seeds = res["seeds"]
            w.writerow(["metric", "unit", "scenario", "baseline", "n", "mean", "std", "diff", "pct_change", "ci_low",
                        "ci_high", "significant", "interval", *(f"seed_{s}" for s in seeds)])
            for key, m in res["metrics"].items():
                for s in res["scenarios"]:
                    lb = s["label"]
                    st = m["scenarios"][lb]
                    d = m["differences"].get(lb) or {}
                    w.writerow([key, m["unit"], lb, lb == res["baseline"], st["n"], st["mean"], st["std"],
                                d.get("diff"), d.get("pct_change"), d.get("ci_low"), d.get("ci_high"),
                                d.get("significant"), d.get("method"), *st["values"]])
        if plots:
            from stacksim.report.compare_plots import write_compare_plots

            written += write_compare_plots(res, out / "plots")
    except OSError as exc:
        raise StackSimError(f"cannot write the comparison to '{out}': {exc.strerror or exc}") from None
    return written
