"""The re-run of a route on its replacement: the scenario again, same seed, with the route's
primary model swapped (in the LiteLLM model_list) for the replacement the risk section named, so
the latency and spend change is measured by the simulator rather than estimated from catalog
medians."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from stacksim.engine.simulation import Simulation


def _key(t: Any, gw: Any) -> str:
    if t.kind == "self":
        return f"{t.deployment}/{gw.sim.rs.deployments[t.deployment].model.id}"
    return f"{gw.plan.endpoints[t.endpoint].provider}/{t.model.model}"


def rerun_routes(sim: Simulation, summary: dict[str, Any], risk: dict[str, Any]) -> None:
    """Adds ``rerun`` to each route of ``risk["routes"]`` whose replacement is a deployment of the
    run's own model_list; says why not otherwise."""
    from stacksim.engine.simulation import Simulation
    from stacksim.metrics.summary import build_result
    from stacksim.scenario import load_scenario_text

    gw = sim.gateway
    sc = sim.rs.scenario
    if gw is None or sc.gateway is None or sc.gateway.kind != "litellm" or not sc.gateway.model_list:
        return
    keys = [_key(t, gw) for t in gw.targets]
    base = sc.model_dump(mode="json", exclude_none=True, by_alias=True)
    base.pop("lifecycle", None)
    base["gateway"].pop("config_file", None)
    for route, r in risk["routes"].items():
        rep, prim = r.get("replacement"), r.get("primary")
        if route not in summary["gateway"]["routes"]:
            continue
        if not rep or rep == prim or rep not in keys:
            r["rerun"] = {"done": False, "why": "no replacement in this run's model_list to swap in"}
            continue
        data = copy.deepcopy(base)
        entries = data["gateway"]["model_list"]
        donor = entries[keys.index(rep)]["litellm_params"]
        swapped = 0
        for i, t in enumerate(gw.targets):
            if t.group == route and keys[i] == prim:
                entries[i]["litellm_params"] = copy.deepcopy(donor)
                entries[i].get("model_info", {}).pop("id", None)
                swapped += 1
        if not swapped:
            r["rerun"] = {"done": False, "why": "the primary is not a deployment of this route"}
            continue
        rs = load_scenario_text(yaml.safe_dump(data, sort_keys=False), sim.rs.file)
        after = build_result(Simulation(rs, seed=sim.seed).run()).summary["gateway"]["routes"][route]
        before = summary["gateway"]["routes"][route]
        b50, a50 = before["latency_ms"]["e2e"]["p50"], after["latency_ms"]["e2e"]["p50"]
        r["rerun"] = {
            "done": True,
            "e2e_p50_ms": {"before": b50, "after": a50, "change": round(a50 - b50, 3) if a50 is not None and b50 is not None else None},
            "ttft_p50_ms": {"before": before["latency_ms"]["ttft"]["p50"], "after": after["latency_ms"]["ttft"]["p50"]},
            "cost_usd": {"before": before["cost_usd"], "after": after["cost_usd"], "change": round(after["cost_usd"] - before["cost_usd"], 6)},
            "failed": {"before": before["failed"], "after": after["failed"]},
            "basis": f"the whole scenario again with seed {sim.seed}, the route's {prim} entries replaced by {rep}'s litellm_params",
        }
