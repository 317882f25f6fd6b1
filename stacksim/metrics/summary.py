"""The result envelope of a run: summary (the documented ``summary.json``), per-request table,
per-deployment time series.

Layout of ``summary.json`` (all latencies in milliseconds, all money in US dollars):

- ``scenario``, ``seed``, ``scenario_sha256`` (of the resolved scenario), ``stacksim_version``
- ``time``: horizon_s, warmup_s, end_s (later than the horizon when draining), measured_s
- ``partial`` (only when the run was stopped early, e.g. by Ctrl-C): stopped_at_s and a note; every
  count and rate then covers the simulated time only
- ``limit_reached`` (only when closed-loop clients hit ``limits.max_requests``): at_s, max_requests
  and a note; no request was created after that time
- ``requests``: arrived, completed, failed, rejected, in_flight (these add up:
  arrived = completed + failed + rejected + in_flight), rejected_share (rejected / arrived),
  measured (completed after warm-up), preemptions
- ``latency_ms``: ttft, tpot, itl, e2e, queue; each {count, mean, p50, p90, p95, p99}
- ``slo``: targets and attainment (share of measured requests meeting each, and all together);
  attainment counts served requests only: a rejected or failed request has no latency to meet a
  target with, so it is in ``requests.rejected_share`` / ``failed``, not in attainment
- ``throughput``: requests_per_s, output_tokens_per_s, input_tokens_per_s (completions in the
  measured window divided by its length)
- ``queueing``: mean_in_system, arrival_rate_per_s, mean_time_in_system_s (Little's law inputs)
- ``deployments.<name>``: model, accelerator, shape, memory plan, utilisation (busy fraction of
  replica-time), mfu and mbu (FLOPs and bytes the work needed over peak FLOPS and memory
  bandwidth x replica-time; metrics/efficiency.py: unlike busy, these say how much of the GPU
  the batches used), mean/peak queue, running batch and KV occupancy, preemptions, iterations,
  request counts and latency, GPU spend, ``prefix_cache`` (prompt and cached tokens of the
  requests it admitted, token-weighted hit rate, blocks evicted; see serving/prefix_cache.py);
  with autoscaling, ``autoscaling`` (replicas over time, replica-hours, provisioning charged,
  scale events, cold starts; serving/autoscale.py), spend from the replica-hours held, and
  utilisation and levels over the replicas loaded, not over every slot
- ``deployments.<name>.capacity``: sustainable capacity against the offered load, and whether
  it is overloaded (queue growth, the transient the latencies describe); serving/capacity.py
- ``pools.<name>``: accelerator, count, gpus_used, price, spend_usd, idle_spend_usd, billing
  (``whole_pool``, or ``allocated_replica_hours`` for an on-demand or spot pool whose deployments
  all autoscale), utilisation (busy GPU-time over all the pool's GPU-time: idle GPUs count as 0),
  mfu and mbu (its deployments' compute and bandwidth used over all the pool's GPU-time),
  mean_queue (requests waiting in the pool's replicas, summed)
- ``disaggregated.<group>``: prefill/decode pairs (serving/disagg_results.py): requests, client
  latencies, SLO attainment and goodput, throughput, KV transfers, utilisation, the xPyD ratio
- ``spend``: gpu_usd (the run), gpu_usd_per_hour, gpu_usd_per_month (x 730 h, the run's rate held
  for a month), basis
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stacksim.engine.simulation import Simulation
from stacksim.kernels import cost as K
from stacksim.metrics import STATUS_NAMES, hist_mean, hist_percentiles
from stacksim.metrics.efficiency import utilisation as efficiency
from stacksim.scenario import resolved_yaml
from stacksim.serving.capacity import OPEN_KINDS, STAGED, assess
from stacksim.serving.prefix_cache import prefix_cache_summary

HOURS_PER_MONTH = 730.0  # 8760 h / 12
QS = (50.0, 90.0, 95.0, 99.0)


def stats_ms(x: np.ndarray) -> dict[str, float | int | None]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p95": None, "p99": None}
    p = np.percentile(x, QS) * 1000.0
    return {
        "count": int(x.size),
        "mean": round(float(x.mean()) * 1000.0, 4),
        "p50": round(float(p[0]), 4),
        "p90": round(float(p[1]), 4),
        "p95": round(float(p[2]), 4),
        "p99": round(float(p[3]), 4),
    }


def hist_stats_ms(hist: np.ndarray) -> dict[str, float | int | None]:
    total = float(hist.sum())
    if total <= 0:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p95": None, "p99": None}
    ps = hist_percentiles(hist, QS, K.HIST_LO_S, K.HIST_RATIO)
    return {
        "count": int(total),
        "mean": round(hist_mean(hist, K.HIST_LO_S, K.HIST_RATIO) * 1000.0, 4),
        "p50": round(ps[0] * 1000.0, 4),
        "p90": round(ps[1] * 1000.0, 4),
        "p95": round(ps[2] * 1000.0, 4),
        "p99": round(ps[3] * 1000.0, 4),
    }


@dataclass
class Result:
    """Everything a run produced; traceable to the scenario hash and seed in ``summary``."""

    summary: dict[str, Any]
    requests: pd.DataFrame
    timeseries: dict[str, pd.DataFrame]
    resolved_yaml: str
    attempts: pd.DataFrame | None = None  # gateway attempts, one row per try at a deployment
    tasks: pd.DataFrame | None = None  # agent tasks, one row per task
    spans: pd.DataFrame | None = None  # every span (agent steps, gateway calls and attempts), when asked for
    iterations: dict[str, pd.DataFrame] | None = None  # deployment -> its replicas' batch iterations, when asked for

    def to_json(self) -> str:
        return json.dumps(self.summary, indent=2, sort_keys=False) + "\n"


def _latencies(df: pd.DataFrame) -> dict[str, np.ndarray]:
    ttft = (df["first_token_s"] - df["arrival_s"]).to_numpy()
    e2e = (df["finish_s"] - df["arrival_s"]).to_numpy()
    out = df["output_tokens"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(out > 1, (df["finish_s"] - df["first_token_s"]).to_numpy() / (out - 1), np.nan)
    queue = (df["admitted_s"] - df["arrival_s"]).to_numpy()
    return {"ttft": ttft, "tpot": tpot, "e2e": e2e, "queue": queue}


def build_result(sim: Simulation, spans: bool = False) -> Result:
    """The run's tables and summary; ``spans=True`` also builds the span table (OpenTelemetry export)."""
    from stacksim import __version__

    rs = sim.rs
    sc = rs.scenario
    end = sim.end_time
    cols = sim.reqs.trimmed()
    arrived_mask = cols["arrival_s"] <= end
    # The serving table: every request a replica saw (sent directly, or a gateway attempt).
    serving = pd.DataFrame({k: v[arrived_mask] for k, v in cols.items()})
    serving.insert(0, "request_id", np.flatnonzero(arrived_mask))
    is_direct = serving["call"].to_numpy() < 0
    if sim.disagg is not None:  # the legs of disaggregated requests are serving rows, not client rows
        from stacksim.serving.disagg_results import leg_clients

        serving["disagg"] = leg_clients(sim, serving["request_id"].to_numpy())
        is_direct &= serving["disagg"].to_numpy() < 0
    direct = serving[is_direct].drop(columns="disagg", errors="ignore").assign(via="direct")
    calls = attempts = None
    if sim.gateway is not None:
        from stacksim.gateway.results import attempts_frame, calls_frame

        calls = calls_frame(sim, end)
        attempts = attempts_frame(sim)
        df = pd.concat([direct, calls], ignore_index=True) if len(direct) else calls.copy()
    else:
        df = direct.reset_index(drop=True)
    if sim.disagg is not None:
        from stacksim.serving.disagg_results import clients_frame

        dz = clients_frame(sim, end)
        df = pd.concat([df, dz], ignore_index=True) if len(df) else dz
    wl_codes = df["workload"].to_numpy()
    for frame in (df, serving):
        frame["workload"] = pd.Categorical.from_codes(frame["workload"].to_numpy(), categories=sim.workload_names)
        dep_codes = frame["deployment"].to_numpy()
        frame["deployment"] = pd.Categorical.from_codes(np.where(dep_codes < 0, -1, dep_codes), categories=sim.deployment_names)
        frame["status"] = pd.Categorical.from_codes(frame["status"].to_numpy(), categories=list(STATUS_NAMES.values()))
    for tag in sorted({k for tags in sim.workload_tags for k in tags}):
        values = [tags.get(tag, "") for tags in sim.workload_tags]
        df[f"tag_{tag}"] = pd.Categorical(np.array(values, dtype=object)[wl_codes])
    if any(d.rd.lora is not None for d in sim.deployments.values()):  # multi-LoRA: adapter (and tenant) per request
        from stacksim.serving.lora import request_columns

        for col, values in request_columns(sim, df).items():
            df[col] = values
    lat = _latencies(df)
    df["ttft_s"] = lat["ttft"]
    df["tpot_s"] = lat["tpot"]
    df["e2e_s"] = lat["e2e"]

    st = df["status"]
    n_arrived = len(df)
    n_completed = int((st == "completed").sum())
    n_failed = int((st == "failed").sum())
    n_rejected = int((st == "rejected").sum())
    in_flight = n_arrived - n_completed - n_failed - n_rejected

    measured = (df["status"] == "completed").to_numpy() & (df["arrival_s"].to_numpy() >= sc.warmup_s)
    mdf = df[measured]
    mlat = {k: v[measured] for k, v in lat.items()}
    s_lat = _latencies(serving)
    s_measured = (serving["status"] == "completed").to_numpy() & (serving["arrival_s"].to_numpy() >= sc.warmup_s)
    s_mlat = {k: v[s_measured] for k, v in s_lat.items()}
    itl_all = np.sum([d.itl_hist for d in sim.deployments.values()], axis=0) if sim.deployments else np.zeros(1)

    window = max(end - sc.warmup_s, 1e-12)
    fin = df["finish_s"].to_numpy()
    done_in_window = (df["status"] == "completed").to_numpy() & (fin >= sc.warmup_s) & (fin <= end)
    s_fin = serving["finish_s"].to_numpy()
    s_done = (serving["status"] == "completed").to_numpy() & (s_fin >= sc.warmup_s) & (s_fin <= end)

    slo: dict[str, Any] = {"targets_ms": sc.slo.model_dump()}
    if len(mdf):
        ok = np.ones(len(mdf), dtype=bool)
        att: dict[str, float] = {}
        for key, arr in (("ttft_ms", mlat["ttft"]), ("tpot_ms", mlat["tpot"]), ("e2e_ms", mlat["e2e"])):
            target = getattr(sc.slo, key)
            if target is None:
                continue
            met = np.where(np.isnan(arr), True, arr * 1000.0 <= target)
            att[key] = round(float(met.mean()), 6)
            ok &= met
        slo["attainment"] = att
        slo["attainment_all"] = round(float(ok.mean()), 6) if att else None
    hours = end / 3600.0
    deployments: dict[str, Any] = {}
    pools_used: dict[str, float] = {}
    elastic_deps: dict[str, list[bool]] = {}  # pool -> whether each deployment on it autoscales
    pool_busy: dict[str, float] = {}
    pool_queue: dict[str, float] = {}
    pool_eff: dict[str, dict[str, float]] = {}
    kinds = _traffic_kinds(sim)
    wl_codes_serving = serving["workload"].cat.codes.to_numpy()
    for name, dep in sim.deployments.items():
        rd = dep.rd
        sel = (serving["deployment"] == name).to_numpy()
        msel = sel[s_measured]
        reps = dep.replicas
        busy = [r.levels.mean("busy", 0.0, end) for r in reps] if end > 0 else [0.0]
        ts = _dep_timeseries(dep, end)
        spend = rd.gpus * hours * rd.pool.price_usd_per_gpu_hour
        util = float(np.mean(busy))
        replica_s = end * len(reps)
        asc = dep.autoscaler
        auto = None
        if asc is not None:
            # Autoscaled: billed for the replica-hours held (provisioning included), and its
            # utilisation is busy time over the time replicas were loaded, so slots that were
            # never (or seldom) in service do not dilute it. Pools see its mean GPUs held.
            auto = asc.summary(end, rd.pool.price_usd_per_gpu_hour)
            spend = auto["spend_usd"]
            loaded_s = asc.integral(end)[1]
            replica_s = loaded_s
            util = float(np.sum(busy)) * end / loaded_s if loaded_s > 0 else 0.0
            elastic_deps.setdefault(rd.pool.name, []).append(True)
        else:
            elastic_deps.setdefault(rd.pool.name, []).append(False)
        pools_used[rd.pool.name] = pools_used.get(rd.pool.name, 0) + (rd.gpus if auto is None else auto["mean_gpus"])
        # Per pool: GPU-time busy (each replica's busy fraction x its GPUs), queue summed.
        pool_busy[rd.pool.name] = pool_busy.get(rd.pool.name, 0.0) + float(np.sum(busy)) * rd.gpus / len(reps)
        n_rep = ts["replicas"] if "replicas" in ts else len(reps)  # autoscaled: replicas loaded per bin
        pool_queue[rd.pool.name] = pool_queue.get(rd.pool.name, 0.0) + (float((ts["waiting"] * n_rep).mean()) if len(ts) else 0.0)
        pc = prefix_cache_summary(reps, serving[sel], sim.reqs.blocks)
        eff = efficiency(rd.params, serving[sel], int(sum(r.iterations for r in reps)), replica_s)
        for k in ("mfu", "mbu"):  # GPU-seconds of compute / bandwidth used, per pool
            pool_eff.setdefault(rd.pool.name, {"mfu": 0.0, "mbu": 0.0})[k] += eff[k] * replica_s * rd.gpus / len(reps)
        deployments[name] = {
            "model": rd.model.id,
            "pool": rd.pool.name,
            "accelerator": rd.pool.accelerator.id,
            "replicas": rd.spec.replicas,
            "tensor_parallel": rd.spec.tensor_parallel,
            "pipeline_parallel": rd.spec.pipeline_parallel,
            "data_parallel": rd.spec.data_parallel,
            "expert_parallel": rd.spec.expert_parallel,
            "precision": rd.spec.precision,
            "gpus": rd.gpus,
            "memory_per_gpu_gb": {
                "weights": round(rd.plan.weights_per_gpu_gb, 3),
                "activations": round(rd.plan.activations_per_gpu_gb, 3),
                "runtime_overhead": round(rd.plan.overhead_per_gpu_gb, 3),
                "kv_cache": round(rd.plan.kv_per_gpu_gb, 3),
            },
            "kv_blocks_per_replica": rd.plan.num_blocks,
            "kv_capacity_tokens_per_replica": rd.plan.kv_capacity_tokens,
            "max_model_len": rd.max_model_len,
            "utilisation": round(util, 6),
            **eff,
            "mean_queue": round(float(ts["waiting"].mean()) if len(ts) else 0.0, 4),
            "peak_queue": max((r.levels.peak("waiting") for r in reps), default=0.0),
            "mean_running": round(float(ts["running"].mean()) if len(ts) else 0.0, 4),
            "peak_running": max((r.levels.peak("running") for r in reps), default=0.0),
            "mean_kv_used": round(float(ts["kv_used"].mean()) if len(ts) else 0.0, 6),
            "peak_kv_used": round(max((r.levels.peak("kv_used") for r in reps), default=0.0), 6),
            "preemptions": int(sum(r.preemptions for r in reps)),
            "iterations": int(sum(r.iterations for r in reps)),
            "requests_per_s": round(float((s_done & sel).sum()) / window, 6),
            "output_tokens_per_s": round(float(serving["output_tokens"].to_numpy()[s_done & sel].sum()) / window, 4),
            "requests": {
                "arrived": int(sel.sum()),
                "completed": int(((serving["status"] == "completed").to_numpy() & sel).sum()),
                "rejected": int(((serving["status"] == "rejected").to_numpy() & sel).sum()),
                "failed": int(((serving["status"] == "failed").to_numpy() & sel).sum()),
                "gateway_attempts": int(((serving["call"] >= 0).to_numpy() & sel).sum()),
            },
            "replica_failures": int(sum(r.failures for r in reps)),
            "prefix_cache": pc,
            "latency_ms": {k: stats_ms(v[msel]) for k, v in s_mlat.items() if k != "queue"}
            | {"itl": hist_stats_ms(dep.itl_hist)},
            "spend_usd": round(spend, 6),
            "capacity": _capacity(sim, name, serving[sel], wl_codes_serving[sel], kinds, pc["hit_rate"], end),
        }
        if auto is not None:
            deployments[name]["autoscaling"] = auto
        if rd.lora is not None:
            from stacksim.serving.lora import lora_summary

            deployments[name]["lora"] = lora_summary(dep, rd.lora, sim.reqs, serving["request_id"].to_numpy()[sel])
    pools: dict[str, Any] = {}
    total_spend = 0.0
    for name, rp in rs.pools.items():
        spend = rp.spec.count * hours * rp.price_usd_per_gpu_hour
        used = pools_used.get(name, 0)
        # Bought by the hour (on demand, spot) and every deployment on it autoscales: only the
        # replica-hours allocated are paid; reserved and owned pools are paid whether used or not.
        elastic = rp.spec.purchase in ("on_demand", "spot") and bool(elastic_deps.get(name)) and all(elastic_deps[name])
        if elastic:
            spend = sum(d["spend_usd"] for d in deployments.values() if d["pool"] == name)
        total_spend += spend
        pools[name] = {
            "accelerator": rp.accelerator.id,
            "region": rp.spec.region,
            "count": rp.spec.count,
            "gpus_used": used if isinstance(used, int) else round(used, 6),  # autoscaled: mean GPUs held
            "price_usd_per_gpu_hour": rp.price_usd_per_gpu_hour,
            "price_basis": rp.price_basis,
            "spend_usd": round(spend, 6),
            "idle_spend_usd": 0.0 if elastic else round((rp.spec.count - used) * hours * rp.price_usd_per_gpu_hour, 6),
            "billing": "allocated_replica_hours" if elastic else "whole_pool",
            "utilisation": round(pool_busy.get(name, 0.0) / rp.spec.count, 6),
            **{k: round(float(v) / (rp.spec.count * end), 6) if end > 0 else 0.0 for k, v in pool_eff.get(name, {"mfu": 0.0, "mbu": 0.0}).items()},
            "mean_queue": round(pool_queue.get(name, 0.0), 4),
        }
    rate = total_spend / hours if hours > 0 else 0.0
    ryaml = resolved_yaml(rs)
    mean_in_sys = mean_in_system(df["arrival_s"].to_numpy(), df["finish_s"].to_numpy(), sc.warmup_s, end)
    resid = df["e2e_s"].to_numpy()
    fin_or_end = np.where(np.isnan(resid), end - df["arrival_s"].to_numpy(), resid)
    in_win = df["arrival_s"].to_numpy() >= sc.warmup_s
    summary: dict[str, Any] = {
        "scenario": sc.name,
        "seed": sim.seed,
        "scenario_sha256": hashlib.sha256(ryaml.encode()).hexdigest(),
        "stacksim_version": __version__,
        "time": {
            "horizon_s": sc.horizon_s,
            "warmup_s": sc.warmup_s,
            "end_s": round(end, 6),
            "measured_s": round(window, 6),
        },
        "requests": {
            "arrived": n_arrived,
            "completed": n_completed,
            "failed": n_failed,
            "rejected": n_rejected,
            "in_flight": in_flight,
            "rejected_share": round(n_rejected / n_arrived, 6) if n_arrived else 0.0,
            "measured": int(measured.sum()),
            "preemptions": int(serving["preemptions"].sum()),
        },
        "latency_ms": {
            "ttft": stats_ms(mlat["ttft"]),
            "tpot": stats_ms(mlat["tpot"]),
            "itl": hist_stats_ms(itl_all),
            "e2e": stats_ms(mlat["e2e"]),
            "queue": stats_ms(mlat["queue"]),
        },
        "slo": slo,
        "throughput": {
            "requests_per_s": round(float(done_in_window.sum()) / window, 6),
            "output_tokens_per_s": round(float(df["output_tokens"].to_numpy()[done_in_window].sum()) / window, 4),
            "input_tokens_per_s": round(float(df["input_tokens"].to_numpy()[done_in_window].sum()) / window, 4),
        },
        "queueing": {
            "mean_in_system": round(mean_in_sys, 6),
            "arrival_rate_per_s": round(float(in_win.sum()) / window, 6),
            "mean_time_in_system_s": round(float(fin_or_end[in_win].mean()) if in_win.any() else 0.0, 6),
        },
        "deployments": deployments,
        "pools": pools,
        "spend": {
            "gpu_usd": round(total_spend, 6),
            "gpu_usd_per_hour": round(rate, 6),
            "gpu_usd_per_month": round(rate * HOURS_PER_MONTH, 4),
            "basis": "every accelerator in every pool billed for the simulated time at its pool price"
            + ("" if not any(p["billing"] == "allocated_replica_hours" for p in pools.values()) else
               ", except on-demand and spot pools whose deployments all autoscale: those pay only the replica-hours held "
               "(from provisioning start to release)")
            + f"; month = {HOURS_PER_MONTH:g} h at the same rate",
        },
    }
    if sim.gateway is not None:
        from stacksim.gateway.results import gateway_summary

        assert calls is not None and attempts is not None
        summary["gateway"] = gateway_summary(sim, df[df["via"] == "gateway"], attempts, end)
        summary["spend"]["api_usd"] = summary["gateway"]["spend"]["api_usd"]
        summary["spend"]["egress_usd"] = summary["gateway"]["spend"]["egress_usd"]
    if sim.disagg is not None:
        from stacksim.serving.disagg_results import disagg_summary

        summary["disaggregated"] = disagg_summary(sim, df, summary, end)
    if sim.faults.occurrences:
        from stacksim.gateway.results import faults_summary

        summary["faults"] = faults_summary(sim, df)
    tasks = None
    if sim.agents is not None:
        from stacksim.agents.results import agents_summary, tasks_frame

        tasks = tasks_frame(sim)
        summary["agents"] = agents_summary(sim, tasks, end)
        summary["spend"]["agent_tools_usd"] = round(
            sum(t.calls * t.spec.usd_per_call for t in sim.agents.tools.values())
            + sum(v.queries * v.spec.usd_per_query for v in sim.agents.stores.values()), 6)
    from stacksim.finops.spend import spend_section

    if sim.stopped_at_s is not None:
        summary["partial"] = {
            "stopped_at_s": round(sim.stopped_at_s, 6),
            "note": f"stopped at {sim.stopped_at_s:,.1f} of {sc.horizon_s:,.1f} simulated s{' (draining)' if sim.stopped_at_s > sc.horizon_s else ''}: "
                    "counts, latencies and rates cover the simulated time only",
        }
    if sim.limit_reached_s is not None:
        cap = sc.limits.max_requests
        summary["limit_reached"] = {
            "at_s": round(sim.limit_reached_s, 6), "max_requests": cap,
            "note": f"limits.max_requests ({cap:,}) reached at {sim.limit_reached_s:,.1f} s: closed-loop clients sent no "
                    "more requests after it; raise limits.max_requests to simulate the whole horizon",
        }
    summary["spend"] = spend_section(sim, df, serving, summary, tasks)
    if sc.lifecycle is not None:
        from stacksim.lifecycle.run import lifecycle_section

        summary["deprecation_risk"] = lifecycle_section(sim, df)
        if sc.lifecycle.rerun_replacements:
            from stacksim.lifecycle.rerun import rerun_routes

            rerun_routes(sim, summary, summary["deprecation_risk"])
    span_df = None
    if spans:
        from stacksim.agents.spans import spans_frame

        span_df = spans_frame(sim)
    iters = None
    traced = [n for n, d in sim.deployments.items() if any(getattr(r, "trace", None) is not None for r in d.replicas)]
    if traced:
        from stacksim.report.perfetto import iterations_frame

        iters = {n: iterations_frame(sim, n) for n in traced}
    ts_all = {name: _dep_timeseries(dep, end) for name, dep in sim.deployments.items()}
    return Result(summary, df, ts_all, ryaml, attempts, tasks, span_df, iters)


def _traffic_kinds(sim: Simulation) -> list[str]:
    """Per workload index (agent pseudo-workloads included), how its traffic arrives at a
    deployment: its arrival kind when aimed at one directly; ``gateway``, ``disaggregated`` or
    ``agent`` for traffic arriving through those (offline and closed-loop keep their kind)."""
    rs = sim.rs
    out = []
    for w in rs.scenario.workloads.values():
        k = w.arrival.kind
        if k in ("offline", "closed_loop") or w.target in rs.deployments:
            out.append(k)
        else:
            out.append("disaggregated" if w.target in rs.disaggregated else "gateway")
    return out + ["agent"] * (len(sim.workload_names) - len(out))


def _capacity(sim: Simulation, name: str, rows: pd.DataFrame, codes: np.ndarray, kinds: list[str], hit_rate: float,
              end: float) -> dict[str, Any]:
    """A deployment's ``capacity`` entry (serving/capacity.py) from the serving rows it received."""
    rs = sim.rs
    rd = rs.deployments[name]
    served = (rows["status"] != "rejected").to_numpy()
    isl = float(rows["input_tokens"].to_numpy()[served].mean()) if served.any() else 0.0
    osl = float(rows["output_tokens"].to_numpy()[served].mean()) if served.any() else 0.0
    # The nominal rate of each Poisson / Gamma / deterministic workload aimed here, and the stages
    # of staged ones, less the share rejected at the door (too long: they never load a replica).
    nominal = 0.0
    stages: list[tuple[float, float]] = []
    for wi, w in enumerate(rs.scenario.workloads.values()):
        mine = codes == wi
        if w.target != name or not mine.any():
            continue
        share = float(served[mine].mean())
        if kinds[wi] in OPEN_KINDS:
            nominal += float(getattr(w.arrival, "rate_per_s", 0.0)) * share
        elif kinds[wi] == STAGED:
            stages += [(float(st.rate_per_s) * share, float(st.duration_s)) for st in getattr(w.arrival, "stages", [])]
    row_kinds = np.array(kinds, dtype=object)[codes] if len(codes) else np.empty(0, dtype=object)
    # Other open-loop arrivals (traces, gateway attempts, agent calls, disaggregated legs): measured.
    open_rows = np.array([k not in (*OPEN_KINDS, STAGED, "offline", "closed_loop") for k in row_kinds], dtype=bool)
    arrival = rows["arrival_s"].to_numpy(dtype=float)
    admitted = rows["admitted_s"].to_numpy(dtype=float)
    finish = rows["finish_s"].to_numpy(dtype=float)
    # Waiting ends at admission, or when a request left without one (failed, cancelled); one
    # still waiting at the end waits on. Rejected requests never queued: left out.
    wait_end = np.where(np.isfinite(admitted), admitted, np.where(np.isfinite(finish), finish, np.inf))
    return assess(rd, sorted({str(k) for k in row_kinds}), nominal, stages, arrival[served], open_rows[served], wait_end[served],
                  finish[served], isl, osl, hit_rate, end)


def mean_in_system(arrival: np.ndarray, finish: np.ndarray, t0: float, t1: float) -> float:
    """Time-average number of requests in the system over [t0, t1], exactly, from the table:
    each request contributes the overlap of [arrival, finish or t1] with the window."""
    if t1 <= t0:
        return 0.0
    a = np.clip(arrival, t0, t1)
    f = np.clip(np.where(np.isnan(finish), t1, finish), t0, t1)
    return float(np.sum(np.maximum(f - a, 0.0)) / (t1 - t0))


def _dep_timeseries(dep: Any, end: float) -> pd.DataFrame:
    """Per-bin levels averaged over a deployment's replicas (autoscaled: over the replicas loaded
    in each bin, with their time-weighted count in a ``replicas`` column)."""
    reps = dep.replicas
    names = ("waiting", "running", "kv_used", "busy")
    width = reps[0].levels.width
    n_bins = int(np.ceil(end / width)) if end > 0 else 0
    data: dict[str, np.ndarray] = {"t_s": (np.arange(n_bins) + 0.5) * width}
    asc = getattr(dep, "autoscaler", None)
    count: np.ndarray | float = float(len(reps))
    if asc is not None:
        count = asc.per_bin(width, n_bins, end)
    for nm in names:
        acc = np.zeros(n_bins)
        for r in reps:
            s = r.levels.series(nm)[:n_bins]  # closed at `end`, so every replica has n_bins
            acc[: len(s)] += s
        with np.errstate(invalid="ignore", divide="ignore"):
            data[nm] = np.where(count > 0, acc / count, 0.0) if asc is not None else acc / count
    if asc is not None:
        data["replicas"] = count
    return pd.DataFrame(data)


def write_result(result: Result, out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write summary.json, requests.parquet, scenario.resolved.yaml and PNG plots into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    p = out / "summary.json"
    p.write_text(result.to_json())
    written.append(p)
    p = out / "requests.parquet"
    result.requests.to_parquet(p, index=False)
    written.append(p)
    if result.attempts is not None:
        p = out / "attempts.parquet"
        result.attempts.to_parquet(p, index=False)
        written.append(p)
    if result.tasks is not None:
        p = out / "tasks.parquet"
        result.tasks.to_parquet(p, index=False)
        written.append(p)
    if result.spans is not None:
        from stacksim.report.otlp import write_otlp

        p = write_otlp(result.spans, result.summary, out / "traces.otlp.json")
        written.append(p)
    for dep, frame in (result.iterations or {}).items():
        from stacksim.report.perfetto import write_chrome_trace

        written.append(write_chrome_trace(frame, dep, out / f"iterations.{dep}.trace.json"))
    p = out / "scenario.resolved.yaml"
    p.write_text(result.resolved_yaml)
    written.append(p)
    p = out / "timeseries.csv"
    frames = [ts.assign(deployment=name) for name, ts in result.timeseries.items()]
    if frames:
        pd.concat(frames).to_csv(p, index=False)
        written.append(p)
    if plots:
        from stacksim.report.plots import write_plots

        written += write_plots(result, out)
    return written
