"""Sweep throughput benchmark (not a test): runs per minute with 1 and 2 local workers.

    python benchmarks/bench_sweep.py              # the 1,000-run sweep, 1 then 2 workers
    python benchmarks/bench_sweep.py --runs 200   # the first 200 points only
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    from stacksim.sweep.runner import run_sweep

    spec = yaml.safe_load((HERE / "scenarios" / "sweep_1000.yaml").read_text())
    spec["design"]["n"] = args.runs
    spec["base"] = str((HERE / "scenarios" / spec["base"]).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="stacksim-bench-sweep-"))
    sweep_file = tmp / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(spec))
    # Compile/load the kernels once so neither measurement pays for it.
    warm = dict(spec, design={"kind": "lhs", "n": 1})
    (tmp / "warm.yaml").write_text(yaml.safe_dump(warm))
    run_sweep(tmp / "warm.yaml", tmp / "warm", workers=1)
    base_rate = None
    print(f"{'workers':>7} {'runs':>6} {'ok':>6} {'wall s':>8} {'runs/min':>9} {'speed-up':>8}")
    for w in args.workers:
        t0 = time.perf_counter()
        df = run_sweep(sweep_file, tmp / f"w{w}", workers=w)
        wall = time.perf_counter() - t0
        rate = len(df) / wall * 60
        base_rate = base_rate or rate
        print(f"{w:>7} {len(df):>6} {int((df.status == 'ok').sum()):>6} {wall:>8.1f} {rate:>9.0f} {rate / base_rate:>8.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
