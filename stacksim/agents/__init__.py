"""Agent fleets: workflows of LLM calls, tools, retrieval, memory and sub-agents, run as tasks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stacksim.scenario import schema as S


@dataclass
class AgentWorkload:
    """What the gateway needs to know about an agent's calls (a workload's target, tags, origin)."""

    target: str
    tags: dict[str, str] = field(default_factory=dict)
    fleet: str = ""
    region: str | None = None
    residency: str | None = None


def walk_steps(steps: list[Any]) -> Iterator[Any]:
    for s in steps:
        yield s
        if s.kind in ("loop", "branch"):
            yield from walk_steps(s.steps)
            if s.kind == "branch":
                yield from walk_steps(s.else_steps)


def agents_of(sc: S.Scenario, agent: str, seen: set[str] | None = None) -> list[str]:
    """An agent and every sub-agent it can call, in first-seen order (cycles cut)."""
    seen = seen if seen is not None else set()
    if agent in seen or agent not in sc.agents:
        return []
    seen.add(agent)
    out = [agent]
    for s in walk_steps(sc.agents[agent].steps):
        if s.kind == "subagent":
            out += agents_of(sc, s.agent, seen)
    return out


def agent_routes(sc: S.Scenario) -> list[tuple[str, str, str]]:
    """(fleet, agent, model target) for every model an agent of a fleet can call."""
    out: list[tuple[str, str, str]] = []
    for fname, f in sc.fleets.items():
        for a in agents_of(sc, f.agent):
            targets = [sc.agents[a].model] + [s.model for s in walk_steps(sc.agents[a].steps) if s.kind == "llm" and s.model]
            for t in targets:
                if (fname, a, t) not in out:
                    out.append((fname, a, t))
    return out
