"""Semantic checks for disaggregated prefill/decode groups (``disaggregated:``) and their links."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stacksim.scenario import schema as S
from stacksim.serving.core_state import ADMIT_WATERMARK
from stacksim.serving.disagg import LINK_DEFAULTS, ResolvedDisagg

if TYPE_CHECKING:
    from stacksim.scenario.resolve import PathProblem, ResolvedScenario


def resolve_disagg(rs: ResolvedScenario, problems: list[PathProblem]) -> None:
    from stacksim.scenario.resolve import PathProblem

    sc = rs.scenario
    if not sc.disaggregated:
        return
    deps = ", ".join(sc.deployments) or "none"
    role: dict[str, tuple[str, str]] = {}  # deployment -> (role, group) of its first group
    for name, g in sc.disaggregated.items():
        where = ("disaggregated", name)
        if name in sc.deployments:
            problems.append(PathProblem(where, f"'{name}' is also a deployment's name; a workload's target could not tell "
                                        "them apart. Rename the group"))
            continue
        if g.prefill == g.decode:
            problems.append(PathProblem(where + ("decode",), f"'{g.decode}' is also the prefill deployment; the two sides "
                                        "must be different deployments (for one deployment that does both, target it "
                                        "directly)"))
            continue
        bad = False
        for side in ("prefill", "decode"):
            d = getattr(g, side)
            if d not in sc.deployments:
                problems.append(PathProblem(where + (side,), f"no deployment named '{d}'; deployments: {deps}"))
                bad = True
                continue
            other = "decode" if side == "prefill" else "prefill"
            seen = role.setdefault(d, (side, name))
            if seen[0] != side:
                problems.append(PathProblem(where + (side,), f"'{d}' is the {other} side of group '{seen[1]}'; a deployment "
                                            "serves one role (prefill or decode)"))
                bad = True
        if bad:
            continue
        p, d = rs.deployments.get(g.prefill), rs.deployments.get(g.decode)
        if p is None or d is None:
            continue  # the deployment's own problem is reported already
        if p.model.id != d.model.id:
            problems.append(PathProblem(where + ("decode",), f"'{g.decode}' serves {d.model.id} but the prefill deployment "
                                        f"'{g.prefill}' serves {p.model.id}; the KV cache only fits the model that made it"))
            continue
        pk, dk = p.spec.engine.kv_cache_dtype, d.spec.engine.kv_cache_dtype
        if pk != dk:
            problems.append(PathProblem(where + ("decode",), f"'{g.decode}' has engine.kv_cache_dtype {dk} but '{g.prefill}' "
                                        f"has {pk}; the transferred KV must be in the decode side's format. Set both the same"))
            continue
        # The longest prompt the prefill side accepts must fit one decode replica's KV cache
        # (below the admission watermark), or that request could never be admitted there.
        admissible = (d.plan.num_blocks - int(ADMIT_WATERMARK * d.plan.num_blocks)) * d.plan.block_size
        if p.max_model_len >= admissible:
            gb = p.max_model_len * d.plan.kv_bytes_per_token_per_gpu / 1024**3
            problems.append(PathProblem(where + ("decode",), f"KV too large for the decode replica: '{g.prefill}' accepts "
                                        f"prompts up to max_model_len {p.max_model_len} tokens ({gb:.1f} GiB of KV per GPU on "
                                        f"'{g.decode}'), but one '{g.decode}' replica's KV cache admits {admissible} tokens. "
                                        f"Set deployments.{g.prefill}.engine.max_model_len below {admissible}, or give "
                                        f"'{g.decode}' more GPUs per replica"))
            continue
        pr, dr = p.pool.spec.region, d.pool.spec.region
        if pr != dr:
            problems.append(PathProblem(where + ("decode",), f"'{g.decode}' runs in {dr} but '{g.prefill}' in {pr}; the KV "
                                        "cache moves within one data centre (put both pools in one region)"))
            continue
        t = g.transfer
        bw_default, lat_default, basis = LINK_DEFAULTS[t.link]
        if t.link == "nvlink":
            pa, da = p.pool.accelerator, d.pool.accelerator
            gpus = p.plan.gpus_per_replica + d.plan.gpus_per_replica
            if pa.id != da.id or not pa.interconnect.startswith("nvlink") or gpus > pa.scaleup_domain_gpus:
                why = (f"'{g.prefill}' is on {pa.id} and '{g.decode}' on {da.id}" if pa.id != da.id else
                       f"{pa.id} has no NVLink ({pa.interconnect or 'none'})" if not pa.interconnect.startswith("nvlink") else
                       f"a prefill and a decode replica need {gpus} GPUs but {pa.id}'s NVLink domain holds {pa.scaleup_domain_gpus}")
                problems.append(PathProblem(where + ("transfer", "link"), f"nvlink needs both replicas in one NVLink domain: "
                                            f"{why}. Use rdma or tcp"))
                continue
            bw_default = pa.interconnect_bandwidth_gbps * 8.0
        bw = t.bandwidth_gbps if t.bandwidth_gbps is not None else bw_default
        lat = t.latency_ms if t.latency_ms is not None else lat_default
        assert bw is not None
        if t.bandwidth_gbps is not None or t.latency_ms is not None:
            basis = "given in the scenario" + ("" if t.bandwidth_gbps is not None and t.latency_ms is not None else
                                               f" (the rest from the {t.link} default: {basis})")
        forced = not d.spec.engine.prefix_caching
        if forced:
            # The transferred KV reaches the decode scheduler through the prefix-cache path; with
            # caching off the cache only ever holds transferred prompts (ids unique per request),
            # so nothing is shared between requests, as with caching off.
            d.spec = d.spec.model_copy(update={"engine": d.spec.engine.model_copy(update={"prefix_caching": True})})
        rs.disaggregated[name] = ResolvedDisagg(name, g, p, d, float(bw), float(lat), basis, forced)

    members = set(role)
    routes = rs.gateway_plan.targets if rs.gateway_plan is not None else []
    for t in routes:
        if t.kind == "self" and t.disagg is None and t.deployment in members:
            r, grp = role[t.deployment]  # type: ignore[index]
            problems.append(PathProblem(("gateway",), f"the gateway routes to '{t.deployment}', the {r} side of disaggregated "
                                        f"group '{grp}'; a member deployment only serves its group"))
    for wname, w in sc.workloads.items():
        where = ("workloads", wname)
        if w.target in members:
            r, grp = role[w.target]
            problems.append(PathProblem(where + ("target",), f"'{w.target}' is the {r} side of disaggregated group '{grp}'; "
                                        f"target the group ('{grp}') instead"))
        if w.target in sc.disaggregated and isinstance(w.arrival, S.ClosedLoop):
            problems.append(PathProblem(where + ("arrival", "kind"), "closed_loop clients send straight to a deployment; "
                                        "a disaggregated group takes open-loop arrivals (poisson, gamma, deterministic, "
                                        "offline, trace)"))
    from stacksim.agents import agent_routes

    for fleet, agent, target in agent_routes(sc):
        if target in members:
            r, grp = role[target]
            problems.append(PathProblem(("agents", agent), f"agent '{agent}' calls '{target}', the {r} side of "
                                        f"disaggregated group '{grp}'; a member deployment only serves its group"))
