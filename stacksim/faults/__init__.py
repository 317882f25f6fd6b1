"""Faults: replica (GPU / node) failures, spot preemptions, provider outages, region losses.

Each fault in the scenario is scheduled at a time or drawn as a Poisson process at a rate (from
the run's ``faults/<n>`` stream). Occurrences are applied to the SimPy world as timed events and
listed in the run summary with the requests they touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from stacksim.scenario import schema_stack as F

if TYPE_CHECKING:
    from stacksim.engine.simulation import Simulation
    from stacksim.serving.deployment import DeploymentRuntime


@dataclass
class Occurrence:
    index: int  # position in the scenario's faults list
    kind: str
    target: str
    start_s: float
    end_s: float
    requests_failed: int = 0  # serving requests killed on replicas
    note: str = ""
    replicas: list[tuple[str, int]] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)  # provider endpoints it took down

    def resources(self) -> set[str]:
        return {f"deployment:{d}" for d, _ in self.replicas} | {f"endpoint:{e}" for e in self.endpoints}


def occurrence_times(fault: F.ReplicaFailure | F.SpotPreemption | F.ProviderOutage | F.RegionLoss,
                     rng: np.random.Generator, horizon_s: float) -> list[float]:
    if fault.at_s is not None:
        return [fault.at_s] if fault.at_s < horizon_s else []
    assert fault.rate_per_hour is not None
    rate = fault.rate_per_hour / 3600.0
    out, t = [], 0.0
    while True:
        t += rng.exponential(1.0 / rate)
        if t >= horizon_s:
            return out
        out.append(t)


def affected_deployments(sim: Simulation) -> set[str]:
    """Deployments a fault can touch (their requests cannot be routed up front)."""
    rs = sim.rs
    out: set[str] = set()
    for f in rs.scenario.faults:
        for name, rd in rs.deployments.items():
            if (isinstance(f, F.ReplicaFailure) and f.deployment == name
                    or isinstance(f, F.SpotPreemption) and rd.spec.pool == f.pool
                    or isinstance(f, F.RegionLoss) and rd.pool.spec.region == f.region):
                out.add(name)
    return out


class FaultInjector:
    def __init__(self, sim: Simulation):
        self.sim = sim
        self.env = sim.env
        self.occurrences: list[Occurrence] = []
        sc = sim.rs.scenario
        for i, f in enumerate(sc.faults):
            rng = sim.streams.get(f"faults/{i}")
            for t in occurrence_times(f, rng, sim.horizon):
                self._schedule(i, f, t, rng)

    def _at(self, t: float, fn) -> None:  # type: ignore[no-untyped-def]
        ev = self.env.timeout(max(t - self.env.now, 0.0))
        ev.callbacks.append(lambda _e: fn())

    def _deps_on(self, pool: str | None = None, region: str | None = None) -> list[DeploymentRuntime]:
        out = []
        for dep in self.sim.deployments.values():
            rp = dep.rd.pool
            if (pool is not None and rp.name == pool) or (region is not None and rp.spec.region == region):
                out.append(dep)
        return out

    def _schedule(self, i: int, f, t: float, rng: np.random.Generator) -> None:  # type: ignore[no-untyped-def]
        sim = self.sim
        if isinstance(f, F.ReplicaFailure):
            dep = sim.deployments[f.deployment]
            r = f.replica if f.replica is not None else int(rng.integers(len(dep.replicas)))
            occ = Occurrence(i, f.kind, f"{f.deployment}[{r}]", t, t + f.repair_s, replicas=[(f.deployment, r)])
            self.occurrences.append(occ)
            self._at(t, lambda: self._kill(occ, [(dep, r)], t + f.repair_s))
        elif isinstance(f, F.SpotPreemption):
            deps = self._deps_on(pool=f.pool)
            end = t + f.notice_s + f.restore_s
            occ = Occurrence(i, f.kind, f.pool, t, end, replicas=[(d.name, k) for d in deps for k in range(len(d.replicas))])
            self.occurrences.append(occ)

            def notice() -> None:
                for d in deps:
                    for rep in d.replicas:
                        rep.accepting = False  # drains what it has; takes nothing new

            self._at(t, notice)
            self._at(t + f.notice_s, lambda: self._kill(occ, [(d, k) for d in deps for k in range(len(d.replicas))], end))
        elif isinstance(f, F.ProviderOutage):
            gw = sim.gateway
            names = []
            if gw is not None:
                for name, pr in gw.providers.items():
                    if name == f.provider or pr.ep.provider == f.provider:
                        pr.outages.append((t, t + f.duration_s, f.mode, f.status))
                        pr.outages.sort()
                        names.append(name)
            note = "" if names else "no endpoint of this provider is used by the gateway"
            self.occurrences.append(Occurrence(i, f.kind, ",".join(names) or f.provider, t, t + f.duration_s, note=note, endpoints=names))
        elif isinstance(f, F.RegionLoss):
            end = t + f.duration_s
            deps = self._deps_on(region=f.region)
            occ = Occurrence(i, f.kind, f.region, t, end, replicas=[(d.name, k) for d in deps for k in range(len(d.replicas))])
            self.occurrences.append(occ)
            gw = sim.gateway
            if gw is not None:
                for name, pr in gw.providers.items():
                    if pr.ep.region == f.region:
                        pr.outages.append((t, end, "error", 503))
                        pr.outages.sort()
                        occ.endpoints.append(name)
                inst = gw.instances.get(f.region)
                if inst is not None:
                    self._at(t, lambda: setattr(inst, "down_until", max(inst.down_until, end)))
            self._at(t, lambda: self._kill(occ, [(d, k) for d in deps for k in range(len(d.replicas))], end))

    def _kill(self, occ: Occurrence, which: list[tuple[DeploymentRuntime, int]], repair_at: float) -> None:
        killed = []
        for dep, k in which:
            rep = dep.replicas[k]
            if not rep.up:
                occ.note = "some replicas were already down"
                continue
            occ.requests_failed += dep.fail_replica(k)
            killed.append(rep)

        def repair() -> None:
            for rep in killed:
                rep.repair()

        self._at(repair_at, repair)
