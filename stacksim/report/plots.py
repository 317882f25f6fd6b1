"""PNG plots of a result (matplotlib, imported only here so the core stays free of it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from stacksim.metrics.summary import Result


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cdf(ax, values: np.ndarray, label: str) -> None:  # type: ignore[no-untyped-def]
    v = np.sort(values[np.isfinite(values)]) * 1000.0
    if v.size == 0:
        return
    y = np.arange(1, v.size + 1) / v.size
    ax.plot(v, y, label=f"{label} (n={v.size})")


def latency_groups(df: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """One line per thing a client called, covering every served request once: direct requests
    by deployment, disaggregated ones by group, gateway calls by route (the dashboard's CDFs and
    the PNGs draw the same lines)."""
    via = df["via"].to_numpy() if "via" in df else np.full(len(df), "direct", dtype=object)

    def names(col: str) -> list[str]:  # a column only some frames had is no longer categorical after concat
        c = df[col]
        return [str(x) for x in (c.cat.categories if isinstance(c.dtype, pd.CategoricalDtype) else sorted(c.dropna().unique()))]

    groups = [(d, (via == "direct") & (df["deployment"] == d).to_numpy()) for d in names("deployment")]
    if "disaggregated" in df:
        groups += [(f"disaggregated {g}", (via == "disaggregated") & (df["disaggregated"] == g).to_numpy()) for g in names("disaggregated")]
    if "route" in df:
        groups += [(f"route {r}", (via == "gateway") & (df["route"] == r).to_numpy()) for r in names("route")]
    return [(label, sel) for label, sel in groups if sel.any()]


def write_plots(result: Result, out: Path) -> list[Path]:
    plt = _plt()
    written: list[Path] = []
    df = result.requests
    warm = result.summary["time"]["warmup_s"]
    m = (df["status"] == "completed") & (df["arrival_s"] >= warm)
    slo = result.summary["slo"]["targets_ms"]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, col, title, key in (
        (axes[0], "ttft_s", "Time to first token", "ttft_ms"),
        (axes[1], "tpot_s", "Time per output token", "tpot_ms"),
        (axes[2], "e2e_s", "End-to-end latency", "e2e_ms"),
    ):
        for label, sel in latency_groups(df):
            _cdf(ax, df.loc[m.to_numpy() & sel, col].to_numpy(dtype=float), label)
        if slo.get(key):
            ax.axvline(slo[key], color="red", ls="--", lw=1, label=f"SLO {slo[key]:g} ms")
        ax.set_xscale("log")
        ax.set_xlabel("ms (log scale)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{result.summary['scenario']} - latency CDFs (seed {result.summary['seed']}, after {warm:g} s warm-up)")
    fig.tight_layout()
    p = out / "latency_cdf.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    if "outcome" in df:
        written.append(_outcomes_plot(plt, result, out))

    for name, ts in result.timeseries.items():
        fig, axes = plt.subplots(4, 1, figsize=(10, 9), sharex=True)
        panels = (
            ("waiting", "queue length\n(per replica)", None),
            ("running", "running batch\n(per replica)", None),
            ("kv_used", "KV-cache\noccupancy", (0, 1.02)),
            ("busy", "GPU utilisation\n(busy fraction)", (0, 1.02)),
        )
        for ax, (col, label, ylim) in zip(axes, panels):
            ax.plot(ts["t_s"], ts[col], lw=1.2)
            ax.set_ylabel(label)
            if ylim:
                ax.set_ylim(*ylim)
            ax.grid(True, alpha=0.3)
            if warm > 0:
                ax.axvspan(0, warm, color="grey", alpha=0.12)
        axes[-1].set_xlabel("simulated time (s); grey = warm-up")
        d = result.summary["deployments"][name]
        a = d.get("autoscaling")  # autoscaled: replicas vary (and may start at 0)
        n_rep = f"{a['min_replicas']}-{a['max_replicas']} (autoscaled)" if a else d["replicas"]
        fig.suptitle(
            f"deployment '{name}': {d['model']} on {n_rep} x {d['tensor_parallel'] * d['pipeline_parallel'] * d.get('data_parallel', 1)} {d['accelerator']} "
            f"({d['precision']}), mean over replicas"
        )
        fig.tight_layout()
        p = out / f"deployment_{name}_over_time.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written


def _outcomes_plot(plt, result: Result, out: Path) -> Path:  # type: ignore[no-untyped-def]
    """Gateway calls per minute by outcome, stacked, with fault windows shaded."""
    df = result.requests
    g = df[df["via"] == "gateway"]
    end = result.summary["time"]["end_s"]
    width = 60.0 if end >= 600 else max(end / 20.0, 1e-3)
    edges = np.arange(0.0, end + width, width)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    bottom = np.zeros(len(edges) - 1)
    for name in [c for c in g["outcome"].cat.categories if (g["outcome"] == c).any()]:
        h, _ = np.histogram(g.loc[g["outcome"] == name, "arrival_s"], bins=edges)
        ax.bar(edges[:-1], h, width=width, bottom=bottom, align="edge", label=name)
        bottom += h
    for f in result.summary.get("faults", []):
        ax.axvspan(f["start_s"], f["end_s"], color="red", alpha=0.12)
        ax.text(f["start_s"], ax.get_ylim()[1] * 0.95, f" {f['kind']}: {f['target']}", fontsize=8, va="top", color="darkred")
    ax.set_xlabel("arrival time (s); red = fault window")
    ax.set_ylabel(f"gateway calls per {width:g} s")
    ax.set_title(f"{result.summary['scenario']} - gateway outcomes over time (seed {result.summary['seed']})")
    ax.legend(fontsize=8, ncol=4, loc="upper left", bbox_to_anchor=(0, -0.15))
    fig.tight_layout()
    p = out / "gateway_outcomes.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p
