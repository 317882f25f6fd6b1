"""PNG plots of a comparison: one per headline metric (matplotlib, imported only here)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any


def write_compare_plots(res: dict[str, Any], out: Path) -> list[Path]:
    """Per metric, each scenario's mean over seeds with its 95% t interval of the mean as an error
    bar, and the per-seed values as faint dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    out.mkdir(parents=True, exist_ok=True)
    labels = [s["label"] for s in res["scenarios"]]
    conf = res["confidence"]
    written: list[Path] = []
    for key, m in res["metrics"].items():
        fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(labels), 3.6))
        for i, lb in enumerate(labels):
            st = m["scenarios"][lb]
            if st["mean"] is None:
                continue
            pts = [v for v in st["values"] if v is not None]
            ax.scatter([i] * len(pts), pts, s=12, alpha=0.35, color="grey", zorder=1)
            half = 0.0
            if st["std"] is not None and st["n"] > 1:
                half = float(stats.t.ppf(0.5 + conf / 2, st["n"] - 1)) * st["std"] / math.sqrt(st["n"])
            ax.errorbar([i], [st["mean"]], yerr=[[half], [half]], fmt="o", capsize=6, color=f"C{i}", zorder=2)
            d = m["differences"].get(lb)
            if d and d.get("significant"):
                ax.annotate("*", (i, st["mean"]), textcoords="offset points", xytext=(8, 4), fontsize=14)
        ax.set_xticks(range(len(labels)), labels, rotation=15 if len(labels) > 3 else 0, fontsize=8)
        ax.set_xlim(-0.5, len(labels) - 0.5)
        ax.set_ylabel(f"{m['label']} ({m['unit']})", fontsize=8)
        ax.set_title(f"{m['label']}: mean over {len(res['seeds'])} seeds, {conf:.0%} t interval of the mean\n"
                     "dots: seeds; *: paired interval of the difference from the baseline excludes 0", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        fig.tight_layout()
        path = out / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written
