"""A run's size, estimated before anything is generated, and the check against ``limits:``.

Arrivals are counted the way the arrival processes build them (workload/arrivals.py
:func:`~stacksim.workload.arrivals.expected_count`), lengths by their distributions' means
(workload/lengths.py :func:`~stacksim.workload.lengths.mean_length`), agent tasks by the calls
their workflow makes on average. Resolution (scenario/resolve.py) calls :func:`size_problems`, so
``stacksim validate`` refuses an oversized run exactly as ``stacksim run`` does, before the run
allocates a single request.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stacksim.scenario import schema as S
from stacksim.workload.arrivals import expected_count
from stacksim.workload.lengths import mean_length

if TYPE_CHECKING:
    from stacksim.scenario.resolve import ResolvedScenario

FieldPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Part:
    """The traffic of one workload or fleet: its requests, their tokens, and what set them."""

    path: FieldPath  # the field that sets the count (for the error's file line)
    requests: float
    tokens: float
    how: str


@dataclass(frozen=True)
class RunSize:
    parts: tuple[Part, ...]

    @property
    def requests(self) -> float:
        return sum(p.requests for p in self.parts)

    @property
    def tokens(self) -> float:
        return sum(p.tokens for p in self.parts)


def sci(x: float) -> str:
    """A count as people read it: 12,345 below a million, 1.0e12 above."""
    if not math.isfinite(x):
        return "more than 1e308"
    if x < 1e6:
        return f"{x:,.0f}"
    mant, exp = f"{x:.1e}".split("e")
    return f"{mant}e{int(exp)}"


def count_mean(c: Any) -> float:
    """The mean of an agent step's count (schema_agents.py Count), as AgentRuntime._count draws it:
    geometric starts at max(min, 1) and goes on with probability 1 - p_stop, up to max."""
    if c.kind == "fixed":
        return float(c.value)
    if c.kind == "uniform":
        return (c.low + c.high) / 2
    if c.min >= c.max:
        return float(c.min)
    return min(float(c.max), max(c.min, 1) + (1 - c.p_stop) / c.p_stop)


def _steps(sc: S.Scenario, agent: Any, steps: Sequence[Any], stack: frozenset[str]) -> tuple[float, float]:
    """(calls, tokens) of one pass over ``steps``: every LLM, tool, retrieval and memory call
    counts as one request; an LLM call's tokens are the system prompt, the step's new input and
    its answer (the context it carries on top is left out: a floor)."""
    calls = tokens = 0.0
    for s in steps:
        if s.kind == "llm":
            calls += 1
            tokens += agent.system_prompt_tokens + mean_length(s.input_tokens) + mean_length(s.output_tokens)
        elif s.kind in ("tool", "retrieve", "memory_read", "memory_write"):
            calls += 1
        elif s.kind == "subagent":
            c, t = _agent(sc, s.agent, stack)
            n = count_mean(s.count)
            calls, tokens = calls + n * c, tokens + n * t
        elif s.kind == "loop":
            c, t = _steps(sc, agent, s.steps, stack)
            n = count_mean(s.count)
            calls, tokens = calls + n * c, tokens + n * t
        elif s.kind == "branch":
            c1, t1 = _steps(sc, agent, s.steps, stack)
            c2, t2 = _steps(sc, agent, s.else_steps, stack)
            calls += s.p * c1 + (1 - s.p) * c2
            tokens += s.p * t1 + (1 - s.p) * t2
    return calls, tokens


def _agent(sc: S.Scenario, name: str, stack: frozenset[str] = frozenset()) -> tuple[float, float]:
    a = sc.agents.get(name)
    if a is None or name in stack:  # unknown agents and sub-agent cycles are resolve_agents' problems
        return 0.0, 0.0
    return _steps(sc, a, a.steps, stack | {name})


def run_size(rs: ResolvedScenario) -> RunSize:
    """The requests and tokens a run of ``rs`` would simulate."""
    sc = rs.scenario
    h = sc.horizon_s
    parts: list[Part] = []
    for name, w in sc.workloads.items():
        where: FieldPath = ("workloads", name)
        trace = rs.trace_paths.get(where + ("arrival",), "")
        n = expected_count(w.arrival, h, w.max_requests, path=trace)
        fmt = w.arrival.format if isinstance(w.arrival, S.TraceArrivals) else None
        per = 0.0
        for which in ("input_tokens", "output_tokens"):
            spec = getattr(w, which)
            if spec is not None:
                path = trace if isinstance(spec, S.TraceLength) else rs.trace_paths.get(where + (which,), "")
                per += mean_length(spec, path=path, which=which.split("_")[0], fmt=fmt)
        dep = rs.deployments.get(w.target)
        if dep is not None:  # a longer request is rejected on arrival: it costs no tokens
            per = min(per, float(dep.max_model_len))
        parts.append(Part(where + n.field, n.n, n.n * per if n.n else 0.0, n.how))
    for name, f in sc.fleets.items():
        where = ("fleets", name)
        n = expected_count(f.arrival, h, f.max_tasks, limit_field="max_tasks", unit="tasks")
        calls, tokens = _agent(sc, f.agent)
        parts.append(Part(where + n.field, n.n * calls, n.n * tokens if n.n else 0.0,
                          f"{n.how} = {sci(n.n)} tasks x {calls:,.1f} calls a task"))
    return RunSize(tuple(parts))


def size_problems(rs: ResolvedScenario) -> list[tuple[FieldPath, str]]:
    """Run-size problems as (field path, message): at most one, so a refused run reads as one
    message; sets ``rs.size``."""
    size = run_size(rs)
    rs.size = size
    lim = rs.scenario.limits
    if not size.parts:
        return []
    big = max(size.parts, key=lambda p: p.requests)
    if size.requests > lim.max_requests:
        share = "" if len(size.parts) == 1 else f", {sci(big.requests)} of them here"
        return [(big.path, (f"this run would simulate {sci(size.requests)} requests{share} ({big.how}); the limit is "
                            f"{lim.max_requests:,}: lower the traffic, or raise `limits.max_requests` to go on"))]
    if size.tokens > lim.max_tokens:
        big = max(size.parts, key=lambda p: p.tokens)
        per = big.tokens / big.requests if big.requests else 0.0
        return [(big.path, (f"this run would simulate {sci(size.tokens)} prompt and answer tokens ({sci(big.requests)} "
                            f"requests x {per:,.0f} tokens a request here); the limit is {lim.max_tokens:,}: shorten the "
                            "requests or lower the traffic, or raise `limits.max_tokens` to go on"))]
    return []
