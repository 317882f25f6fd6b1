"""`stacksim sweep report`: the best points, each metric's sensitivity to each parameter, plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

METRICS = ("ttft_p99_ms", "tpot_p99_ms", "e2e_p99_ms", "output_tokens_per_s", "spend_usd_per_month", "utilisation")
LOWER_IS_BETTER = {"ttft_p99_ms": True, "tpot_p99_ms": True, "e2e_p99_ms": True, "output_tokens_per_s": False,
                   "spend_usd_per_month": True, "utilisation": False}


def params_of(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("param:")]


def by_point(df: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of each point's metrics (successful runs only)."""
    ok = df[df["status"] == "ok"]
    cols = params_of(df)
    if ok.empty or not set(METRICS) <= set(ok.columns):  # every run failed: nothing to average
        return pd.DataFrame(columns=["point", *cols, *METRICS, "seeds"])
    return ok.groupby("point", as_index=False).agg({**{c: "first" for c in cols}, **{m: "mean" for m in METRICS}, "seed": "count"}).rename(columns={"seed": "seeds"})


def sensitivity(df: pd.DataFrame) -> pd.DataFrame:
    """Per parameter and metric: Spearman rank correlation over successful runs, and the swing
    (max - min of the metric's mean at each value of the parameter, relative to the overall mean)."""
    ok = df[df["status"] == "ok"]
    rows = []
    if ok.empty or not set(METRICS) <= set(ok.columns):
        return pd.DataFrame(columns=["parameter", "metric", "spearman", "swing"])
    for p in params_of(df):
        x = ok[p]
        if x.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
            x = x.map(lambda v: ",".join(map(str, v)))  # linked parameters: one label per combination
        numeric = pd.api.types.is_numeric_dtype(x)
        for m in METRICS:
            y = ok[m].astype(float)
            if y.isna().all() or x.nunique() < 2:
                continue
            rho = float(spearmanr(x, y).statistic) if numeric and y.nunique() > 1 else float("nan")
            means = y.groupby(x).mean()
            swing = float((means.max() - means.min()) / abs(y.mean())) if y.mean() else float("nan")
            rows.append({"parameter": p.removeprefix("param:"), "metric": m, "spearman": round(rho, 3), "swing": round(swing, 3)})
    return pd.DataFrame(rows)


def pareto(points: pd.DataFrame, x: str = "spend_usd_per_month", y: str = "ttft_p99_ms") -> pd.DataFrame:
    """Points no other point beats on both spend and p99 TTFT."""
    pts = points.dropna(subset=[x, y]).astype({x: float, y: float}).sort_values([x, y])
    keep, best = [], np.inf
    for i, r in pts.iterrows():
        if r[y] < best:
            keep.append(i)
            best = r[y]
    return pts.loc[keep]


def report(out: str | Path) -> dict[str, Any]:
    """Compute the report of a results folder and write its plots; returns what to print."""
    from stacksim.sweep.runner import load_results

    out = Path(out)
    df = load_results(out)  # a damaged folder: StackSimError naming the part
    if df.empty:
        raise FileNotFoundError(f"no results under {out / 'runs'}")
    pts = by_point(df)
    sens = sensitivity(df)
    front = pareto(pts)
    plots = _plots(out, df, pts, front)
    failed = df[df["status"] != "ok"]
    return {"runs": len(df), "failed": len(failed), "failures": failed[["run_index", "error"]].head(5),
            "points": pts, "sensitivity": sens, "pareto": front, "plots": plots}


def pareto_figure(pts: pd.DataFrame, front: pd.DataFrame):  # type: ignore[no-untyped-def]
    """Spend against p99 TTFT for every point (mean over seeds), the Pareto front in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(pts["spend_usd_per_month"], pts["ttft_p99_ms"], s=18, alpha=0.6, label="points (mean over seeds)")
    ax.plot(front["spend_usd_per_month"], front["ttft_p99_ms"], "r-o", ms=4, label="Pareto front")
    ax.set_xlabel("GPU spend, USD per month")
    ax.set_ylabel("p99 TTFT, ms")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def _plots(out: Path, df: pd.DataFrame, pts: pd.DataFrame, front: pd.DataFrame) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "plots").mkdir(exist_ok=True)
    written = []
    ok = df[df["status"] == "ok"]
    params = params_of(df)
    if params and not ok.empty and set(METRICS) <= set(ok.columns):
        fig, axes = plt.subplots(len(METRICS), len(params), figsize=(4.2 * len(params), 2.6 * len(METRICS)), squeeze=False)
        for j, p in enumerate(params):
            for i, m in enumerate(METRICS):
                ax = axes[i][j]
                ax.scatter(ok[p].astype(str) if not pd.api.types.is_numeric_dtype(ok[p]) else ok[p], ok[m], s=10, alpha=0.6)
                if i == len(METRICS) - 1:
                    ax.set_xlabel(p.removeprefix("param:"), fontsize=8)
                if j == 0:
                    ax.set_ylabel(m, fontsize=8)
                ax.grid(True, alpha=0.3)
        fig.suptitle("metric vs parameter (every successful run)")
        fig.tight_layout()
        path = out / "plots" / "metric_vs_parameter.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    fig = pareto_figure(pts, front)
    path = out / "plots" / "pareto_spend_vs_p99_ttft.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written
