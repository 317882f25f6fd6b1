"""The run: build the SimPy world from a resolved scenario, replay the traffic, collect results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from stacksim.agents import AgentWorkload, agent_routes
from stacksim.agents.runtime import AgentRuntime
from stacksim.engine.closed_loop import ClosedLoopDriver
from stacksim.engine.rng import Streams
from stacksim.errors import ScenarioError
from stacksim.faults import FaultInjector, affected_deployments
from stacksim.gateway.runtime import CallTable, GatewayRuntime
from stacksim.metrics import RequestTable
from stacksim.scenario import schema as S
from stacksim.scenario.resolve import ResolvedScenario
from stacksim.serving.deployment import DeploymentRuntime
from stacksim.serving.disagg import DisaggRuntime
from stacksim.serving.lora import LoraTraffic
from stacksim.serving.reference import ReferenceReplica
from stacksim.workload.arrivals import ARRIVALS, stage_arrivals, trace_rows
from stacksim.workload.lengths import LENGTHS
from stacksim.workload.shared_prefix import (
    DEFAULT_BLOCK_TOKENS,
    PromptPlan,
    all_prompt_blocks,
    plan_prompts,
    stage_positions,
)
from stacksim.workload.traces import attach_trace_blocks, load_trace

Progress = Callable[[float, float], None]


@dataclass(frozen=True)
class Tick:
    """Where a watched run stands, between two chunks of simulated time."""

    now_s: float  # simulated time reached
    horizon_s: float
    arrived: int  # serving requests that have arrived so far
    finished: int  # of which finished (completed, failed or rejected)
    draining: bool  # past the horizon, finishing what is in flight (drain: true)


# Called between chunks; returns True to stop the run there (a partial result, Simulation.stopped_at_s).
Watch = Callable[[Tick], bool | None]

LEVEL_BINS = 240  # resolution of the over-time plots
PROGRESS_STEPS = 100  # progress(now, horizon) calls over the horizon (the dashboard's bar)
# Chunks of the horizon when a run is watched or reports progress: a stop asked for waits at most
# horizon / 1000 simulated seconds. Chunking never changes a result (SimPy processes the same
# events in the same (time, priority, id) order across env.run(until=...) calls; tested).
WATCH_STEPS = 1000
DRAIN_CHUNKS = 10  # a drain advances a tenth of the horizon at a time, checking whether all is done
DRAIN_SUBSTEPS = 100  # when watched, each drain chunk is cut in this many (all-done is checked per chunk only)
DRAIN_LIMIT_FACTOR = 20.0  # a drain stops after this many horizons, whatever is left


def _fan_out(fns: list[Callable[[int], None]]) -> Callable[[int], None]:
    if len(fns) == 1:
        return fns[0]

    def call(rid: int) -> None:
        for f in fns:
            f(rid)

    return call


def repeated_prompts(w: S.Workload, inp: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Prompt ids drawn with Zipf popularity over `unique` prompts; a repeated prompt has the
    same length every time (the first draw for that prompt)."""
    assert w.prompts is not None
    k = w.prompts.unique
    p = 1.0 / np.arange(1, k + 1) ** w.prompts.zipf_s
    ids = rng.choice(k, size=len(inp), p=p / p.sum())
    length = np.zeros(k, dtype=np.int64)
    first = np.full(k, -1)
    for i, pid in enumerate(ids.tolist()):
        if first[pid] < 0:
            first[pid] = i
            length[pid] = inp[i]
    return ids.astype(np.int64), length[ids]


class Simulation:
    """One run of one scenario with one seed."""

    def __init__(self, rs: ResolvedScenario, seed: int | None = None, reference: bool = False):
        """``reference=True`` runs the plain-Python scheduler (the twin tests compare against)."""
        self.rs = rs
        sc = rs.scenario
        self.seed = sc.seed if seed is None else int(seed)
        self.env = simpy.Environment()
        self.streams = Streams(self.seed)
        self.horizon = sc.horizon_s
        self.warmup = sc.warmup_s
        self.width = max(self.horizon / LEVEL_BINS, 1e-6)
        self.workload_names = list(sc.workloads)
        self.deployment_names = list(rs.deployments)
        plan = rs.gateway_plan
        self.gateway_workloads = [w.target not in rs.deployments and w.target not in rs.disaggregated
                                  for w in sc.workloads.values()]
        # Agent fleets' LLM calls count as workloads "fleet/agent" (one per model an agent calls).
        self.agent_workloads: dict[tuple[str, str, str], int] = {}
        pseudo = []
        for key in agent_routes(sc):
            self.agent_workloads[key] = len(self.workload_names)
            fleet, agent, target = key
            self.workload_names.append(f"{fleet}/{agent}" + ("" if target == sc.agents[agent].model else f":{target}"))
            pseudo.append(AgentWorkload(target=target, tags=dict(sc.fleets[fleet].tags), fleet=fleet,
                                        region=sc.fleets[fleet].region, residency=sc.fleets[fleet].residency))
        arrays = []
        self.prompt_plans: dict[str, PromptPlan] = {}  # workloads with shared_prefix prompts
        for name, w in sc.workloads.items():
            try:
                arrays.append(self._generate(name, w))
            except ValueError as exc:  # a distribution that cannot produce what it was asked for
                from stacksim.scenario.resolve import PathProblem, problems_to_report

                where = ("workloads", name)
                raise ScenarioError(problems_to_report([PathProblem(where, str(exc))], rs.lines), file=rs.file) from None
        total = sum(len(a[0]) for a, g in zip(arrays, self.gateway_workloads) if not g)
        self.reqs = RequestTable(total)
        self.workload_ids: list[np.ndarray] = []
        dep_index = {name: i for i, name in enumerate(rs.deployments)}
        n_calls = sum(len(a[0]) for a, g in zip(arrays, self.gateway_workloads) if g)
        self.calls = CallTable(n_calls) if plan is not None else None
        self.workload_tags = [dict(w.tags) for w in sc.workloads.values()] + [p.tags for p in pseudo]
        self.lora = LoraTraffic(sc, {n: rd.lora for n, rd in rs.deployments.items()}, self.streams)  # adapters of requests
        pos = 0
        disagg_legs: list[tuple[str, int, np.ndarray, np.ndarray]] = []
        gateway_calls: dict[int, np.ndarray] = {}
        for wi, (t, inp, out) in enumerate(arrays):
            if self.gateway_workloads[wi]:
                assert self.calls is not None
                ids = np.arange(pos, pos + len(t))
                c = self.calls
                c.arrival_s[ids], c.input_tokens[ids], c.output_tokens[ids], c.workload[ids] = t, inp, out, wi
                w = list(sc.workloads.values())[wi]
                if w.prompts is not None:
                    name = list(sc.workloads)[wi]
                    c.prompt[ids], c.input_tokens[ids] = repeated_prompts(w, inp, self.streams.get(f"prompts/{name}"))
                gateway_calls[wi] = ids
                pos += len(t)
                self.workload_ids.append(np.empty(0, dtype=np.int64))
                continue
            target = list(sc.workloads.values())[wi].target
            group = rs.disaggregated.get(target)
            # A disaggregated group's request starts as a one-token prefill leg (serving/disagg.py).
            ids = self.reqs.add_many(t, inp, out if group is None else np.ones_like(out), wi)
            self.reqs.deployment[ids] = dep_index[target if group is None else group.prefill.name]
            if group is not None:
                disagg_legs.append((target, wi, ids, out))
            self.workload_ids.append(ids)
            # Prefix-block hashes of trace records (Mooncake hash_ids), for prefix caching.
            attach_trace_blocks(self.reqs, ids, list(sc.workloads.values())[wi],
                                rs.trace_paths.get(("workloads", self.workload_names[wi], "arrival"), ""), self.horizon)
            self._attach_prompt_blocks(self.workload_names[wi], ids, target if group is None else group.prefill.name)
            self.lora.assign(self.reqs, wi, ids)
        self.n_direct = self.reqs.n
        max_time = self.horizon * (DRAIN_LIMIT_FACTOR + 1.0 if sc.drain else 1.0)
        self.finished = 0
        self.deployments: dict[str, DeploymentRuntime] = {}
        for di, (name, rd) in enumerate(rs.deployments.items()):
            self.deployments[name] = DeploymentRuntime(
                self.env, di, rd, self.reqs, self.streams.get(f"routing/{name}"), self.width, max_time, self._on_done,
                ReferenceReplica if reference else None,
            )

            for r in self.deployments[name].replicas:
                r.itl_from = self.warmup
        self.gateway: GatewayRuntime | None = None
        if plan is not None:
            assert self.calls is not None and rs.regions is not None
            wls: list[Any] = [*sc.workloads.values(), *pseudo]
            self.gateway = GatewayRuntime(
                self, plan, rs.regions, self.calls, wls,
                [frozenset(sc.residency[w.residency].allowed_jurisdictions) if w.residency else None for w in wls],
                [w.region or plan.spec.regions[0] for w in wls],
            )
            for wi, cids in gateway_calls.items():  # shared-prefix prompts' blocks, used by each attempt
                plan = self.prompt_plans.get(self.workload_names[wi])
                if plan is not None:
                    for cid, h in zip(cids.tolist(), all_prompt_blocks(plan, DEFAULT_BLOCK_TOKENS)):
                        self.gateway.blocks[cid] = (h, DEFAULT_BLOCK_TOKENS)
            for dname in self.gateway.dep_targets:
                self.deployments[dname].on_complete = self.gateway.on_serving_done  # type: ignore[index]
        self.agents: AgentRuntime | None = None
        if sc.fleets:
            self.agents = AgentRuntime(self)
            for dname in {t for (_, _, t) in self.agent_workloads if t in self.deployments}:
                dep = self.deployments[dname]
                prev = dep.on_complete
                dep.on_complete = self.agents.on_serving_done if prev is None else _fan_out([prev, self.agents.on_serving_done])
        for dname in affected_deployments(self):
            self.deployments[dname].prerouting_disabled = True
        self.faults = FaultInjector(self)
        self.drivers: list[ClosedLoopDriver] = []
        by_dep: dict[str, list[ClosedLoopDriver]] = {}
        for wi, (name, w) in enumerate(sc.workloads.items()):
            if isinstance(w.arrival, S.ClosedLoop):
                dep = self.deployments[w.target]
                drv = ClosedLoopDriver(self, wi, name, w, dep, len(self.workload_ids[wi]))
                self.drivers.append(drv)
                by_dep.setdefault(w.target, []).append(drv)
        for dname, drvs in by_dep.items():
            fns = [d.on_complete for d in drvs]
            prev = self.deployments[dname].on_complete
            if prev is not None:
                fns.append(prev)
            self.deployments[dname].on_complete = _fan_out(fns)
        self.disagg: DisaggRuntime | None = DisaggRuntime(self, disagg_legs) if rs.disaggregated else None
        self.end_time = 0.0
        self.stopped_at_s: float | None = None  # set when a watcher stopped the run early (a partial result)
        self.limit_reached_s: float | None = None  # when closed-loop clients hit limits.max_requests
        self._sorted_arrivals = np.empty(0)

    # ------------------------------------------------------------------ traffic

    def _generate(self, name: str, w: S.Workload) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rs = self.rs
        where = ("workloads", name)
        arrival = w.arrival
        path = rs.trace_paths.get(where + ("arrival",), "")
        stage = None
        if isinstance(arrival, S.MultiStage):
            t, stage = stage_arrivals(arrival, self.streams.get(f"arrivals/{name}"), self.horizon, w.max_requests)
        else:
            t = ARRIVALS[arrival.kind](
                arrival, self.streams.get(f"arrivals/{name}"), self.horizon, w.max_requests, path=path
            )
        n = len(t)
        rows = None
        if isinstance(arrival, S.TraceArrivals):
            rows = trace_rows(arrival, self.horizon, w.max_requests, path)
        lengths = []
        for which in ("input_tokens", "output_tokens"):
            spec = getattr(w, which)
            if isinstance(spec, S.TraceLength):
                assert rows is not None and isinstance(arrival, S.TraceArrivals)
                tr = load_trace(path, arrival.format)
                col = tr.input_tokens if which == "input_tokens" else tr.output_tokens
                # A zero-token record (the Azure code trace has some) still costs one token.
                lengths.append(np.maximum(col[rows], 1))
            else:
                lengths.append(
                    LENGTHS[spec.kind](
                        spec,
                        self.streams.get(f"{which}/{name}"),
                        n,
                        path=rs.trace_paths.get(where + (which,), ""),
                        which="input" if which == "input_tokens" else "output",
                    )
                )
        if w.shared_prefix is not None:
            # Prompts of shared system prompts + questions (workload/shared_prefix.py): the plan
            # sets each prompt's length (growing with multi-turn history); blocks come later.
            plan = plan_prompts(w.shared_prefix, name, stage_positions(stage, n), lengths[1],
                                self.streams.get(f"shared_prefix/{name}"))
            self.prompt_plans[name] = plan
            lengths[0] = plan.input_tokens
        return t, lengths[0], lengths[1]

    def _attach_prompt_blocks(self, name: str, ids: np.ndarray, deployment: str) -> None:
        """Prefix-block hashes of a shared-prefix workload's prompts, in the KV blocks of the
        deployment that prefills them."""
        plan = self.prompt_plans.get(name)
        if plan is None:
            return
        bt = self.rs.deployments[deployment].spec.engine.block_size
        for rid, h in zip(ids.tolist(), all_prompt_blocks(plan, bt)):
            self.reqs.set_blocks(rid, h, bt)

    def _arrivals(self, ids: np.ndarray, times: np.ndarray, dep: DeploymentRuntime):  # type: ignore[no-untyped-def]
        env = self.env
        submit = dep.submit
        for rid, t in zip(ids.tolist(), times.tolist()):
            delay = t - env.now
            if delay > 0:
                yield env.timeout(delay)
            submit(rid)

    def _on_done(self, n: int) -> None:
        self.finished += n

    def new_serving_request(self, t: float, inp: int, out: int, wi: int, dep: DeploymentRuntime, call: int) -> int:
        """A request created during the run (a gateway attempt) on deployment `dep`."""
        rid = int(self.reqs.add_many(np.array([t]), np.array([inp]), np.array([out]), wi)[0])
        self.reqs.deployment[rid] = dep.index
        self.reqs.call[rid] = call
        for d in self.deployments.values():
            d.add_request(rid, inp, out)
        return rid

    def all_done(self) -> bool:
        gw_done = self.gateway is None or self.gateway.pending == 0
        agents_done = self.agents is None or self.agents.pending == 0
        disagg_done = self.disagg is None or self.disagg.pending == 0  # a transfer in flight has no serving request
        return gw_done and agents_done and disagg_done and self.finished >= self.reqs.n

    # ------------------------------------------------------------------ run

    def tick(self, draining: bool = False) -> Tick:
        """Where the run stands now (for a watcher; reads, never changes, the run)."""
        now = self.env.now
        before = int(np.searchsorted(self._sorted_arrivals, now, side="right"))
        made = self.reqs.n - self.n_direct  # made during the run (closed loops, gateway attempts, agents), all arrived
        return Tick(now, self.horizon, before + made, min(self.finished, before + made), draining)

    def run(self, progress: Progress | None = None, watch: Watch | None = None) -> Simulation:
        """Run to the horizon (and, with drain, until everything ends). ``progress(now, horizon)``
        is called about PROGRESS_STEPS times over the horizon; ``watch(tick)`` after every chunk
        of simulated time, and a True from it stops the run there: the result then covers the
        time simulated (``stopped_at_s``). Neither changes what is simulated."""
        sc = self.rs.scenario
        env = self.env
        dep_of = self.reqs.deployment[: self.reqs.n]
        arrival = self.reqs.arrival_s[: self.reqs.n]
        if watch is not None:
            self._sorted_arrivals = np.sort(arrival)
        for di, dep in enumerate(self.deployments.values()):
            ids = np.flatnonzero(dep_of == di)
            ids = ids[np.argsort(arrival[ids], kind="stable")]
            times = arrival[ids]
            if dep.bind_requests(ids, times):
                self.finished += dep.rejected_too_long
            else:
                env.process(self._arrivals(ids, times, dep))
        if self.gateway is not None:
            self.gateway.start()
        if self.agents is not None:
            self.agents.start()
        steps = WATCH_STEPS if progress or watch else 1
        every = steps // PROGRESS_STEPS
        for i in range(1, steps + 1):
            env.run(until=self.horizon if i == steps else self.horizon * i / steps)
            if progress and i % every == 0:
                progress(env.now, self.horizon)
            # A stop asked for at the horizon itself, with no drain to come, stops nothing.
            if watch is not None and watch(self.tick()) and (i < steps or sc.drain):
                return self._stop()
        self.end_time = env.now
        if sc.drain:
            limit = self.horizon * DRAIN_LIMIT_FACTOR
            while not self.all_done() and env.peek() < limit:
                start = env.now
                target = min(limit, start + self.horizon / DRAIN_CHUNKS)
                if watch is None:
                    env.run(until=target)
                    continue
                for j in range(1, DRAIN_SUBSTEPS + 1):
                    until = target if j == DRAIN_SUBSTEPS else start + (target - start) * j / DRAIN_SUBSTEPS
                    if until <= env.now:  # a sliver of a chunk, too thin to cut in float64
                        continue
                    env.run(until=until)
                    if watch(self.tick(draining=True)):
                        return self._stop()
            if self.all_done():
                # Everything ended: the run ends with the last request, not at a step boundary.
                fin = self.reqs.finish_s[: self.reqs.n]
                last = float(np.nanmax(fin)) if self.reqs.n else self.horizon
                if self.calls is not None and self.calls.n:
                    last = max(last, float(np.nanmax(self.calls.finish_s[: self.calls.n])))
                if self.agents is not None and self.agents.roots:
                    last = max(last, max(r.end for r in self.agents.roots))
                self.end_time = max(self.horizon, last)
            else:
                self.end_time = env.now
        self._close()
        return self

    def _stop(self) -> Simulation:
        """End a run a watcher stopped: everything up to now is kept, nothing after it is made."""
        self.stopped_at_s = self.end_time = self.env.now
        self._close()
        return self

    def _close(self) -> None:
        for dep in self.deployments.values():
            for r in dep.replicas:
                # Pre-routed arrivals during the last, unfinished iteration have arrived: queue them.
                r.take_arrivals(self.end_time)
                r.levels.close(self.end_time)
