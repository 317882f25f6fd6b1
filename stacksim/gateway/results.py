"""The gateway's part of a run's results: the client calls as request rows, the attempt log, and
the ``gateway`` and ``faults`` sections of ``summary.json``."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stacksim.gateway.providers import default_spreads
from stacksim.gateway.runtime import DONE_CALL, REASONS
from stacksim.metrics import RUNNING

if TYPE_CHECKING:
    from stacksim.engine.simulation import Simulation


def calls_frame(sim: Simulation, end: float) -> pd.DataFrame:
    """One row per gateway call, with the columns of a direct request plus the gateway's own."""
    gw = sim.gateway
    assert gw is not None and sim.calls is not None
    c = sim.calls
    keep = c.arrival_s <= end
    idx = np.flatnonzero(keep)
    status = np.where(c.state[idx] == DONE_CALL, c.status[idx], RUNNING)
    tgt = c.target[idx]
    labels = [t.label for t in gw.targets]
    dep_index = {name: i for i, name in enumerate(sim.deployment_names)}
    dep = np.array([dep_index[gw.targets[t].deployment] if t >= 0 and gw.targets[t].kind == "self" else -1 for t in tgt.tolist()],
                   dtype=np.int64)
    regions = gw.region_ids
    groups = list(gw.plan.groups)

    def cat(codes: np.ndarray, names: list[str]) -> pd.Categorical:
        return pd.Categorical.from_codes(np.where(codes < 0, -1, codes), categories=names)

    return pd.DataFrame({
        "request_id": idx,
        "arrival_s": c.arrival_s[idx],
        "admitted_s": np.full(idx.size, np.nan),
        "first_token_s": c.first_token_s[idx],
        "finish_s": np.where(c.state[idx] == DONE_CALL, c.finish_s[idx], np.nan),
        "input_tokens": c.input_tokens[idx],
        "output_tokens": c.output_tokens[idx],
        "workload": c.workload[idx],
        "deployment": dep,
        "replica": np.full(idx.size, -1),
        "preemptions": np.zeros(idx.size, dtype=np.int64),
        "status": status,
        "call": idx,
        "via": "gateway",
        "route": cat(c.group[idx], groups),
        "target": cat(tgt, labels),
        "outcome": cat(np.where(c.state[idx] == DONE_CALL, c.reason[idx], -1), REASONS),
        "http_status": c.http[idx],
        "attempts": c.attempts[idx],
        "retries": c.retries[idx],
        "fallbacks": c.fallbacks[idx],
        "cache_hit": pd.Categorical.from_codes(c.cache[idx], categories=["none", "exact", "semantic"]),
        "client_region": cat(c.client_region[idx], regions),
        "gateway_region": cat(c.gw_region[idx], regions),
        "served_region": cat(c.served_region[idx], regions),
        "cost_usd": c.cost_usd[idx],
        "egress_usd": c.egress_usd[idx],
        "cached_tokens": c.cached_tokens[idx],
    })


def attempts_frame(sim: Simulation) -> pd.DataFrame:
    gw = sim.gateway
    assert gw is not None
    t = np.array(gw.a_target, dtype=np.int64)
    return pd.DataFrame({
        "call": np.array(gw.a_call, dtype=np.int64),
        "target": pd.Categorical.from_codes(t, categories=[x.label for x in gw.targets]) if t.size else pd.Categorical([]),
        "start_s": np.array(gw.a_start),
        "end_s": np.array(gw.a_end),
        "http_status": np.array(gw.a_http, dtype=np.int64),
        "outcome": np.array(gw.a_kind, dtype=object),
    })


def _ms(x: np.ndarray) -> dict[str, float | int | None]:
    from stacksim.metrics.summary import stats_ms

    return stats_ms(np.asarray(x, dtype=float))


def _lat(df: pd.DataFrame) -> dict[str, Any]:
    ok = (df["status"] == "completed").to_numpy()
    d = df[ok]
    return {"ttft": _ms((d["first_token_s"] - d["arrival_s"]).to_numpy()), "e2e": _ms((d["finish_s"] - d["arrival_s"]).to_numpy())}


def gateway_summary(sim: Simulation, calls: pd.DataFrame, attempts: pd.DataFrame, end: float) -> dict[str, Any]:
    gw = sim.gateway
    assert gw is not None
    plan = gw.plan
    if "outcome" not in calls:  # no call at all, beside rows of other kinds only: the gateway's (empty) columns
        calls = calls.reindex(columns=calls.columns.union(calls_frame(sim, end).columns, sort=False))
    st = calls["status"]
    outcome = Counter(str(x) for x in calls["outcome"].dropna())
    fails = attempts["http_status"].to_numpy() if len(attempts) else np.zeros(0, dtype=np.int64)
    routes = {}
    for g in plan.groups:
        sel = calls[calls["route"] == g]
        routes[g] = {
            "calls": len(sel),
            "completed": int((sel["status"] == "completed").sum()),
            "failed": int((sel["status"] == "failed").sum()),
            "rejected": int((sel["status"] == "rejected").sum()),
            "latency_ms": _lat(sel),
            "cost_usd": round(float(sel["cost_usd"].sum()), 6),
        }
    targets = {}
    for t in gw.targets:
        a = attempts[attempts["target"] == t.label] if len(attempts) else attempts
        h = Counter(int(x) for x in a["http_status"]) if len(a) else Counter()
        served = calls[calls["target"] == t.label]
        targets[t.label] = {
            "route": t.group,
            "kind": "self-hosted" if t.kind == "self" else "provider",
            **({"disaggregated": t.disagg} if t.disagg is not None else {}),
            **({"lora": t.lora if isinstance(t.lora, str) else t.lora.model_dump()} if t.lora is not None else {}),
            "region": t.region,
            "jurisdiction": t.jurisdiction,
            "attempts": len(a),
            "ok": int(h.get(200, 0)),
            "errors_by_status": {str(k): v for k, v in sorted(h.items()) if k != 200},
            "cooldowns": sum(1 for i, _, _ in gw.cooldowns.events if i == t.index),
            "latency_ms": _lat(served),
            "cost_usd": round(float(served["cost_usd"].sum()), 6),
            "usd_per_1m_tokens_in_out": [round(t.usd_in_per_token * 1e6, 6), round(t.usd_out_per_token * 1e6, 6)],
            "latency_source": t.model.latency_source if t.model is not None else "simulated replicas",
        }
    providers = {}
    for name, pr in gw.providers.items():
        providers[name] = {
            "provider": pr.ep.provider,
            "region": pr.ep.region,
            "jurisdiction": pr.ep.jurisdiction,
            "price_uplift": pr.ep.price_uplift,
            "calls": sum(s.calls for s in pr.models.values()),
            "rate_limited_429": sum(s.rejected_429 for s in pr.models.values()),
            "limits": {m: {"rpm": s.rpm.limit, "tpm": s.tpm.limit, "tier": s.pm.limit_tier} for m, s in pr.models.items()},
            "outages": [[round(a, 3), round(b, 3), mode, status] for a, b, mode, status in pr.outages],
        }
    by_region: dict[str, Any] = {}
    for r in sorted({str(x) for x in calls["served_region"].dropna()} | {str(x) for x in calls["client_region"].dropna()}):
        sel = calls[calls["served_region"] == r]
        by_region[r] = {
            "calls_from": int((calls["client_region"] == r).sum()),
            "calls_served": len(sel),
            "latency_ms": _lat(sel),
        }
    principals = {}
    for (kind, name), p in gw.principals.items():
        entry: dict[str, Any] = {"rate_limit_rejections": p.rejected_rate}
        if p.budget is not None:
            entry |= {
                "max_budget_usd": p.budget.max,
                "budget_duration_s": p.budget.duration,
                "spent_usd_this_window": round(p.budget.spent, 6),
                "budget_rejections": p.rejected_budget,
                "first_budget_rejection_s": round(p.budget.hit_at[0], 3) if p.budget.hit_at else None,
                "max_overshoot_usd": round(max(p.budget.peak_over, 0.0), 6),
            }
        principals[f"{kind}:{name}"] = entry
    cd = gw.cooldowns.events
    spreads = default_spreads()
    if plan.kind == "portkey":
        head: dict[str, Any] = {"kind": "portkey", "configs": {n: _tree(node, plan) for n, node in plan.portkey.items()}}
    else:
        head = {"kind": "litellm", "routing_strategy": plan.strategy}
    return {
        **head,
        "num_retries": plan.num_retries,
        "timeout_s": plan.timeout,
        "cooldown_s": plan.cooldown_s,
        "allowed_fails": plan.allowed_fails,
        "instances": {r: plan.spec.instances_per_region for r in plan.spec.regions},
        "ignored_settings": sorted(set(plan.ignored)),
        "calls": {
            "arrived": len(calls),
            "completed": int((st == "completed").sum()),
            "rejected": int((st == "rejected").sum()),
            "failed": int((st == "failed").sum()),
            "in_flight": int((st == "running").sum()),
        },
        "outcomes": dict(sorted(outcome.items())),
        "attempts": len(attempts),
        "retries": int(calls["retries"].sum()),
        "calls_retried": int((calls["retries"] > 0).sum()),
        "fallbacks": int(calls["fallbacks"].sum()),
        "calls_fallen_back": int((calls["fallbacks"] > 0).sum()),
        "cooldowns": {"count": len(cd), "total_s": round(sum(b - a for _, a, b in cd), 3)},
        "cache": {
            "exact_hits": int((calls["cache_hit"] == "exact").sum()),
            "semantic_hits": int((calls["cache_hit"] == "semantic").sum()),
            "hit_rate": round(float((calls["cache_hit"] != "none").mean()) if len(calls) else 0.0, 6),
        },
        "rate_limit_rejections": {
            "gateway": int(outcome.get("rate_limited", 0) + outcome.get("parallel_limit", 0)),
            "provider_429_attempts": int(np.sum(fails == 429)),
        },
        "budget_rejections": int(outcome.get("budget_exceeded", 0)),
        "residency": {
            "failed_closed": int(outcome.get("residency_fail_closed", 0)),
            "violations": residency_violations(sim, calls, attempts),
        },
        "spend": {
            "api_usd": round(float(calls["cost_usd"].sum()), 6),
            "egress_usd": round(float(calls["egress_usd"].sum()), 6),
        },
        "provider_latency_spread": {
            "ttft_sigma_default": round(spreads[0], 4),
            "output_rate_sigma_default": round(spreads[1], 4),
            "basis": "lognormal sigma used where a catalog row gives only a median: the median over rows that give a tail "
            "(0 = held at the median: no published tail)",
        },
        "routes": routes,
        "targets": targets,
        "providers": providers,
        "regions": by_region,
        "principals": principals,
    }


def residency_violations(sim: Simulation, calls: pd.DataFrame, attempts: pd.DataFrame) -> int:
    """Attempts (and gateway entries) in a jurisdiction the call's residency class forbids,
    recomputed from the logs, independently of the router's filter."""
    from stacksim.network import allowed

    gw = sim.gateway
    assert gw is not None
    rm = gw.rm
    wl_of = sim.calls.workload if sim.calls is not None else np.zeros(0, dtype=np.int64)
    bad = 0
    for cid, t in zip(attempts["call"].tolist(), [gw.targets[i] for i in (attempts["target"].cat.codes.tolist() if len(attempts) else [])]):
        if not allowed(gw.residency[wl_of[cid]], rm.jurisdiction(t.region)):
            bad += 1
    for cid, r in zip(calls["request_id"].tolist(), calls["gateway_region"].tolist()):
        if isinstance(r, str) and not allowed(gw.residency[wl_of[cid]], rm.jurisdiction(r)):
            bad += 1
    return bad


def _tree(node: Any, plan: Any) -> str:
    """A Portkey config tree in one line: fallback(loadbalance(a*0.7, b*0.3), c)."""
    if node.mode == "leaf":
        return plan.targets[node.target].label.split(":", 1)[1] + (f"*{node.weight:g}" if node.weight != 1 else "")
    return f"{node.mode}(" + ", ".join(_tree(c, plan) for c in node.children) + ")"


def workload_reach(sim: Simulation) -> list[set[str]]:
    """What each workload's requests can land on: deployments and provider endpoints (through
    its route and the route's fallbacks)."""
    sc = sim.rs.scenario
    gw = sim.gateway
    out = []
    for w in sc.workloads.values():
        if w.target in sim.deployments:
            out.append({f"deployment:{w.target}"})
            continue
        if w.target in sim.rs.disaggregated:  # a prefill/decode pair (serving/disagg.py)
            g = sim.rs.disaggregated[w.target]
            out.append({f"deployment:{g.prefill.name}", f"deployment:{g.decode.name}"})
            continue
        assert gw is not None
        plan = gw.plan
        g0 = plan.route(w.target)
        groups = [g0, *plan.fallbacks.get(g0, plan.default_fallbacks),
                  *plan.context_window_fallbacks.get(g0, []), *plan.content_policy_fallbacks.get(g0, [])]
        reach = set()
        for g in groups:
            for i in plan.groups.get(g, []):
                t = plan.targets[i]
                if t.disagg is not None:  # both sides of a prefill/decode pair
                    g = sim.rs.disaggregated[t.disagg]
                    reach |= {f"deployment:{g.prefill.name}", f"deployment:{g.decode.name}"}
                    continue
                reach.add(f"deployment:{t.deployment}" if t.kind == "self" else f"endpoint:{t.endpoint}")
        out.append(reach)
    return out


def faults_summary(sim: Simulation, df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per fault occurrence: the requests that could reach what failed (their route, fallbacks
    included), arriving during the fault vs outside it, and what happened to them."""
    out = []
    reach = workload_reach(sim)
    wl = df["workload"].cat.codes.to_numpy()
    ok = (df["status"] == "completed").to_numpy()
    e2e = (df["finish_s"] - df["arrival_s"]).to_numpy()
    failed = df["status"].isin(["failed", "rejected"]).to_numpy()
    retried = df["retries"].to_numpy() > 0 if "retries" in df else np.zeros(len(df), dtype=bool)
    arr = df["arrival_s"].to_numpy()
    for o in sim.faults.occurrences:
        res = o.resources()
        hit = np.array([bool(r & res) for r in reach], dtype=bool)
        affected = hit[wl] if len(wl) else np.zeros(0, dtype=bool)
        during = affected & (arr >= o.start_s) & (arr < o.end_s)
        outside = affected & ~((arr >= o.start_s) & (arr < o.end_s))
        out.append({
            "kind": o.kind,
            "fault_index": o.index,
            "target": o.target,
            "workloads_affected": [n for n, h in zip(sim.workload_names, hit.tolist()) if h],
            "start_s": round(o.start_s, 3),
            "end_s": round(o.end_s, 3),
            "serving_requests_killed": o.requests_failed,
            "requests_during": int(during.sum()),
            "failed_during": int((failed & during).sum()),
            "retried_during": int((retried & during).sum()),
            "failed_outside": int((failed & outside).sum()),
            "e2e_ms_during": _ms(e2e[ok & during]),
            "e2e_ms_outside": _ms(e2e[ok & outside]),
            "note": o.note,
        })
    return out

