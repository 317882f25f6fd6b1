"""Semantic checks for agent fleets, their workflows, tools and vector stores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stacksim.network import allowed

if TYPE_CHECKING:
    from stacksim.scenario.resolve import PathProblem, ResolvedScenario


def resolve_agents(rs: ResolvedScenario, problems: list[PathProblem]) -> None:
    from stacksim.scenario.resolve import PathProblem

    sc = rs.scenario
    rm = rs.regions
    plan = rs.gateway_plan
    routes = set(plan.names()) if plan is not None else set()
    valid_targets = f"deployments: {', '.join(sc.deployments) or 'none'}; gateway routes: {', '.join(sorted(routes)) or 'none'}"

    def region_ok(where: tuple[Any, ...], region: str | None) -> None:
        if region is not None and rm is not None and region not in rm.places:
            problems.append(PathProblem(where, f"unknown region '{region}'; valid: {', '.join(sorted(rm.places))}"))

    def target_ok(where: tuple[Any, ...], target: str) -> None:
        if target not in sc.deployments and target not in routes:
            problems.append(PathProblem(where, f"'{target}' is no deployment or gateway route; {valid_targets}"))

    for n, t in sc.tools.items():
        region_ok(("tools", n, "region"), t.region)
    for n, v in sc.vector_stores.items():
        region_ok(("vector_stores", n, "region"), v.region)
    for an, a in sc.agents.items():
        target_ok(("agents", an, "model"), a.model)
        _check_steps(sc, ("agents", an, "steps"), a.steps, problems, target_ok)
        _check_lora(rs, an, a, problems)
    # Sub-agent cycles would recurse for ever.
    for an in sc.agents:
        if _cycle(sc, an, [an]):
            problems.append(PathProblem(("agents", an, "steps"), f"agent '{an}' calls itself through sub-agents; a workflow must end"))
    for fn, f in sc.fleets.items():
        where = ("fleets", fn)
        if f.agent not in sc.agents:
            problems.append(PathProblem(where + ("agent",), f"no agent named '{f.agent}'; agents: {', '.join(sc.agents) or 'none (add an agents: section)'}"))
            continue
        if f.arrival.kind == "trace":
            problems.append(PathProblem(where + ("arrival", "kind"), "fleets take poisson, gamma, deterministic, offline or closed_loop arrivals"))
        region_ok(where + ("region",), f.region)
        if f.residency is not None and f.residency not in sc.residency:
            problems.append(PathProblem(where + ("residency",), f"no residency class '{f.residency}'; defined: {', '.join(sc.residency) or 'none'}"))
        elif f.residency is not None:
            allow = frozenset(sc.residency[f.residency].allowed_jurisdictions)
            from stacksim.agents import agent_routes

            for fleet, agent, target in agent_routes(sc):
                if fleet == fn and target in rs.deployments:
                    region = rs.deployments[target].pool.spec.region
                    j = rm.jurisdiction(region) if rm is not None and region in rm.places else ""
                    if not allowed(allow, j):
                        problems.append(PathProblem(where + ("residency",), f"agent '{agent}' calls deployment '{target}' in {region} ({j}) "
                                                    f"directly, which residency '{f.residency}' forbids; route it through the gateway or move it"))


def _check_lora(rs: ResolvedScenario, an: str, a: Any, problems: list[PathProblem]) -> None:
    """An agent's and its LLM steps' adapters: each on a deployment the call goes to directly, and
    one that deployment serves. (Through a gateway route, the route names the adapter.)"""
    from stacksim.agents import walk_steps
    from stacksim.scenario.resolve import PathProblem
    from stacksim.serving.lora import adapter_problems

    sc = rs.scenario
    uses: list[tuple[tuple[Any, ...], str, str, bool]] = []  # (where, target, adapter, set on this field)
    if a.lora is not None:
        uses.append((("agents", an, "lora"), a.model, a.lora, True))
    paths = _llm_paths(("agents", an, "steps"), a.steps)
    for s in walk_steps(a.steps):
        if s.kind != "llm":
            continue
        if s.lora is not None:
            uses.append((paths[id(s)] + ("lora",), s.model or a.model, s.lora, True))
        elif a.lora is not None and s.model is not None and s.model in sc.deployments:
            uses.append((("agents", an, "lora"), s.model, a.lora, False))
    for where, target, adapter, own in uses:
        if target not in sc.deployments:
            if own and target in (rs.gateway_plan.names() if rs.gateway_plan is not None else []):
                problems.append(PathProblem(where, f"'{target}' is a gateway route; the route names the LoRA adapter of its "
                                            "self-hosted targets (litellm_params.lora in model_list, lora on a Portkey "
                                            "custom_host target). Drop this lora, or call a deployment directly"))
            continue  # an unknown target is reported at its model field
        if target not in rs.deployments:
            continue  # the deployment's own problem is reported already
        for path, msg in adapter_problems(target, rs.deployments[target].lora, [((), adapter)], where):
            problems.append(PathProblem(path, msg))


def _llm_paths(where: tuple[Any, ...], steps: list[Any]) -> dict[int, tuple[Any, ...]]:
    """The field path of every step (by id) in a workflow, nested steps included."""
    out: dict[int, tuple[Any, ...]] = {}
    for i, s in enumerate(steps):
        out[id(s)] = where + (i,)
        if s.kind in ("loop", "branch"):
            out.update(_llm_paths(where + (i, "steps"), s.steps))
            if s.kind == "branch":
                out.update(_llm_paths(where + (i, "else_steps"), s.else_steps))
    return out


def _check_steps(sc: Any, where: tuple[Any, ...], steps: list[Any], problems: list[PathProblem], target_ok: Any) -> None:
    from stacksim.scenario.resolve import PathProblem

    for i, s in enumerate(steps):
        w = where + (i,)
        if s.kind == "llm" and s.model is not None:
            target_ok(w + ("model",), s.model)
        elif s.kind == "tool" and s.tool not in sc.tools:
            problems.append(PathProblem(w + ("tool",), f"no tool named '{s.tool}'; tools: {', '.join(sc.tools) or 'none (add a tools: section)'}"))
        elif s.kind in ("retrieve", "memory_read", "memory_write") and s.store not in sc.vector_stores:
            problems.append(PathProblem(w + ("store",), f"no vector store named '{s.store}'; vector_stores: {', '.join(sc.vector_stores) or 'none'}"))
        elif s.kind == "subagent" and s.agent not in sc.agents:
            problems.append(PathProblem(w + ("agent",), f"no agent named '{s.agent}'; agents: {', '.join(sc.agents)}"))
        for key in ("input_tokens", "output_tokens", "summary_tokens"):
            spec = getattr(s, key, None)
            if spec is not None and spec.kind in ("trace", "empirical"):
                problems.append(PathProblem(w + (key,), "a step's lengths are drawn from fixed, lognormal, exponential or uniform, not read from a file"))
        if s.kind in ("loop", "branch"):
            _check_steps(sc, w + ("steps",), s.steps, problems, target_ok)
            if s.kind == "branch":
                _check_steps(sc, w + ("else_steps",), s.else_steps, problems, target_ok)


def _cycle(sc: Any, agent: str, path: list[str]) -> bool:
    from stacksim.agents import walk_steps

    for s in walk_steps(sc.agents[agent].steps):
        if s.kind == "subagent" and s.agent in sc.agents:
            if s.agent in path:
                return True
            if _cycle(sc, s.agent, path + [s.agent]):
                return True
    return False
