"""Engine speed benchmark (not a test): prints wall seconds, simulated requests per wall second,
peak memory, and the ratio to a bare SimPy timeout loop timed in the same process.

    python benchmarks/bench_engine.py            # every case: Azure trace hour, 1M x 64 replicas, gateway, agents
    python benchmarks/bench_engine.py --quick    # small versions, for a smoke check

Each case runs in its own subprocess so that its peak memory is its own. Numba kernels are
compiled (or loaded from cache) before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = {
    "azure_conv_1h": HERE / "scenarios" / "azure_conv_1h.yaml",
    "synthetic_1m_64x": HERE / "scenarios" / "synthetic_1m_64x.yaml",
    # The layers above the serving core: a gateway over hosted providers (one SimPy process per
    # call) and agent fleets (one per task, their LLM calls made during the run).
    "gateway_starting_fresh": HERE.parent / "scenarios" / "starting-fresh-2026.yaml",
    "agents_2026": HERE.parent / "scenarios" / "agents-2026.yaml",
}


def bare_simpy_us_per_event(n: int = 200_000) -> float:
    """Microseconds per event of a process that only yields timeouts: SimPy's floor."""
    import simpy

    env = simpy.Environment()

    def loop(env: simpy.Environment):  # type: ignore[no-untyped-def]
        while True:
            yield env.timeout(1.0)

    env.process(loop(env))
    t = time.perf_counter()
    env.run(until=n)
    return (time.perf_counter() - t) / n * 1e6


def run_case(path: Path, quick: bool) -> dict[str, float | int | str]:
    from stacksim import load_scenario
    from stacksim.engine.simulation import Simulation
    from stacksim.metrics.summary import build_result

    overrides = {"horizon_s": 60.0, "warmup_s": 0.0} if quick else None
    rs = load_scenario(path, overrides=overrides)
    # Warm the compiled kernels on a short slice of the same scenario.
    Simulation(load_scenario(path, overrides={"horizon_s": 2.0, "warmup_s": 0.0})).run()
    bare = bare_simpy_us_per_event()
    t0 = time.perf_counter()
    sim = Simulation(rs).run()
    t_sim = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = build_result(sim)
    t_res = time.perf_counter() - t1
    n = result.summary["requests"]["arrived"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {
        "case": path.stem,
        "requests": n,
        "completed": result.summary["requests"]["completed"],
        "wall_s": round(t_sim + t_res, 3),
        "simulate_s": round(t_sim, 3),
        "results_s": round(t_res, 3),
        "requests_per_s": round(n / (t_sim + t_res)),
        "peak_rss_mb": round(peak_mb, 1),
        "us_per_request": round((t_sim + t_res) / max(n, 1) * 1e6, 2),
        "bare_simpy_us_per_event": round(bare, 3),
        "ratio_request_to_bare_event": round((t_sim + t_res) / max(n, 1) * 1e6 / bare, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="60 simulated seconds per case")
    ap.add_argument("--case", choices=sorted(CASES), help="run one case in this process")
    ap.add_argument("--json", action="store_true", help="print one JSON object per case")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(CASES[args.case], args.quick)))
        return
    rows = []
    for name in CASES:
        cmd = [sys.executable, __file__, "--case", name] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr}", file=sys.stderr)
            sys.exit(1)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    cols = ["case", "requests", "wall_s", "requests_per_s", "peak_rss_mb", "us_per_request",
            "bare_simpy_us_per_event", "ratio_request_to_bare_event"]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(str(r[c]).rjust(w) for c, w in zip(cols, widths)))


if __name__ == "__main__":
    main()
