"""Closed-loop clients: each sends its next request when its previous one has finished.

The first request of every client is generated with the rest of the traffic (at time zero);
the driver listens for completions on the target deployment and creates the next request, with
lengths drawn from the workload's own named streams (continuing where the first draws stopped).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stacksim.scenario import schema as S
from stacksim.workload.lengths import LENGTHS

if TYPE_CHECKING:
    from stacksim.engine.simulation import Simulation
    from stacksim.serving.deployment import DeploymentRuntime

CHUNK = 1024


class ClosedLoopDriver:
    def __init__(self, sim: Simulation, wi: int, name: str, w: S.Workload, dep: DeploymentRuntime, first: int):
        assert isinstance(w.arrival, S.ClosedLoop)
        self.sim = sim
        self.wi = wi
        self.w = w
        self.dep = dep
        self.think = w.arrival.think_time_s
        self.limit = w.max_requests
        self.created = first
        self.streams = {
            which: sim.streams.get(f"{which}/{name}") for which in ("input_tokens", "output_tokens")
        }
        self.paths = {which: sim.rs.trace_paths.get(("workloads", name, which), "") for which in self.streams}
        self.buf: dict[str, list[int]] = {which: [] for which in self.streams}

    def _draw(self, which: str) -> int:
        buf = self.buf[which]
        if not buf:
            spec = getattr(self.w, which)
            vals = LENGTHS[spec.kind](
                spec, self.streams[which], CHUNK, path=self.paths[which],
                which="input" if which == "input_tokens" else "output",
            )
            buf.extend(reversed(vals.tolist()))
        return buf.pop()

    def on_complete(self, rid: int) -> None:
        sim = self.sim
        if sim.reqs.workload[rid] != self.wi:
            return
        t = sim.env.now + self.think
        if t >= sim.horizon or (self.limit is not None and self.created >= self.limit):
            return  # this client stops: the horizon or the request budget is reached
        if sim.reqs.n >= sim.rs.scenario.limits.max_requests:
            # A closed loop's size is known only by running it (without think time a client sends
            # as fast as it is served): the run's own request limit stops it, and the summary says so.
            if sim.limit_reached_s is None:
                sim.limit_reached_s = sim.env.now
            return
        self.created += 1
        inp, out = self._draw("input_tokens"), self._draw("output_tokens")
        rid_new = int(sim.reqs.add_many(np.array([t]), np.array([inp]), np.array([out]), self.wi)[0])
        sim.reqs.deployment[rid_new] = self.dep.index
        sim.lora.assign(sim.reqs, self.wi, np.array([rid_new]))
        for d in sim.deployments.values():
            d.add_request(rid_new, inp, out)
        if self.think > 0:
            ev = sim.env.timeout(self.think)
            ev.callbacks.append(lambda _e, r=rid_new: self.dep.submit(r))
        else:
            self.dep.submit(rid_new)
