"""The run: build the SimPy world from a resolved scenario, replay the traffic, collect results."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy

from stacksim.engine.closed_loop import ClosedLoopDriver
from stacksim.engine.rng import Streams
from stacksim.errors import ScenarioError
from stacksim.metrics import RequestTable
from stacksim.scenario import schema as S
from stacksim.scenario.resolve import ResolvedScenario
from stacksim.serving.deployment import DeploymentRuntime
from stacksim.serving.reference import ReferenceReplica
from stacksim.workload.arrivals import ARRIVALS, trace_rows
from stacksim.workload.lengths import LENGTHS
from stacksim.workload.traces import load_trace

Progress = Callable[[float, float], None]

LEVEL_BINS = 240  # resolution of the over-time plots
PROGRESS_STEPS = 100
DRAIN_LIMIT_FACTOR = 20.0  # a drain stops after this many horizons, whatever is left


def _fan_out(drivers: list[ClosedLoopDriver]) -> Callable[[int], None]:
    if len(drivers) == 1:
        return drivers[0].on_complete

    def call(rid: int) -> None:
        for d in drivers:
            d.on_complete(rid)

    return call


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
        arrays = []
        for name, w in sc.workloads.items():
            try:
                arrays.append(self._generate(name, w))
            except ValueError as exc:  # a distribution that cannot produce what it was asked for
                from stacksim.scenario.resolve import PathProblem, problems_to_report

                where = ("workloads", name)
                raise ScenarioError(problems_to_report([PathProblem(where, str(exc))], rs.lines), file=rs.file) from None
        total = sum(len(a[0]) for a in arrays)
        self.reqs = RequestTable(total)
        self.workload_ids: list[np.ndarray] = []
        dep_index = {name: i for i, name in enumerate(rs.deployments)}
        for wi, (t, inp, out) in enumerate(arrays):
            ids = self.reqs.add_many(t, inp, out, wi)
            self.reqs.deployment[ids] = dep_index[list(sc.workloads.values())[wi].target]
            self.workload_ids.append(ids)
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
        self.drivers: list[ClosedLoopDriver] = []
        by_dep: dict[str, list[ClosedLoopDriver]] = {}
        for wi, (name, w) in enumerate(sc.workloads.items()):
            if isinstance(w.arrival, S.ClosedLoop):
                dep = self.deployments[w.target]
                drv = ClosedLoopDriver(self, wi, name, w, dep, len(self.workload_ids[wi]))
                self.drivers.append(drv)
                by_dep.setdefault(w.target, []).append(drv)
        for dname, drvs in by_dep.items():
            self.deployments[dname].on_complete = _fan_out(drvs)
        self.end_time = 0.0

    # ------------------------------------------------------------------ traffic

    def _generate(self, name: str, w: S.Workload) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rs = self.rs
        where = ("workloads", name)
        arrival = w.arrival
        path = rs.trace_paths.get(where + ("arrival",), "")
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
        return t, lengths[0], lengths[1]

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

    # ------------------------------------------------------------------ run

    def run(self, progress: Progress | None = None) -> Simulation:
        sc = self.rs.scenario
        env = self.env
        dep_of = self.reqs.deployment[: self.reqs.n]
        arrival = self.reqs.arrival_s[: self.reqs.n]
        for di, dep in enumerate(self.deployments.values()):
            ids = np.flatnonzero(dep_of == di)
            ids = ids[np.argsort(arrival[ids], kind="stable")]
            times = arrival[ids]
            if dep.bind_requests(ids, times):
                self.finished += dep.rejected_too_long
            else:
                env.process(self._arrivals(ids, times, dep))
        steps = PROGRESS_STEPS if progress else 1
        for i in range(1, steps + 1):
            env.run(until=self.horizon * i / steps)
            if progress:
                progress(env.now, self.horizon)
        self.end_time = env.now
        if sc.drain:
            limit = self.horizon * DRAIN_LIMIT_FACTOR
            while self.finished < self.reqs.n and env.peek() < limit:
                env.run(until=min(limit, env.now + self.horizon / 10))
            if self.finished >= self.reqs.n:
                # Everything ended: the run ends with the last request, not at a step boundary.
                fin = self.reqs.finish_s[: self.reqs.n]
                self.end_time = max(self.horizon, float(np.nanmax(fin))) if self.reqs.n else self.horizon
            else:
                self.end_time = env.now
        for dep in self.deployments.values():
            for r in dep.replicas:
                # Pre-routed arrivals during the last, unfinished iteration have arrived: queue them.
                r.take_arrivals(self.end_time)
                r.levels.close(self.end_time)
        return self
