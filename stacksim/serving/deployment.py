"""A deployment at run time: its replicas, its balancer, admission checks, shared queue."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from stacksim.kernels import cost as K
from stacksim.metrics import FAILED, QUEUED, REJECTED, RequestTable
from stacksim.serving.balancer import RandomPick, make_balancer
from stacksim.serving.replica import Replica

if TYPE_CHECKING:
    from stacksim.scenario.resolve import ResolvedDeployment
    from stacksim.serving.autoscale import Autoscaler


class DeploymentRuntime:
    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        rd: ResolvedDeployment,
        reqs: RequestTable,
        rng: np.random.Generator,
        level_width_s: float,
        max_time_s: float,
        on_done: Callable[[int], None],
        replica_cls: type | None = None,
    ):
        self.env = env
        self.index = index
        self.name = rd.name
        self.rd = rd
        self.engine = rd.spec.engine
        self.params = rd.params
        self.plan = rd.plan
        self.max_model_len = rd.max_model_len
        self.frontend_s = rd.frontend_s
        self.reqs = reqs
        self.itl_hist = np.zeros(K.HIST_BINS)
        self._on_done = on_done
        self.balancer = make_balancer(rd.spec.load_balancer.kind, rng, rd.slots)
        self.queue: deque[int] = deque()
        # Tests switch it off to check both paths agree; an autoscaled deployment routes at arrival
        # (which replicas serve changes during the run).
        self.prerouting_disabled = rd.spec.autoscaling is not None
        # Set when closed-loop clients target this deployment: called with each finished or
        # rejected request id, and it forbids routing up front (requests appear during the run).
        self.on_complete: Callable[[int], None] | None = None
        self.rejected_too_long = 0
        self.inp: list[int] = []
        self.out: list[int] = []
        cls = replica_cls or Replica
        # With autoscaling, one replica object per slot up to max_replicas; the autoscaler keeps
        # those beyond the starting count out of service until it provisions them.
        self.replicas = [cls(env, self, i, level_width_s, max_time_s) for i in range(rd.slots)]
        self.autoscaler: Autoscaler | None = None
        if rd.spec.autoscaling is not None:
            from stacksim.serving.autoscale import Autoscaler

            self.autoscaler = Autoscaler(self, rd.spec.autoscaling)

    def bind_requests(self, rids: np.ndarray, times: np.ndarray) -> bool:
        """Take this deployment's requests (sorted by arrival). Returns True when they were all
        routed up front, which a state-independent balancer allows: then no arrival events are
        needed. State-dependent balancers (least outstanding, shared queue) route at arrival.
        """
        reqs = self.reqs
        self.inp = reqs.input_tokens[: reqs.n].tolist()
        self.out = reqs.output_tokens[: reqs.n].tolist()
        for r in self.replicas:
            r.inp, r.out = self.inp, self.out
        if not self.balancer.static or self.prerouting_disabled or self.on_complete is not None:
            return False
        too_long = reqs.input_tokens[rids] + reqs.output_tokens[rids] > self.max_model_len
        bad = rids[too_long]
        reqs.status[bad] = REJECTED  # vLLM answers 400 at once; decided here as nothing can change it
        reqs.finish_s[bad] = reqs.arrival_s[bad]
        self.rejected_too_long = int(bad.size)
        ok = rids[~too_long]
        ok_t = times[~too_long] + self.frontend_s  # they reach the scheduler after the API server (see submit)
        where = self.balancer.assign(ok.size)
        for i, r in enumerate(self.replicas):
            mine = where == i
            r.preroute(ok[mine].tolist(), ok_t[mine].tolist())
        return True

    def any_up(self) -> bool:
        if self.autoscaler is not None:  # scaled to zero is not down: a request waits for a cold start
            return self.autoscaler.can_serve()
        return any(r.accepting for r in self.replicas)

    def _fail_now(self, rid: int) -> None:
        """No replica can take it (all failed or draining): a connection error at once."""
        self.reqs.status[rid] = FAILED
        self.reqs.finish_s[rid] = self.env.now
        self.on_done(rid)

    def cancel(self, rid: int) -> bool:
        """The client gave up on ``rid`` (the gateway timed the attempt out): if it is still
        queued (held for a cold start, in the shared queue or in a replica's waiting queue) it is
        dropped and fails now, as vLLM aborts a request whose connection closes before it is
        scheduled. A request already admitted runs to its end (not modelled: vLLM would abort it
        at the next step). True if it was dropped."""
        reqs = self.reqs
        if reqs.status[rid] != QUEUED:
            return False
        if rid in self.queue:
            self.queue.remove(rid)
        elif not (self.autoscaler is not None and self.autoscaler.cancel(rid)):
            i = int(reqs.replica[rid])
            if not (0 <= i < len(self.replicas) and self.replicas[i].cancel_queued(rid)):
                return False
        reqs.status[rid] = FAILED
        reqs.finish_s[rid] = self.env.now
        self._on_done(1)
        if self.autoscaler is not None and self.autoscaler.draining:
            self.autoscaler.check_drained()
        return True

    def fail_replica(self, i: int) -> int:
        """Replica i dies now; its requests fail (and are reported to whoever waits on them)."""
        rids = self.replicas[i].fail()
        for rid in rids:
            self.on_done(rid)
        if self.autoscaler is not None and self.autoscaler.draining:  # a draining replica killed: release it
            self.autoscaler.check_drained()
        return len(rids)

    def submit(self, rid: int) -> None:
        """A request reaches the engine's API server. With a fitted front-end latency (HTTP,
        tokenisation, the hop to the engine process and the streamed chunks' way back:
        serving/costmodel.frontend_latency_s) it joins the scheduler that much later, so TTFT and
        end-to-end latency both carry it once; while in the front end it cannot be cancelled."""
        reqs = self.reqs
        if self.inp[rid] + self.out[rid] > self.max_model_len:
            # vLLM answers 400 at once: prompt + max_tokens exceed the model's max length.
            reqs.status[rid] = REJECTED
            reqs.finish_s[rid] = self.env.now
            self.rejected_too_long += 1
            self._on_done(1)
            if self.on_complete is not None:
                self.on_complete(rid)
            return
        if self.frontend_s > 0.0:
            ev = self.env.timeout(self.frontend_s)
            ev.callbacks.append(lambda _e, rid=rid: self._enqueue(rid))
            return
        self._enqueue(rid)

    def _enqueue(self, rid: int) -> None:
        reqs = self.reqs
        if self.autoscaler is not None and self.autoscaler.hold(rid):
            return  # no replica serves now: it waits for one (a cold start), never dropped
        if self.balancer.shared:
            reqs.status[rid] = QUEUED
            self.queue.append(rid)
            # Hand the request to the least-loaded replica with room (an idle one first), as a
            # pull-based pool would: the first replica to reach a step boundary with a free slot
            # takes it. Waking the first replica with room would pile everything on replica 0.
            best, best_load = None, 0
            for r in self.replicas:
                if r.accepting and r.can_take():
                    ld = r.load()
                    if best is None or ld < best_load:
                        best, best_load = r, ld
            if best is not None:
                best.poke()
            return
        reps = self.replicas
        up = [r for r in reps if r.accepting]
        if len(up) == len(reps):
            reps[self.balancer.pick(reps, rid)].enqueue(rid)
        elif not up:
            self._fail_now(rid)
        elif isinstance(self.balancer, RandomPick):
            up[int(self.balancer.rng.integers(len(up)))].enqueue(rid)
        else:  # round robin and least outstanding skip the replicas that are down
            up[self.balancer.pick(up, rid) % len(up)].enqueue(rid)

    def pull(self, replica: Any) -> None:
        """Shared queue: move requests to ``replica`` while it has free sequence slots."""
        q = self.queue
        while q and replica.accepting and replica.can_take():
            replica.take(q.popleft())

    def on_done(self, rid: int) -> None:
        self._on_done(1)
        if self.on_complete is not None:
            self.on_complete(rid)
        if self.autoscaler is not None and self.autoscaler.draining:  # a replica being removed may be empty now
            self.autoscaler.check_drained()

    def add_request(self, rid: int, inp: int, out: int) -> None:
        """A request created during the run (closed loop): extend the cached length lists."""
        while len(self.inp) < rid:  # ids of other deployments' requests made meanwhile
            self.inp.append(0)
            self.out.append(0)
        self.inp.append(inp)
        self.out.append(out)

    def on_done_count(self, n: int) -> None:
        self._on_done(n)
        if self.autoscaler is not None and self.autoscaler.draining:  # a replica being removed may be empty now
            self.autoscaler.check_drained()
