"""stacksim dashboard: explore one scenario without writing YAML by hand.

    streamlit run dashboard/app.py        (or: stacksim dashboard)

A thin client of the Python API: it edits a scenario's data, validates it with the same loader
as the CLI (same messages), runs it with ``run_scenario`` (cached by the scenario text and
seed), and shows the result. Nothing here knows how the simulation works.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import streamlit as st
import yaml

import stacksim.compare as cmp
from stacksim import ScenarioError, load_scenario_text, run_scenario
from stacksim.catalog import accelerators, models
from stacksim.errors import StackSimError
from stacksim.report.plots import latency_groups
from stacksim.serving.capacity import capacity_message

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"
MAX_UPLOAD_BYTES = 1024 * 1024
PRECISIONS = ["bf16", "fp16", "fp8", "int8", "int4_awq", "int4_gptq", "fp4", "mxfp4", "nvfp4"]
BALANCERS = ["round_robin", "random", "least_outstanding", "shared_queue", "lora_affinity"]


def bundled() -> dict[str, Path]:
    return {p.name: p for p in sorted(SCENARIOS.glob("*.yaml"))}


@st.cache_resource
def _results() -> dict[str, dict[str, Any]]:
    """Results by scenario hash (sha256 of the scenario text) and seed, shared by sessions."""
    return {}


def simulate(text: str, name: str, seed: int) -> dict[str, Any]:
    """Run a scenario, or return the cached result of the same text and seed. A progress bar
    over simulated time shows while a new run goes."""
    key = f"{hashlib.sha256(text.encode()).hexdigest()}:{seed}"
    cache = _results()
    if key in cache:
        return cache[key]
    bar = st.progress(0.0, text="simulating...")

    def progress(now: float, horizon: float) -> None:
        bar.progress(min(1.0, now / horizon), text=f"simulating... {now:,.0f} / {horizon:,.0f} simulated s")

    try:
        res = run_scenario(load_scenario_text(text, name), seed=seed, progress=progress)
    finally:
        bar.empty()
    if len(cache) > 32:
        cache.pop(next(iter(cache)))
    cache[key] = {"summary": res.summary, "requests": res.requests, "timeseries": res.timeseries, "resolved": res.resolved_yaml}
    return cache[key]


def load_text(choice: str) -> tuple[str, str]:
    if choice == "upload":
        up = st.session_state.get("upload")
        if up is None:
            return "", "upload.yaml"
        if up.size > MAX_UPLOAD_BYTES:
            st.error(f"{up.name} is larger than {MAX_UPLOAD_BYTES // 1024} KiB; that is not a scenario file.")
            st.stop()
        return up.getvalue().decode("utf-8", errors="replace"), up.name
    path = bundled()[choice]
    return path.read_text(encoding="utf-8"), str(path)  # the full path: relative trace paths resolve


KNOB_KEYS = ("acc", "count", "model", "prec", "replicas", "tp", "lb", "rate")


def knobs(data: dict[str, Any]) -> dict[str, Any]:
    """Sidebar controls for the main knobs; returns the edited data."""
    sb = st.sidebar
    accs = sorted(accelerators())
    mods = sorted(models())
    for name, pool in data.get("pools", {}).items():
        sb.markdown(f"**pool `{name}`**")
        if pool.get("accelerator") in accs:
            pool["accelerator"] = sb.selectbox("accelerator", accs, index=accs.index(pool["accelerator"]), key=f"acc:{name}")
        pool["count"] = int(sb.number_input("accelerators", 1, 4096, int(pool.get("count", 1)), key=f"count:{name}"))
    for name, dep in data.get("deployments", {}).items():
        sb.markdown(f"**deployment `{name}`**")
        if dep.get("model") in mods:
            dep["model"] = sb.selectbox("model", mods, index=mods.index(dep["model"]), key=f"model:{name}")
        dep["precision"] = sb.selectbox("precision", PRECISIONS, index=PRECISIONS.index(dep.get("precision", "bf16")), key=f"prec:{name}")
        dep["replicas"] = int(sb.number_input("replicas", 0 if dep.get("autoscaling") else 1, 4096, int(dep.get("replicas", 1)),
                                              key=f"replicas:{name}"))
        dep["tensor_parallel"] = int(sb.selectbox("tensor parallel", [1, 2, 4, 8], index=[1, 2, 4, 8].index(int(dep.get("tensor_parallel", 1))) if int(dep.get("tensor_parallel", 1)) in (1, 2, 4, 8) else 0, key=f"tp:{name}"))
        lb = dep.get("load_balancer", {}).get("kind", "round_robin")
        dep["load_balancer"] = {"kind": sb.selectbox("load balancer", BALANCERS, index=BALANCERS.index(lb), key=f"lb:{name}")}
    for name, w in data.get("workloads", {}).items():
        arr = w.get("arrival", {})
        if "rate_per_s" in arr:
            sb.markdown(f"**workload `{name}`**")
            arr["rate_per_s"] = float(sb.number_input("requests per second", 0.01, 1e6, float(arr["rate_per_s"]), key=f"rate:{name}"))
    return data


PERCENT = ("busy", "MFU", "MBU", "mean KV used", "saving", "SLO met (mix)", "cached input", "P(lose primary)", "P(lose all)",
           "rejected share", "SLO attainment")


def table(df: pd.DataFrame, index: str | None = None) -> None:
    """A table as people read it: named columns, fractions as percentages (27.8%), and no row
    numbers; ``index`` names the column the row labels go in (none: a RangeIndex, dropped)."""
    df = df.reset_index(names=index) if index else df.reset_index(drop=True)
    config = {}
    for col in df.columns:
        if col in PERCENT:
            df[col] = pd.to_numeric(df[col], errors="coerce") * 100.0
            config[col] = st.column_config.NumberColumn(col, format="%.1f%%")
        elif "(USD)" in col or col.endswith("$/h"):
            config[col] = st.column_config.NumberColumn(col, format="$%.2f")
    st.dataframe(df, hide_index=True, column_config=config)


def finops_panels(s: dict[str, Any]) -> None:
    """Month projection, spend by team and model, agent fleets, deprecation risk per route."""
    sp = s["spend"]
    mo = sp.get("monthly")
    if mo:
        c1, c2 = st.columns(2)
        c1.markdown(f"**a month, projected: ${mo['total_usd']:,.0f}**")
        c1.bar_chart(pd.Series({k.removesuffix("_usd"): v for k, v in mo.items() if k != "total_usd"}, name="USD / month"), height=220)
        c1.caption(sp.get("monthly_basis", ""))
        att = sp.get("attribution", {})
        dim = c2.selectbox("spend of this run by", [d for d in ("team", "model", "provider", "workload", "tenant", "region") if d in att],
                           key="spend_dim")
        if dim:
            c2.bar_chart(pd.Series({k: v["usd"] for k, v in att[dim].items()}, name="USD this run"), height=220)
    a = s.get("agents")
    if a:
        st.markdown("**agent fleets**")
        table(pd.DataFrame({n: {"tasks": f["tasks"]["arrived"], "completed": f["tasks"]["completed"],
                                       "latency p50 s": f["latency_s"]["p50"], "latency p90 s": f["latency_s"]["p90"],
                                       "LLM calls / task": f["per_task"]["llm_calls"], "tokens in / task": f["per_task"]["input_tokens"],
                                       "amplification": f["token_amplification"], "cached input": f["cached_input_share"]}
                                   for n, f in a["fleets"].items()}).T, "fleet")
    dr = s.get("deprecation_risk")
    if dr:
        o = dr["overall"]
        st.markdown(f"**deprecation risk {dr['start_date']} to {dr['horizon_end']}**: P(any hosted model retires) "
                    f"{o['p_any_retirement']:.0%}, expected migration cost ${o['expected_migration_cost_usd']:,.0f}")
        table(pd.DataFrame({r: {"primary": v["primary"], "P(lose primary)": v.get("p_lose_primary"),
                                       "P(lose all)": v.get("p_lose_all"), "replacement": v.get("replacement")}
                                   for r, v in dr["routes"].items()}).T, "route")


def cdf_figure(df: pd.DataFrame, warm: float, slo_ms: dict[str, float | None]) -> plt.Figure:
    """Latency CDFs of every served request after warm-up: one line per deployment called
    directly, disaggregated group and gateway route; a dashed line at each SLO target set."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    m = ((df["status"] == "completed") & (df["arrival_s"] >= warm)).to_numpy()
    groups = latency_groups(df)
    for ax, col, title, key in zip(axes, ("ttft_s", "tpot_s", "e2e_s"), ("time to first token", "time per output token",
                                                                          "end-to-end latency"), ("ttft_ms", "tpot_ms", "e2e_ms")):
        for label, sel in groups:
            v = np.sort(df.loc[m & sel, col].to_numpy(dtype=float))
            v = v[np.isfinite(v)] * 1000
            if v.size:
                ax.plot(v, np.arange(1, v.size + 1) / v.size, label=f"{label} (n={v.size:,})")
        if slo_ms.get(key):
            ax.axvline(float(slo_ms[key]), color="red", ls="--", lw=1, label=f"SLO {slo_ms[key]:g} ms")  # type: ignore[arg-type]
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("ms (log scale)")
        ax.set_ylabel("fraction of requests")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


LEVELS = (("waiting", "queue", "requests waiting per replica"), ("running", "running batch", "sequences per replica"),
          ("kv_used", "KV-cache occupancy", "fraction of KV blocks"), ("busy", "busy", "fraction of time a batch runs"))


def levels_figure(ts: dict[str, pd.DataFrame], warm: float) -> plt.Figure:
    """Levels over time, averaged over each deployment's replicas (only called when there are
    deployments: a stack of hosted APIs has none to plot)."""
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.4), sharex=True)
    for name, t in ts.items():
        for ax, (col, _, _) in zip(axes, LEVELS):
            ax.plot(t["t_s"], t[col], label=name)
    for ax, (col, title, unit) in zip(axes, LEVELS):
        if col in ("kv_used", "busy"):
            ax.set_ylim(0, 1.05)
        if warm > 0:
            ax.axvspan(0, warm, color="grey", alpha=0.12)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.set_xlabel("simulated time (s); grey = warm-up")
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _short(v: float | None) -> str:
    """Numbers that fit a metric tile: 3.92k, 10.2k, 168.9, 0.998."""
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e4:
        return f"{v / 1e3:.1f}k"
    if a >= 1e3:
        return f"{v / 1e3:.2f}k"
    if a >= 100:
        return f"{v:.1f}"
    return f"{v:.3g}" if a < 10 else f"{v:.2f}"


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d


def _money(v: float | None) -> str:
    return "-" if v is None else f"${v:,.0f}"


def _share(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


SLO_HELP = ("Share of the requests completed after warm-up that met every SLO target set in the scenario "
            "(slo.attainment_all in summary.json). Rejected, failed and unfinished requests have no latency and are "
            "not counted here: the rejected share is the next tile.")
SPEND_HELP = ("Everything a month would cost at this run's rate: accelerators, hosted-API tokens, egress, fixed "
              "services and agent tools (spend.monthly.total_usd in summary.json). The split is under 'spend split'.")

REJECTED_HELP = ("Share of the arrived requests turned away (budgets, rate limits, prompts too long, no route): "
                 "requests.rejected_share in summary.json.")

# label, path in summary.json, lower is better, how to show it, help
TILES: tuple[tuple[str, tuple[str, ...], bool, Any, str | None], ...] = (
    ("p50 TTFT (ms)", ("latency_ms", "ttft", "p50"), True, _short, None),
    ("p99 TTFT (ms)", ("latency_ms", "ttft", "p99"), True, _short, None),
    ("p50 TPOT (ms)", ("latency_ms", "tpot", "p50"), True, _short, None),
    ("p99 TPOT (ms)", ("latency_ms", "tpot", "p99"), True, _short, None),
    ("output tok/s", ("throughput", "output_tokens_per_s"), False, _short, None),
    ("spend $/month", ("spend", "monthly", "total_usd"), True, _money, SPEND_HELP),
    ("SLO attainment", ("slo", "attainment_all"), False, _short, SLO_HELP),
    ("rejected", ("requests", "rejected_share"), True, _share, REJECTED_HELP),
)
SPLIT = (("accelerators", "gpu_usd"), ("hosted APIs", "api_usd"), ("egress", "egress_usd"), ("services", "services_usd"),
         ("agent tools", "tools_usd"), ("total", "total_usd"))


def headline(s: dict[str, Any], pinned: dict[str, Any] | None) -> None:
    """The tiles: each shows one number of summary.json (rounded for the tile), with the delta
    against the pinned run; the spend split is one click away."""
    cols = st.columns(len(TILES))
    for col, (label, path, lower_better, show, help_) in zip(cols, TILES):
        v = _get(s, path)
        p = _get(pinned, path) if pinned else None
        delta = None if v is None or p is None else round(v - p, 3)
        col.metric(label, show(v), delta=delta, delta_color="inverse" if lower_better else "normal", help=help_)
    sp = s["spend"]
    with st.popover("spend split"):
        table = pd.DataFrame({"a month (USD)": [sp["monthly"].get(k, 0.0) for _, k in SPLIT],
                              "this run (USD)": [sp.get("run", {}).get(k, 0.0) for _, k in SPLIT]},
                             index=[label for label, _ in SPLIT])
        st.dataframe(table.style.format("${:,.2f}"))
        st.caption(sp.get("monthly_basis", ""))


def capacity_notes(s: dict[str, Any]) -> None:
    """Each deployment's sustainable capacity against its load (serving/capacity.py): an
    overload (the latencies shown then describe a transient, not a steady state) or a load near
    capacity as a warning above the plots; otherwise one caption line."""
    lines = []
    for name, d in s["deployments"].items():
        if not d.get("capacity"):
            continue
        msg = capacity_message(name, d["capacity"])
        if msg.startswith(("OVERLOADED", "NEAR CAPACITY")):
            st.warning(msg)
        else:
            lines.append(msg)
    if lines:
        st.caption(" · ".join(lines))


def compare_side_by_side(text: str, name: str, label: str) -> None:
    """This scenario (as edited) next to a second bundled one over N seeds of the comparison's own
    (the same seeds on both sides, so the runs pair by seed; not the sidebar's seed): each metric
    with its difference, % change and interval from ``stacksim.compare``, the statistics of
    `stacksim compare`."""
    c1, c2, c3 = st.columns([3, 1, 1])
    other = c1.selectbox("compare side by side with", ["(none)", *bundled()], key="compare")
    n = int(c2.number_input("seeds", 1, 10, cmp.MIN_SEEDS, key="compare_seeds"))  # 2 x 10 runs fit the result cache
    first = int(c3.number_input("first seed", 0, 2**31 - 11, 0, key="compare_seed_base"))
    if other == "(none)":
        return
    path = bundled()[other]
    seeds = list(range(first, first + n))
    runs: list[dict[str, Any]] = []
    for t, nm in ((text, name), (path.read_text(encoding="utf-8"), str(path))):
        for seed in seeds:
            try:
                runs.append({"summary": simulate(t, nm, seed)["summary"]})
            except StackSimError as exc:  # one failed run is listed; the others still count
                runs.append({"error": str(exc)})
    other_name = next((r["summary"]["scenario"] for r in runs[n:] if "summary" in r), other)
    labels = [f"this scenario ({label})", other_name]
    res = cmp.compare_runs(labels, seeds, runs)
    res["scenarios"] = [{"label": lb} for lb in labels]
    cols, rows = cmp.table(res)
    st.caption(f"mean ± sd over seeds {seeds[0]}..{seeds[-1]}; difference from this scenario with its 95% interval "
               "(paired by seed; * when it excludes zero) and % change")
    st.dataframe(pd.DataFrame(rows, columns=cols), hide_index=True, key="compare_table")
    for w in res["warnings"]:
        st.warning(w)
    for f in res["failures"]:
        st.error(f"run failed: {f['scenario']} seed {f['seed']}: {f['error']}")
    st.caption(res["method"])


def mix_tab(text: str, name: str) -> None:
    """The cheapest mix of accelerator types for one deployment of this scenario (as edited), by
    Mélange's method: the same planner as `stacksim mix` (stacksim/sweep/mixplan.py)."""
    from stacksim.catalog import get_accelerator
    from stacksim.sweep.mixplan import plan_for, run_plan, write_outputs

    data = yaml.safe_load(text)
    deps = list(data.get("deployments") or {})
    if not deps:
        st.info("This scenario has no self-hosted deployment to place on accelerators.")
        return
    st.caption("Profiles one replica of each type on each request-size bucket, then solves Mélange's bin-packing "
               "ILP for the cheapest fleet at each rate, against the cheapest single type.")
    c1, c2 = st.columns(2)
    dep = c1.selectbox("deployment to place", deps, key="mix_dep")
    current = [data["pools"][data["deployments"][dep]["pool"]]["accelerator"]]
    accs = c2.multiselect("accelerator types", sorted(accelerators()), default=current, key="mix_accs")
    prices = {}
    cols = st.columns(max(1, len(accs)))
    for col, acc in zip(cols, accs):
        default = get_accelerator(acc).default_price_usd_per_gpu_hour or 1.0
        prices[acc] = col.number_input(f"{acc} $/GPU-h", 0.01, 1000.0, float(default), key=f"mix_price:{acc}")
    slo = data.get("slo") or {}
    c3, c4, c5, c6 = st.columns(4)
    rates_text = c3.text_input("rates (req/s)", "1, 2, 4, 8, 16, 32", key="mix_rates")
    tpot = c4.number_input("TPOT SLO (ms; 0 = none)", 0.0, 10000.0, float(slo.get("tpot_ms") or 0.0), key="mix_tpot")
    ttft = c5.number_input("TTFT SLO (ms; 0 = none)", 0.0, 600000.0, float(slo.get("ttft_ms") or 0.0), key="mix_ttft")
    horizon = c6.number_input("profile run (simulated s)", 10.0, 3600.0, 120.0, key="mix_horizon")
    key = hashlib.sha256(f"{text}|{dep}".encode()).hexdigest()  # a plan of another scenario is not shown
    if not st.button("Plan the mix", key="mix_run"):
        res = st.session_state.get("mix_result", {}).get(key)
    else:
        try:
            rates = [float(x) for x in rates_text.replace(";", ",").split(",") if x.strip()]
        except ValueError:
            st.error(f"rates: '{rates_text}' is not a list of numbers (e.g. 1, 2, 4)")
            return
        spec = {"deployment": dep, "accelerators": prices, "rates": rates, "profile_horizon_s": horizon,
                "slo": {k: v for k, v in (("tpot_ms", tpot), ("ttft_ms", ttft)) if v > 0} or None}
        try:
            plan = plan_for(spec, data, (ROOT / name) if not Path(name).is_absolute() else Path(name), "mix settings")
        except ScenarioError as exc:
            st.error(str(exc))
            return
        bar = st.progress(0.0, text="profiling...")

        def progress(done: int, total: int) -> None:
            bar.progress(done / total, text=f"profiles and checks: {done} / {total}")

        try:
            res = run_plan(plan, progress)
        except StackSimError as exc:
            bar.empty()
            st.error(str(exc))
            return
        bar.empty()
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:  # the plot and mix.json once per plan, not per rerun
            written = write_outputs(res, Path(tmp))
            res = {**res, "png": written[2].read_bytes(), "json": written[0].read_text()}
        st.session_state["mix_result"] = {key: res}
    if res is None:
        return
    rows = [{"req/s": r["rate"], "cheapest single type": ", ".join(f"{n} {g}" for g, n in (r["single"].replicas if r["single"] else {}).items()),
             "single $/h": r["single"].usd_per_h if r["single"] else None,
             "cheapest mix": ", ".join(f"{n} {g}" for g, n in sorted(r["mix"].replicas.items())), "mix $/h": r["mix"].usd_per_h,
             "saving": r["saving"], "SLO met (mix)": r.get("mix_attainment")} for r in res["rows"]]
    table(pd.DataFrame(rows))
    st.image(res["png"])
    st.download_button("mix.json", res["json"], file_name="mix.json", key="dl_mix")


def main() -> None:
    st.set_page_config(page_title="stacksim", layout="wide")
    st.title("stacksim")
    st.caption("Simulate an AI serving stack: latency, throughput and GPU spend. Change a knob in the sidebar, then Run.")
    names = list(bundled())
    options = [*names, "upload"]
    default = names.index("quickstart.yaml") if "quickstart.yaml" in names else 0
    choice = st.sidebar.selectbox("scenario", options, index=default, key="scenario",
                                  format_func=lambda x: "upload a YAML file..." if x == "upload" else x)
    if choice == "upload":
        st.sidebar.file_uploader("scenario YAML", type=["yaml", "yml"], key="upload")
    base_text, name = load_text(choice)
    if not base_text:
        st.info("Upload a scenario file to start.")
        return
    with st.expander("scenario YAML (edit freely; the sidebar edits the same data)"):
        # Keyed by the file's content too: a newly uploaded file replaces the box's text.
        digest = hashlib.sha256(base_text.encode()).hexdigest()[:12]
        edited_text = st.text_area("YAML", base_text, height=260, key=f"yaml:{choice}:{digest}")
    # Validate the file as written first (the loader names file, line and field), and only then
    # offer knobs over it: a widget must never be handed a value the scenario would reject.
    try:
        load_scenario_text(edited_text, name)
    except ScenarioError as exc:
        st.error(str(exc))
        return
    data = yaml.safe_load(edited_text)
    seed = int(st.sidebar.number_input("seed", 0, 2**31 - 1, int(data.get("seed", 0)), key=f"seed:{choice}"))
    if st.session_state.get("knobs_for") != choice:
        # Knob widgets are keyed by pool / deployment / workload name: a name another scenario
        # also uses must start from this scenario's value, not the last one's.
        for k in [k for k in st.session_state if str(k).split(":")[0] in KNOB_KEYS]:
            del st.session_state[k]
        st.session_state["knobs_for"] = choice
    data = knobs(data)
    text = yaml.safe_dump(data, sort_keys=False)
    try:
        load_scenario_text(text, name)
    except ScenarioError as exc:
        st.error(str(exc))
        return
    tab_run, tab_mix, tab_sweep = st.tabs(["run", "GPU mix", "sweep results"])
    with tab_run:
        c1, c2, c3 = st.columns([1, 1, 4])
        run = c1.button("Run", type="primary", key="run")
        pin = c2.button("Pin this run", key="pin")
        if run:
            st.session_state["result"] = simulate(text, name, seed)
            st.session_state["result_text"] = text
        res = st.session_state.get("result")
        if pin and res is not None:
            st.session_state["pinned"] = res["summary"]
        if res is None:
            st.info("Press Run.")
        else:
            s = res["summary"]
            if st.session_state.get("result_text") != text:
                c3.warning("The knobs changed since this run: press Run to update.")
            pinned = st.session_state.get("pinned")
            headline(s, pinned)
            r = s["requests"]
            st.caption(
                f"{s['scenario']} · seed {s['seed']} · scenario sha256 {s['scenario_sha256'][:12]} · arrived {r['arrived']:,} = "
                f"completed {r['completed']:,} + failed {r['failed']:,} + rejected {r['rejected']:,} + in flight {r['in_flight']:,}"
                + (" · deltas against the pinned run" if pinned else "")
            )
            capacity_notes(s)
            st.pyplot(cdf_figure(res["requests"], s["time"]["warmup_s"], s["slo"]["targets_ms"]))
            if res["timeseries"]:
                st.pyplot(levels_figure(res["timeseries"], s["time"]["warmup_s"]))
            else:
                st.caption("No self-hosted pools: this stack calls hosted APIs only, so there is no queue, batch, "
                           "KV cache or GPU time to plot.")
            if s["pools"]:
                st.markdown("**pools**: busy is the share of time a batch runs; MFU and MBU are the compute and "
                            "memory bandwidth that work used (FLOPs and bytes over peak x GPU-time; idle GPUs count as 0)")
                table(pd.DataFrame({name: {"accelerator": p["accelerator"], "GPUs": p["count"], "GPUs used": p["gpus_used"],
                                           "busy": p["utilisation"], "MFU": p.get("mfu"), "MBU": p.get("mbu"),
                                           "spend (USD)": p["spend_usd"], "idle spend (USD)": p["idle_spend_usd"]}
                                    for name, p in s["pools"].items()}).T, "pool")
            if s["deployments"]:
                rows = {}
                for name, d in s["deployments"].items():
                    cap = d.get("capacity", {})  # serving/capacity.py
                    rows[name] = {"model": d["model"], "accelerator": d["accelerator"], "replicas": d["replicas"],
                                  "busy": d["utilisation"], "MFU": d.get("mfu"), "MBU": d.get("mbu"),
                                  "mean running batch": d["mean_running"], "mean KV used": d["mean_kv_used"],
                                  "preemptions": d["preemptions"], "requests/s": d["requests_per_s"], "spend (USD)": d["spend_usd"],
                                  "capacity (req/s)": cap.get("capacity_rps"), "offered (req/s)": cap.get("offered_rps"),
                                  "overloaded": cap.get("overloaded")}
                table(pd.DataFrame(rows).T, "deployment")
            if "gateway" in s:
                g = s["gateway"]
                st.markdown(f"**gateway** ({g.get('routing_strategy', g['kind'])}): API spend ${g['spend']['api_usd']:,.2f}, retries {g['retries']:,}, "
                            f"fallbacks {g['fallbacks']:,}, cache hits {g['cache']['exact_hits'] + g['cache']['semantic_hits']:,}, "
                            f"residency fail-closed {g['residency']['failed_closed']:,} (violations {g['residency']['violations']})")
                table(pd.DataFrame({k: {"calls": r["calls"], "completed": r["completed"], "rejected": r["rejected"],
                                        "failed": r["failed"], "cost (USD)": r["cost_usd"]} for k, r in g["routes"].items()}).T, "route")
                table(pd.DataFrame({"outcome": list(g["outcomes"]), "calls": list(g["outcomes"].values())}))
            for f in s.get("faults", []):
                st.caption(f"fault {f['kind']} on {f['target']} {f['start_s']:g}-{f['end_s']:g} s: {f['requests_during']:,} requests during, "
                           f"{f['failed_during']:,} failed, {f['retried_during']:,} retried")
            finops_panels(s)
            compare_side_by_side(text, name, s["scenario"])
            d1, d2, d3 = st.columns(3)
            d1.download_button("scenario YAML", text, file_name=Path(name).name, key="dl_yaml")
            d2.download_button("summary.json", json.dumps(s, indent=2), file_name="summary.json", key="dl_summary")
            buf = io.StringIO()
            res["requests"].to_csv(buf, index=False)
            d3.download_button("requests.csv", buf.getvalue(), file_name="requests.csv", key="dl_requests")
    with tab_mix:
        mix_tab(text, name)
    with tab_sweep:
        folder = st.text_input("results folder of `stacksim sweep`", key="sweep_dir")
        if folder:
            from stacksim.sweep.report import by_point, pareto, pareto_figure
            from stacksim.sweep.runner import load_results

            df = load_results(folder)
            if df.empty:
                st.warning(f"no sweep results under {folder}/runs")
            else:
                st.dataframe(df, hide_index=True)
                pts = by_point(df)
                st.pyplot(pareto_figure(pts, pareto(pts)))


main()
