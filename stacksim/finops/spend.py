"""The spend section of a run: what each part of the stack cost in the simulated window, a
monthly projection, and who spent it.

- Accelerators: every pool's accelerators for the run at its price (purchase type and basis in
  ``pricing.py``); reserved and owned capacity is paid whether used or not, so idle capacity is
  reported: accelerators no deployment uses, and the unbusy share of those in use. An on-demand
  or spot pool whose deployments all autoscale pays only the replica-hours they held (from
  provisioning start to release; ``serving/autoscale.py``), and its idle cost is the unbusy share
  of those; an autoscaled deployment's own spend is its replica-hours on any pool.
- Per use: API tokens at each provider's price with regional uplift and cached-input pricing
  (the gateway), egress between regions, tools and vector-store queries (agents).
- Fixed services: vector stores' monthly price, gateway instances' hourly price.
- Attribution: a deployment's accelerator spend is shared by the requests it served in
  proportion to the tokens it computed for them (prompt tokens not found in its prefix cache,
  plus output tokens); API, egress and tool costs belong to the request that caused them. Each
  request carries its workload's tags, so spend splits by team, tenant, workload (agent fleets
  as ``fleet/agent``), model, provider and region.
- Month: accelerators and fixed services at their rate for 730 h; per-use costs scaled from the
  simulated window as if its traffic went on all month (stated in ``basis``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stacksim.finops.pricing import owned_split

if TYPE_CHECKING:
    from stacksim.engine.simulation import Simulation

HOURS_PER_MONTH = 730.0  # 8,760 h / 12
DIMENSIONS = ("team", "tenant", "workload", "fleet", "agent", "model", "provider", "region")


def request_costs(sim: Simulation, df: pd.DataFrame, serving: pd.DataFrame, dep_spend: dict[str, float]) -> np.ndarray:
    """Accelerator dollars per row of ``df`` (direct requests and gateway calls)."""
    gpu = np.zeros(len(serving))
    if len(serving):
        cached = serving["cached_tokens"].to_numpy(dtype=float) if "cached_tokens" in serving else np.zeros(len(serving))
        work = np.maximum(serving["input_tokens"].to_numpy(dtype=float) - np.nan_to_num(cached), 0.0) + serving["output_tokens"].to_numpy(dtype=float)
        done = (serving["status"] == "completed").to_numpy() | (serving["status"] == "running").to_numpy()
        work = np.where(done, work, 0.0)
        dep = serving["deployment"].astype(str).to_numpy()
        for name, usd in dep_spend.items():
            sel = dep == name
            tot = work[sel].sum()
            if tot > 0:
                gpu[sel] = usd * work[sel] / tot
    out = np.zeros(len(df))
    direct = (df["via"] == "direct").to_numpy()
    s_direct = (serving["call"].to_numpy() < 0) if len(serving) else np.zeros(0, dtype=bool)
    # Legs of disaggregated requests (serving/disagg.py): their client row carries both legs' cost.
    s_leg = serving["disagg"].to_numpy() >= 0 if "disagg" in serving else np.zeros(len(serving), dtype=bool)
    s_direct &= ~s_leg
    # Direct rows of df are the direct rows of serving, in the same order (build_result builds both so).
    out[np.flatnonzero(direct)] = gpu[s_direct]
    gw = (df["via"] == "gateway").to_numpy()
    if gw.any() and len(serving):
        s_gw = ~s_direct & ~s_leg
        by_call = pd.Series(gpu[s_gw]).groupby(serving["call"].to_numpy()[s_gw]).sum()
        calls = df.loc[gw, "call"].to_numpy()
        out[np.flatnonzero(gw)] = by_call.reindex(calls).fillna(0.0).to_numpy()
    dz = (df["via"] == "disaggregated").to_numpy()
    if dz.any() and s_leg.any():
        by_client = pd.Series(gpu[s_leg]).groupby(serving["disagg"].to_numpy()[s_leg]).sum()
        out[np.flatnonzero(dz)] = by_client.reindex(df.loc[dz, "request_id"].to_numpy()).fillna(0.0).to_numpy()
    return out


def _dims(sim: Simulation, df: pd.DataFrame) -> dict[str, np.ndarray]:
    rs = sim.rs
    n = len(df)
    out: dict[str, np.ndarray] = {}
    for tag in ("team", "tenant"):
        col = f"tag_{tag}"
        out[tag] = df[col].astype(str).replace("", "(none)").to_numpy() if col in df else np.full(n, "(none)", dtype=object)
    out["workload"] = df["workload"].astype(str).to_numpy()
    # Agent fleets (the workflow) and agents: from the pseudo-workloads their LLM calls carry.
    fleet_of = {wi: f for (f, _a, _t), wi in getattr(sim, "agent_workloads", {}).items()}
    agent_of = {wi: a for (_f, a, _t), wi in getattr(sim, "agent_workloads", {}).items()}
    codes = df["workload"].cat.codes.to_numpy() if hasattr(df["workload"], "cat") else np.full(n, -1)
    out["fleet"] = np.array([fleet_of.get(int(c), "(not an agent)") for c in codes], dtype=object)
    out["agent"] = np.array([agent_of.get(int(c), "(not an agent)") for c in codes], dtype=object)
    dep = df["deployment"].astype(str).to_numpy()
    model = np.array([rs.deployments[d].model.id if d in rs.deployments else "" for d in dep], dtype=object)
    provider = np.where(dep != "nan", "self-hosted", "").astype(object)
    region = np.array([rs.deployments[d].pool.spec.region if d in rs.deployments else "" for d in dep], dtype=object)
    gw = sim.gateway
    if gw is not None and "target" in df:
        tgt = df["target"].astype(str).to_numpy()
        by_label = {t.label: t for t in gw.targets}
        for i in np.flatnonzero((df["via"] == "gateway").to_numpy()):
            t = by_label.get(tgt[i])
            if t is None:  # answered by the gateway's cache, or by no deployment at all
                label = "(gateway cache)" if df["status"].iat[i] == "completed" else "(not served)"
                model[i], provider[i], region[i] = label, label, label
                continue
            region[i] = t.region
            if t.kind == "self":
                model[i] = rs.deployments[t.deployment].model.id  # type: ignore[index]
                provider[i] = "self-hosted"
            else:
                assert t.model is not None
                model[i] = t.model.catalog_model or t.model.model
                provider[i] = gw.plan.endpoints[t.endpoint].provider  # type: ignore[index]
    out["model"], out["provider"], out["region"] = model, provider, region
    return out


def _split(keys: np.ndarray, usd: np.ndarray, tokens: np.ndarray, done: np.ndarray, total: float) -> dict[str, Any]:
    frame = pd.DataFrame({"k": keys, "usd": usd, "tok": tokens, "done": done})
    g = frame.groupby("k", sort=True)
    out = {}
    for k, sub in g:
        usd_k = float(sub["usd"].sum())
        n_done = int(sub["done"].sum())
        tok = float(sub.loc[sub["done"], "tok"].sum())
        out[str(k)] = {
            "usd": round(usd_k, 6), "share": round(usd_k / total, 6) if total > 0 else None, "requests": len(sub),
            "usd_per_request": round(usd_k / n_done, 8) if n_done else None,
            "usd_per_1m_tokens": round(usd_k / tok * 1e6, 6) if tok > 0 else None,
        }
    return out


def spend_section(sim: Simulation, df: pd.DataFrame, serving: pd.DataFrame, summary: dict[str, Any],
                  tasks: pd.DataFrame | None) -> dict[str, Any]:
    """Adds ``df["gpu_cost_usd"]`` and ``df["cost_total_usd"]``; returns ``summary["spend"]``."""
    rs = sim.rs
    sc = rs.scenario
    end = max(sim.end_time, 1e-9)
    hours = end / 3600.0
    spend = dict(summary["spend"])
    dep_spend = {n: d["spend_usd"] for n, d in summary["deployments"].items()}
    gpu = request_costs(sim, df, serving, dep_spend)
    df["gpu_cost_usd"] = gpu
    api = df["cost_usd"].fillna(0.0).to_numpy() if "cost_usd" in df else np.zeros(len(df))
    egress = df["egress_usd"].fillna(0.0).to_numpy() if "egress_usd" in df else np.zeros(len(df))
    total_req = gpu + api + egress
    df["cost_total_usd"] = total_req

    # Pools: purchase, price, month, idle capacity.
    pools = {}
    gpu_month = 0.0
    idle_run = 0.0
    for name, rp in rs.pools.items():
        p = summary["pools"][name]
        month = rp.spec.count * rp.price_usd_per_gpu_hour * HOURS_PER_MONTH
        # An on-demand or spot pool whose deployments all autoscale pays only the replica-hours
        # held (metrics/summary.py): its month is the run's rate, and GPUs it does not hold cost
        # nothing. Reserved and owned pools are paid in full whether used or not.
        elastic = p.get("billing") == "allocated_replica_hours"
        if elastic:
            month = p["spend_usd"] / hours * HOURS_PER_MONTH
        gpu_month += month
        unused = 0.0 if elastic else (rp.spec.count - p["gpus_used"]) * rp.price_usd_per_gpu_hour * hours
        # gpus_used is a mean (a float) when autoscaled deployments use the pool, possibly below 1.
        unbusy = p["gpus_used"] * rp.price_usd_per_gpu_hour * hours * (1.0 - min(p["utilisation"] * rp.spec.count / (p["gpus_used"] or 1), 1.0))
        idle_run += unused + unbusy
        entry = {
            "purchase": rp.spec.purchase, "usd_per_gpu_hour": round(rp.price_usd_per_gpu_hour, 6), "price_basis": rp.price_basis,
            "run_usd": p["spend_usd"], "month_usd": round(month, 2),
            "idle_run_usd": round(unused + unbusy, 6),
            "committed": rp.spec.purchase in ("reserved_1y", "reserved_3y", "owned"),
            "billing": p.get("billing", "whole_pool"),
        }
        if rp.spec.purchase == "owned":
            capex, power = owned_split(rp.spec, rp.accelerator)
            entry["owned_month_usd"] = {"capex": round(capex * rp.spec.count * HOURS_PER_MONTH, 2),
                                        "power": round(power * rp.spec.count * HOURS_PER_MONTH, 2)}
        pools[name] = entry
    scale = HOURS_PER_MONTH / hours
    tools_run = float(spend.get("agent_tools_usd", 0.0))
    services_month = sum(v.usd_per_month for v in sc.vector_stores.values())
    if sc.gateway is not None:
        services_month += sc.gateway.instance_usd_per_hour * sc.gateway.instances_per_region * len(sc.gateway.regions) * HOURS_PER_MONTH
    services_run = services_month * hours / HOURS_PER_MONTH
    api_run, egress_run = float(api.sum()), float(egress.sum())
    api_month, capped = _api_month(sc, df, api * scale)
    monthly = {
        "gpu_usd": round(gpu_month, 2),
        "api_usd": round(api_month, 2),
        "egress_usd": round(egress_run * scale, 2),
        "tools_usd": round(tools_run * scale, 2),
        "services_usd": round(services_month, 2),
    }
    monthly["total_usd"] = round(sum(monthly.values()), 2)
    run_total = float(spend["gpu_usd"]) + api_run + egress_run + tools_run + services_run
    dims = _dims(sim, df)
    tokens = (df["input_tokens"].to_numpy(dtype=float) + df["output_tokens"].to_numpy(dtype=float))
    done = (df["status"] == "completed").to_numpy()
    attributed = float(total_req.sum())
    attribution = {d: _split(dims[d], total_req, tokens, done, attributed) for d in DIMENSIONS}
    n_done = int(done.sum())
    tok_done = float(tokens[done].sum())
    unit = {
        "usd_per_request": round(run_total / n_done, 8) if n_done else None,
        "usd_per_1m_tokens": round(run_total / tok_done * 1e6, 6) if tok_done > 0 else None,
    }
    if tasks is not None and len(tasks):
        task_cost = _task_costs(sim, df, tasks)
        tasks["cost_total_usd"] = task_cost
        ended = (tasks["status"] != "running").to_numpy()
        unit["usd_per_agent_task"] = round(float(task_cost[ended].mean()), 6) if ended.any() else None
    budgets = []
    g = summary.get("gateway")
    if g is not None:
        for who, p in g.get("principals", {}).items():
            if "max_budget_usd" in p:
                budgets.append({"principal": who, "max_budget_usd": p["max_budget_usd"], "spent_usd": p["spent_usd_this_window"],
                                "first_rejection_s": p["first_budget_rejection_s"], "rejections": p["budget_rejections"],
                                "max_overshoot_usd": p["max_overshoot_usd"]})
    spend.update({
        "run": {"gpu_usd": spend["gpu_usd"], "api_usd": round(api_run, 6), "egress_usd": round(egress_run, 6),
                "tools_usd": round(tools_run, 6), "services_usd": round(services_run, 6), "total_usd": round(run_total, 6),
                "idle_gpu_usd": round(idle_run, 6)},
        "monthly": monthly,
        "monthly_basis": f"accelerators and fixed services at their rate for {HOURS_PER_MONTH:g} h (reserved and owned paid "
        "whether used or not; on-demand and spot pools whose deployments all autoscale at the run's replica-hour rate); "
        f"per-use costs (API, egress, tools) x {scale:.4g}, as if the simulated {hours:.4g} h of traffic "
        "went on all month" + (f"; API spend of {', '.join(capped)} capped at its budget per duration" if capped else ""),
        "pools": pools,
        "attribution": attribution,
        "attribution_basis": "a deployment's accelerator spend shared by its requests in proportion to the tokens it computed "
        "for them (uncached prompt + output); API, egress and tool costs to the request that caused them; idle pool "
        "capacity is in run.idle_gpu_usd, not attributed",
        "unit_costs": unit,
        "budgets": budgets,
    })
    return spend


def _task_costs(sim: Simulation, df: pd.DataFrame, tasks: pd.DataFrame) -> np.ndarray:
    """API + tool dollars a task spent (its own counters) plus the accelerator dollars of its
    self-hosted LLM calls (from the span log: request ids and gateway call ids)."""
    ag = sim.agents
    assert ag is not None
    gpu_by_rid: dict[int, float] = {}
    gpu_by_call: dict[int, float] = {}
    direct = (df["via"] == "direct").to_numpy()
    ids = df["request_id"].to_numpy()
    calls = df["call"].to_numpy()
    g = df["gpu_cost_usd"].to_numpy()
    for i in np.flatnonzero(direct):
        gpu_by_rid[int(ids[i])] = float(g[i])
    for i in np.flatnonzero(~direct):
        gpu_by_call[int(calls[i])] = float(g[i])
    extra = np.zeros(len(tasks))
    log = ag.spans
    for i in range(len(log)):
        if log.kind[i] != "llm":
            continue
        a = log.attrs[i]
        t = log.trace[i]
        if "stacksim.request_id" in a:
            extra[t] += gpu_by_rid.get(int(a["stacksim.request_id"]), 0.0)
        elif "stacksim.call_id" in a:
            extra[t] += gpu_by_call.get(int(a["stacksim.call_id"]), 0.0)
    return tasks["cost_usd"].to_numpy(dtype=float) + extra


def _api_month(sc: Any, df: pd.DataFrame, projected: np.ndarray) -> tuple[float, list[str]]:
    """Projected monthly API dollars, with each gateway budget (key / team / user) applied: a
    principal's requests cannot spend more than max_budget per budget_duration in a month."""
    from stacksim.gateway.limits import parse_duration_s

    projected = projected.copy()
    capped = []
    gw = sc.gateway
    if gw is not None:
        for kind, table in (("key", gw.keys), ("team", gw.teams), ("user", gw.users)):
            col = f"tag_{kind}"
            for name, lim in table.items():
                if lim.max_budget is None or col not in df:
                    continue
                sel = (df[col].astype(str) == name).to_numpy()
                dur_h = parse_duration_s(lim.budget_duration) / 3600.0 if lim.budget_duration else None
                cap = lim.max_budget * (HOURS_PER_MONTH / dur_h if dur_h else 1.0)
                got = float(projected[sel].sum())
                if got > cap > 0:
                    projected[sel] *= cap / got
                    capped.append(f"{kind}:{name}")
    return float(projected.sum()), capped
