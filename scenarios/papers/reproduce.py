"""Reproduce three papers' headline figures with stacksim and print them beside the published ones.

    python scenarios/papers/reproduce.py                 # all three (about five minutes)
    python scenarios/papers/reproduce.py distserve       # one: splitwise, distserve or melange

Each reproduction loads the scenario files beside this script (``splitwise-*.yaml``,
``distserve-*.yaml``, ``melange-fleet.yaml``), changes only the request rate and the replica
counts, and measures goodput the way the paper does: the highest Poisson rate at which a share of
requests meets the latency targets, found by bisection to 3%. README.md, "Published results,
reproduced", has the table, the sources and what differs from each paper's setup;
tests/test_papers.py checks the tolerances stated there.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from stacksim.engine.simulation import Simulation
from stacksim.metrics.summary import Result, build_result
from stacksim.scenario import load_scenario_text
from stacksim.sweep import mixplan

HERE = Path(__file__).resolve().parent


def load(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((HERE / name).read_text()))


def simulate(sc: dict[str, Any], name: str) -> Result:
    """Run a scenario dict as if it were the file ``name`` here (its trace paths resolve)."""
    rs = load_scenario_text(yaml.safe_dump(sc, sort_keys=False), str(HERE / name))
    return build_result(Simulation(rs).run())


def with_rate(sc: dict[str, Any], total: float, shares: dict[str, float] | None = None) -> dict[str, Any]:
    """A copy with the workloads' Poisson rates summing to ``total`` (split by ``shares``)."""
    out = copy.deepcopy(sc)
    names = list(out["workloads"])
    for w in names:
        share = 1.0 / len(names) if shares is None else shares[w]
        out["workloads"][w]["arrival"] = {"kind": "poisson", "rate_per_s": total * share}
    return out


def admitted(res: Result) -> float:
    """Share of arrivals not rejected (prompt + answer within the model's context)."""
    r = res.summary["requests"]
    return 1.0 - r["rejected"] / max(r["arrived"], 1)


def goodput(meets: Callable[[float], bool], lo: float, hi: float, tol: float = 1.03) -> float:
    """Highest rate (to ``tol``) for which ``meets(rate)``; 0 when even lo/64 fails."""
    return mixplan.highest_rate(meets, lo, hi, tol)


def attained(res: Result, q: float) -> bool:
    return (res.summary["slo"].get("attainment_all") or 0.0) >= q


@dataclass
class Row:
    """One published figure beside stacksim's."""

    paper: str
    setting: str
    published: str
    stacksim: float
    unit: str
    detail: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- Splitwise

# Machine = one DGX (8 GPUs) running one TP8 replica of Llama-2-70B. Price and power per GPU from
# the catalog (accelerators.csv: default_price_usd_per_gpu_hour, the median on-demand price in
# shared/facts/gpu_prices.csv; tdp_w, the datasheet TDP): GPU power only, not the whole DGX.
SPLITWISE_GPUS = {"H": "h100-sxm", "A": "a100-sxm-80gb"}


def _machine(acc_id: str) -> tuple[float, float]:
    from stacksim.catalog import get_accelerator

    acc = get_accelerator(acc_id)
    assert acc.default_price_usd_per_gpu_hour is not None and acc.tdp_w is not None
    return 8 * acc.default_price_usd_per_gpu_hour, 8 * acc.tdp_w / 1000.0  # $/h, kW


def splitwise_design(design: str, prompt: int, token: int, workload: str) -> tuple[str, dict[str, Any]]:
    """``design``: Baseline-H/A (co-located, ``prompt`` machines) or Splitwise-XY."""
    trace = {"coding": "code", "conversation": "conv"}[workload]
    if design.startswith("Baseline"):
        name = f"splitwise-baseline-{design[-4:].lower()}.yaml"
        sc = load(name)
        sc["deployments"]["mixed"]["replicas"] = prompt
    else:
        name = f"splitwise-{design[-2:].lower()}.yaml"
        sc = load(name)
        sc["deployments"]["prompt"]["replicas"] = prompt
        sc["deployments"]["token"]["replicas"] = token
    w = sc["workloads"].pop("coding")
    for k in ("input_tokens", "output_tokens"):
        w[k]["path"] = w[k]["path"].replace("_code.csv", f"_{trace}.csv")
    sc["workloads"][workload] = w
    return name, sc


def splitwise_cost_power(design: str, prompt: int, token: int) -> tuple[float, float]:
    if design.startswith("Baseline"):
        usd, kw = _machine(SPLITWISE_GPUS[design[-4]])
        return prompt * usd, prompt * kw
    pu, pk = _machine(SPLITWISE_GPUS[design[-2]])
    tu, tk = _machine(SPLITWISE_GPUS[design[-1]])
    return prompt * pu + token * tu, prompt * pk + token * tk


def splitwise_slo(workload: str) -> dict[str, float]:
    """Targets as slowdowns over one unloaded DGX-A100 (Splitwise's SLOs are defined that way):
    P90 TTFT within 3x and P90 TPOT within 1.5x of their values at a trickle of requests."""
    name, sc = splitwise_design("Baseline-A100", 1, 0, workload)
    sc["horizon_s"], sc["warmup_s"] = 600, 0
    res = simulate(with_rate(sc, 0.05), name)
    lat = res.summary["latency_ms"]
    return {"ttft_ms": round(3.0 * lat["ttft"]["p90"], 1), "tpot_ms": round(1.5 * lat["tpot"]["p90"], 2)}


def splitwise_goodput(design: str, prompt: int, token: int, workload: str, slo: dict[str, float],
                      horizon_s: float = 180.0) -> float:
    """Admitted req/s at which 90% of requests meet both targets."""
    name, sc = splitwise_design(design, prompt, token, workload)
    sc["slo"] = slo
    sc["horizon_s"], sc["warmup_s"] = horizon_s, horizon_s / 6
    share = [1.0]

    def meets(rate: float) -> bool:
        res = simulate(with_rate(sc, rate), name)
        share[0] = admitted(res)
        return attained(res, 0.9)

    return goodput(meets, 1.0, 4.0) * share[0]


# The designs stacksim compares: Baseline-H100 with 4 machines sets the power and cost budget;
# every design below fits inside both (catalog prices: an A100 machine costs 0.51x and draws
# 0.57x an H100 machine).
SPLITWISE_DESIGNS: list[tuple[str, int, int]] = [
    ("Baseline-H100", 4, 0), ("Baseline-A100", 6, 0),
    ("Splitwise-HH", 1, 3), ("Splitwise-HH", 2, 2),
    ("Splitwise-HH", 3, 1),
    ("Splitwise-HA", 1, 5), ("Splitwise-HA", 2, 3), ("Splitwise-HA", 3, 1),
    ("Splitwise-AA", 2, 4), ("Splitwise-AA", 3, 3),
]


def splitwise(workload: str = "coding", designs: list[tuple[str, int, int]] | None = None,
              horizon_s: float = 180.0, progress: Callable[[str], None] | None = None) -> list[Row]:
    """Throughput per dollar and throughput at the same power and cost as Baseline-H100."""
    slo = splitwise_slo(workload)
    base_usd, base_kw = splitwise_cost_power("Baseline-H100", 4, 0)
    table = []
    for design, p, t in designs or SPLITWISE_DESIGNS:
        usd, kw = splitwise_cost_power(design, p, t)
        assert usd <= base_usd + 1e-9 and kw <= base_kw + 1e-9, (design, p, t)
        g = splitwise_goodput(design, p, t, workload, slo, horizon_s)
        table.append({"design": design, "prompt": p, "token": t, "usd_per_h": round(usd, 2), "kw": round(kw, 2),
                      "goodput": round(g, 3), "per_usd": g / usd, "per_kw": g / kw})
        if progress:
            progress(f"splitwise {workload} {design} {p}P{t}T: {g:.2f} req/s")
    base = next(r for r in table if r["design"] == "Baseline-H100")
    split = [r for r in table if r["design"].startswith("Splitwise")]
    best_usd = max(split, key=lambda r: r["per_usd"])
    best_iso = max(split, key=lambda r: r["goodput"])
    detail = {"slo": slo, "designs": table}
    return [
        Row("Splitwise", f"Llama-2-70B, {workload}: throughput per $ vs Baseline-H100",
            "1.75x (1.4x throughput at 20% lower cost; abstract)", best_usd["per_usd"] / base["per_usd"], "x",
            detail | {"best": best_usd}),
        Row("Splitwise", f"Llama-2-70B, {workload}: throughput at the same power and cost as Baseline-H100",
            "2.35x (abstract)", best_iso["goodput"] / base["goodput"], "x", detail | {"best": best_iso}),
    ]


# --------------------------------------------------------------------------- DistServe


def distserve_goodput_per_gpu(name: str, horizon_s: float = 120.0) -> float:
    """Admitted req/s per GPU at which 90% of requests meet TTFT 200 ms and TPOT 100 ms."""
    sc = load(name)
    sc["horizon_s"], sc["warmup_s"] = horizon_s, horizon_s / 6
    gpus = sum(d["replicas"] * d.get("tensor_parallel", 1) for d in sc["deployments"].values())
    share = [1.0]

    def meets(rate: float) -> bool:
        res = simulate(with_rate(sc, rate), name)
        share[0] = admitted(res)
        return attained(res, 0.9)

    return goodput(meets, 1.0, 4.0) * share[0] / gpus


def distserve_attainment(name: str, per_gpu_rate: float, horizon_s: float = 120.0) -> float:
    """Share of requests meeting both targets at ``per_gpu_rate`` req/s per GPU (one run)."""
    sc = load(name)
    sc["horizon_s"], sc["warmup_s"] = horizon_s, horizon_s / 6
    gpus = sum(d["replicas"] * d.get("tensor_parallel", 1) for d in sc["deployments"].values())
    return float(simulate(with_rate(sc, per_gpu_rate * gpus), name).summary["slo"].get("attainment_all") or 0.0)


# DistServe's own simulator, SLO attainment (%) at 1, 2, 3, 4, 5 req/s per GPU for OPT-13B on
# ShareGPT, TTFT 200 / TPOT 100 ms (LLMServe/DistServe
# simdistserve/benchmarks/figure11-abalation/figure/figure_11a.json): "dist" is the disaggregated
# system, "vllm" co-located vLLM with one GPU per replica (this file's baseline), "vllm++" vLLM
# with its best parallelism.
DISTSERVE_FIG11A = {"dist": [98.3, 89.7, 81.3, 65.3, 49.0], "vllm": [62.0, 49.0, 39.0, 32.0, 19.0],
                    "vllm++": [95.5, 89.5, 81.0, 62.5, 38.0]}


def distserve(horizon_s: float = 120.0, progress: Callable[[str], None] | None = None) -> list[Row]:
    dz = distserve_goodput_per_gpu("distserve-disagg.yaml", horizon_s)
    co = distserve_goodput_per_gpu("distserve-vllm.yaml", horizon_s)
    att_co = distserve_attainment("distserve-vllm.yaml", 1.0, horizon_s)
    att_dz = distserve_attainment("distserve-disagg.yaml", 1.0, horizon_s)
    if progress:
        progress(f"distserve: disaggregated {dz:.3f}, vLLM {co:.3f} req/s per GPU; attainment at 1 req/s/GPU "
                 f"disaggregated {att_dz:.1%}, vLLM {att_co:.1%}")
    detail = {"disaggregated_per_gpu": round(dz, 3), "vllm_per_gpu": round(co, 3),
              "attainment_at_1_per_gpu": {"disaggregated": att_dz, "vllm": att_co}}
    setting = "OPT-13B, ShareGPT-shaped lengths, A100, TTFT 200 / TPOT 100 ms"
    return [
        Row("DistServe", f"{setting} at 90%: goodput per GPU, disaggregated (2P TP2 + 1D) / vLLM (TP1)",
            ">=2x (simulator: 1.56 req/s/GPU disaggregated, README quick start; vLLM TP1 never reaches 90%, "
            "figure_11a.json)", dz / co if co > 0 else math.inf, "x", detail),
        Row("DistServe", f"{setting}: SLO attainment of vLLM (TP1) at 1 req/s per GPU",
            "62% (DistServe simulator, figure_11a.json)", att_co, "share", detail),
        Row("DistServe", f"{setting}: SLO attainment disaggregated at 1 req/s per GPU",
            "98% (DistServe simulator, figure_11a.json)", att_dz, "share", detail),
    ]


# --------------------------------------------------------------------------- Mélange

# Mélange's method is stacksim's `mix` command (stacksim/sweep/mixplan.py, ../mix/melange-mixed.yaml):
# requests bucketed on Mélange's profiling grid, one replica of each type profiled per bucket,
# Mélange's ILP with slice factor 4, both fleets simulated with requests routed by bucket.
MELANGE_MIX = HERE.parent / "mix" / "melange-mixed.yaml"
MELANGE_CATALOG = {"l40s": None, "a100-sxm-80gb": None, "h100-sxm": None}  # catalog prices
# Mélange's own prices, as far as they could be found: the authors' solver example
# (tyler-griggs/melange-release, melange/main.py, gpu_info_example) prices an A10G at $1.01 and an
# A100 at $3.67 per hour, the two types of the paper's Llama-2-7B study (blog plots 1 and 5). The
# paper's L4 and H100 prices were not found in a searchable source, so this run uses those two
# types only. The A10G's catalog row (accelerators.csv) has Baseten's memory figures and a
# third-party catalog's tensor rate (62.5 TFLOPS FP16), the weakest source in the catalog.
MELANGE_PAPER_PRICES = {"a10g": 1.01, "a100-sxm-80gb": 3.67}
MELANGE_RATES = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # checked by simulation
MELANGE_GRID = tuple(float(r) for r in range(1, 33))  # from the ILP alone
# The published savings on the Mixed workload, by TPOT SLO (blog "Experimental Results", plots 11
# and 12: "13-51% cost reduction (120ms SLO) and 4-51% reduction (40ms SLO)").
MELANGE_PUBLISHED = {120.0: "up to 51% (13-51% over rates; blog, Mixed 120 ms)",
                     40.0: "up to 51% (4-51% over rates; blog, Mixed 40 ms)"}
MELANGE_GRID_SIZES = mixplan.MELANGE_EDGES  # melange/profiling/benchmark-launcher.sh


def melange_plan(paper_prices: bool = False, horizon_s: float = 120.0, slo_tpot_ms: float = 120.0,
                 rates: tuple[float, ...] = MELANGE_RATES, check: bool = True) -> mixplan.Plan:
    """The bundled mix file at catalog prices (L40S, A100, H100) or Mélange's (A10G, A100)."""
    accs = MELANGE_PAPER_PRICES if paper_prices else MELANGE_CATALOG
    return mixplan.load_mix(MELANGE_MIX, overrides={"accelerators": dict(accs), "profile_horizon_s": horizon_s,
                                                    "slo": {"tpot_ms": slo_tpot_ms}, "rates": list(rates), "check": check})


def melange(rates: tuple[float, ...] = MELANGE_RATES, horizon_s: float = 120.0, slo_tpot_ms: float = 120.0,
            progress: Callable[[str], None] | None = None, paper_prices: bool = False,
            check: bool = True) -> list[Row]:
    """Cost saving of the cheapest mix over the cheapest single type, Mélange's way (`stacksim
    mix`'s planner) at each rate, and over every whole rate from 1 to 32 req/s from the ILP alone."""
    plan = melange_plan(paper_prices, horizon_s, slo_tpot_ms, rates, check)
    label = "Mélange's prices (A10G $1.01, A100 $3.67)" if paper_prices else "catalog prices (L40S, A100, H100)"
    res = mixplan.run_plan(plan)
    shares = res["shares"]
    per_rate = []
    for r in res["rows"]:
        single, best = r["single"], r["mix"]
        assert single is not None, "no single type serves every bucket"
        att = {"single": r["single_attainment"], "mix": r["mix_attainment"]} if check else {}
        per_rate.append({"rate": r["rate"], "single": single.replicas, "single_usd_per_h": single.usd_per_h,
                         "mix": best.replicas, "mix_usd_per_h": best.usd_per_h, "saving": r["saving"], "attainment": att})
        if progress:
            progress(f"melange {label} {r['rate']:g} req/s: single {single.replicas} ${single.usd_per_h:.2f}/h, "
                     f"mix {best.replicas} ${best.usd_per_h:.2f}/h, saving {r['saving']:.0%}, attainment {att}")
    # Where a saving comes from whole replicas it jumps with the rate: the whole grid of rates
    # from the ILP alone, beside the fleets at ``rates`` checked by simulation.
    grid = {r: mixplan.fleets(plan, shares, r)[2] for r in MELANGE_GRID}
    top = max(r["saving"] for r in per_rate)
    low = min(r["saving"] for r in per_rate)
    g = np.array(list(grid.values()))
    return [Row("Mélange", f"Llama-2-7B, mixed 80/20 short/long, TPOT {slo_tpot_ms:g} ms, {label}: cost saving of the "
                "cheapest mix over the cheapest single GPU type, max over " + "/".join(f"{r:g}" for r in rates)
                + f" req/s (lowest {low:.0%}; every 1 req/s from 1 to 32: median {np.median(g):.0%}, max {g.max():.0%})",
                MELANGE_PUBLISHED.get(slo_tpot_ms, "not published"), top, "share",
                {"shares": shares, "profile": plan.tput, "prices": plan.prices, "per_rate": per_rate, "grid": grid})]


def melange_size_effect(horizon_s: float = 120.0, slo_tpot_ms: float = 120.0,
                        sizes: tuple[int, ...] = MELANGE_GRID_SIZES,
                        progress: Callable[[str], None] | None = None) -> list[Row]:
    """Mélange's blog plot 1: requests per dollar of the A10G against the A100 (Mélange's prices)
    for Llama-2-7B over its profiling grid of (prompt, answer) sizes. The A10G's best advantage
    (published: up to 72% more) and the A100's (published: up to 38% more)."""
    plan = melange_plan(True, horizon_s, slo_tpot_ms)
    ratio = {}
    for i in sizes:
        for o in sizes:
            a, c = (mixplan.profile(plan, g, (i, o)) / plan.prices[g] for g in ("a10g", "a100-sxm-80gb"))
            ratio[(i, o)] = a / c if c > 0 else math.inf
    best, worst = max(ratio, key=ratio.__getitem__), min(ratio, key=ratio.__getitem__)
    if progress:
        progress(f"melange plot 1: A10G / A100 requests per dollar {ratio[worst]:.2f} ({worst}) to {ratio[best]:.2f} ({best})")
    return [Row("Mélange", "Llama-2-7B, A10G ($1.01) against A100 ($3.67), TPOT 120 ms: the A10G's best advantage in "
                f"requests per dollar over the {len(sizes)}x{len(sizes)} size grid (its worst: "
                f"{ratio[worst] - 1:+.0%} at {worst[0]}/{worst[1]}; best at {best[0]}/{best[1]})",
                "up to +72% (small requests); A100 up to 38% ahead (large) (blog, plot 1)",
                ratio[best] - 1.0, "share", {"ratio": ratio})]


# --------------------------------------------------------------------------- runner

PAPERS: dict[str, Callable[..., list[Row]]] = {"splitwise": splitwise, "distserve": distserve, "melange": melange}


def main(argv: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    wanted = argv or list(PAPERS)
    unknown = [w for w in wanted if w not in PAPERS]
    if unknown:
        print(f"unknown paper(s) {', '.join(unknown)}; choose from {', '.join(PAPERS)}", file=sys.stderr)
        return 2
    console = Console()
    rows: list[Row] = []
    with console.status("running") as status:
        for name in wanted:
            def note(msg: str) -> None:
                console.log(msg)
                status.update(msg)
            if name == "splitwise":
                for wl in ("coding", "conversation"):
                    rows += splitwise(wl, progress=note)
            elif name == "melange":
                rows += melange(progress=note)
                rows += melange(progress=note, paper_prices=True)
                rows += melange(progress=note, slo_tpot_ms=40.0)
                rows += melange_size_effect(progress=note)
            else:
                rows += PAPERS[name](progress=note)
    table = Table(title="Published results, reproduced")
    for col in ("paper", "setting", "published", "stacksim"):
        table.add_column(col)
    for r in rows:
        shown = f"{r.stacksim:+.0%}" if r.unit == "share" and r.stacksim < 0 else (
            f"{r.stacksim:.0%}" if r.unit == "share" else f"{r.stacksim:.2f}x")
        table.add_row(r.paper, r.setting, r.published, shown)
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
