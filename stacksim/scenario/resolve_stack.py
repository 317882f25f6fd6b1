"""Semantic checks for the sections around the serving core: regions, residency, workloads'
gateway targets, the gateway plan and faults."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stacksim.catalog.stack import provider_models, regions
from stacksim.gateway.plan import plan_gateway
from stacksim.network import ANY, GLOBAL, build_region_map
from stacksim.scenario import schema as S
from stacksim.scenario import schema_stack as F

if TYPE_CHECKING:
    from stacksim.scenario.resolve import PathProblem, ResolvedScenario


def resolve_stack(rs: ResolvedScenario, problems: list[PathProblem]) -> None:
    from stacksim.scenario.resolve import PathProblem

    sc = rs.scenario
    custom = {n: (r.jurisdiction, r.lat, r.lon, r.egress_usd_per_gb) for n, r in sc.regions.items()}
    for n, r in sc.regions.items():
        if n not in regions() and r.jurisdiction is None:
            problems.append(PathProblem(("regions", n, "jurisdiction"), f"'{n}' is not a catalog region ({', '.join(sorted(regions()))}); give its jurisdiction"))
    rm = build_region_map(custom)
    rs.regions = rm
    # A round trip between two regions is measured (catalog pairs) or estimated from their
    # locations (network/); a custom region without lat/lon has neither, which the run found only
    # when a call first crossed to it.
    used = _regions_used(sc.model_dump())
    for n, r in sc.regions.items():
        if n not in regions() and (r.lat is None or r.lon is None) and n in used and len(used - {n, GLOBAL}) > 0:
            others = ", ".join(sorted(used - {n, GLOBAL}))
            problems.append(PathProblem(("regions", n), f"'{n}' has no location, so its round trips to {others} cannot be "
                                        "estimated; give its lat and lon (degrees)"))
    valid_regions = ", ".join(sorted(rm.places))
    jurisdictions = sorted({p.jurisdiction for p in rm.places.values() if p.jurisdiction} | {ANY})
    for n, pool in sc.pools.items():
        if pool.region not in rm.places:
            problems.append(PathProblem(("pools", n, "region"), f"unknown region '{pool.region}'; valid: {valid_regions} (or define it under regions:)"))
    for n, rc in sc.residency.items():
        for j in rc.allowed_jurisdictions:
            if j not in jurisdictions:
                problems.append(PathProblem(("residency", n, "allowed_jurisdictions"), f"unknown jurisdiction '{j}'; valid: {', '.join(jurisdictions)}"))
    plan = plan_gateway(rs, rm, problems)
    rs.gateway_plan = plan
    groups = plan.names() if plan is not None else []
    for wname, w in sc.workloads.items():
        where = ("workloads", wname)
        via_gateway = w.target not in sc.deployments and w.target not in sc.disaggregated
        if via_gateway and w.target not in groups:
            valid = [f"deployments: {', '.join(sc.deployments) or 'none'}"]
            if sc.disaggregated:
                valid.append(f"disaggregated: {', '.join(sc.disaggregated)}")
            if sc.gateway is not None:
                what = "Portkey configs" if sc.gateway.kind == "portkey" else "gateway model_name"
                valid.append(f"{what}: {', '.join(groups) or 'none'}")
            problems.append(PathProblem(where + ("target",), f"no deployment or gateway model group named '{w.target}'; {'; '.join(valid)}"))
            continue
        if via_gateway and isinstance(w.arrival, S.ClosedLoop):
            problems.append(PathProblem(where + ("arrival", "kind"), "closed_loop clients send straight to a deployment; through the gateway use an open-loop arrival"))
        for field, value in (("region", w.region), ("residency", w.residency), ("prompts", w.prompts)):
            if value is not None and not via_gateway:
                problems.append(PathProblem(where + (field,), f"{field} applies to requests through the gateway; '{w.target}' is a deployment" + (" group" if w.target in sc.disaggregated else "")))
        if w.region is not None and w.region not in rm.places:
            problems.append(PathProblem(where + ("region",), f"unknown region '{w.region}'; valid: {valid_regions}"))
        if w.residency is not None and w.residency not in sc.residency:
            problems.append(PathProblem(where + ("residency",), f"no residency class '{w.residency}'; defined: {', '.join(sc.residency) or 'none (add a residency: section)'}"))
    if sc.gateway is not None:
        for kind, table in (("key", sc.gateway.keys), ("team", sc.gateway.teams), ("user", sc.gateway.users)):
            for name, lim in table.items():
                if lim.budget_duration is not None and lim.max_budget is None:
                    problems.append(PathProblem(("gateway", f"{kind}s", name, "budget_duration"), "a budget_duration needs a max_budget"))
    endpoints = plan.endpoints if plan is not None else {}
    for i, f in enumerate(sc.faults):
        where = ("faults", i)
        if isinstance(f, F.ReplicaFailure):
            if f.deployment not in sc.deployments:
                problems.append(PathProblem(where + ("deployment",), f"no deployment named '{f.deployment}'; deployments: {', '.join(sc.deployments) or 'none'}"))
            elif f.replica is not None and f.replica >= sc.deployments[f.deployment].replicas:
                problems.append(PathProblem(where + ("replica",), f"'{f.deployment}' has replicas 0..{sc.deployments[f.deployment].replicas - 1}"))
            if f.replica is not None and f.at_s is None:
                problems.append(PathProblem(where + ("replica",), "drawn failures (rate_per_hour) hit a random replica; remove replica"))
        elif isinstance(f, F.SpotPreemption):
            if f.pool not in sc.pools:
                problems.append(PathProblem(where + ("pool",), f"no pool named '{f.pool}'; pools: {', '.join(sc.pools) or 'none'}"))
            elif sc.pools[f.pool].purchase != "spot":
                problems.append(PathProblem(where + ("pool",), f"pool '{f.pool}' is bought on demand; only pools with purchase: spot are preempted"))
        elif isinstance(f, F.ProviderOutage):
            known = set(endpoints) | {e.provider for e in endpoints.values()} | set(provider_models())
            if f.provider not in known:
                problems.append(PathProblem(where + ("provider",), f"unknown provider '{f.provider}'; endpoints: {', '.join(endpoints) or 'none'}; catalog providers: {', '.join(sorted(provider_models()))}"))
        elif isinstance(f, F.RegionLoss) and f.region not in rm.places:
            problems.append(PathProblem(where + ("region",), f"unknown region '{f.region}'; valid: {valid_regions}"))


def _regions_used(data: object) -> set[str]:
    """Every region a scenario names (``region:`` and ``regions:`` values anywhere, defaults included)."""
    out: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            if k in ("region", "regions") and isinstance(v, str):
                out.add(v)
            elif k == "regions" and isinstance(v, list):
                out |= {x for x in v if isinstance(x, str)}
            else:
                out |= _regions_used(v)
    elif isinstance(data, list):
        for v in data:
            out |= _regions_used(v)
    return out
