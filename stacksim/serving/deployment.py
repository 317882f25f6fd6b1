"""A deployment at run time: its replicas, its balancer, admission checks, shared queue."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import simpy

from stacksim.kernels import cost as K
from stacksim.metrics import QUEUED, REJECTED, RequestTable
from stacksim.serving.balancer import make_balancer
from stacksim.serving.replica import Replica

if TYPE_CHECKING:
    from stacksim.scenario.resolve import ResolvedDeployment


class DeploymentRuntime:
    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        rd: ResolvedDeployment,
        reqs: RequestTable,
        rng: np.random.Generator,
        level_width_s: float,
        on_done: Callable[[int], None],
    ):
        self.env = env
        self.index = index
        self.name = rd.name
        self.rd = rd
        self.engine = rd.spec.engine
        self.params = rd.params
        self.plan = rd.plan
        self.max_model_len = rd.max_model_len
        self.reqs = reqs
        self.itl_hist = np.zeros(K.HIST_BINS)
        self._on_done = on_done
        self.balancer = make_balancer(rd.spec.load_balancer.kind, rng, rd.spec.replicas)
        self.queue: deque[int] = deque()
        self.rejected_too_long = 0
        self.replicas = [Replica(env, self, i, level_width_s) for i in range(rd.spec.replicas)]

    def submit(self, rid: int) -> None:
        reqs = self.reqs
        reqs.deployment[rid] = self.index
        if reqs.input_tokens[rid] + reqs.output_tokens[rid] > self.max_model_len:
            # vLLM answers 400: prompt + max_tokens exceed the model's max length.
            reqs.status[rid] = REJECTED
            reqs.finish_s[rid] = self.env.now
            self.rejected_too_long += 1
            self._on_done(rid)
            return
        if self.balancer.shared:
            reqs.status[rid] = QUEUED
            self.queue.append(rid)
            for r in self.replicas:
                if r.can_take():
                    r.poke()
                    break
            return
        self.replicas[self.balancer.pick(self.replicas)].enqueue(rid)

    def pull(self, replica: Replica) -> None:
        """Shared queue: move requests to ``replica`` while it has free sequence slots."""
        q = self.queue
        while q and replica.can_take():
            rid = q.popleft()
            replica.waiting.append(rid)
            replica.outstanding += 1
            self.reqs.replica[rid] = replica.index

    def on_done(self, rid: int) -> None:
        self._on_done(rid)
