"""Autoscaling a deployment: replicas added and removed on a metric, as the Kubernetes Horizontal
Pod Autoscaler (HPA) does, with the delays a GPU replica really has.

The deployment owns one replica object per slot up to ``max_replicas``; a slot is

- ``OFF``: no accelerators held, not billed, takes no requests (``replica.accepting`` False);
- ``PROVISIONING``: accelerators being acquired, node and container starting, then the weights
  loading (``provisioning_s + model_load_s``); billed, takes no requests;
- ``SERVING``: in rotation; billed;
- ``DRAINING``: chosen for removal: takes no new requests, finishes those it holds (queued ones
  included, as a vLLM pod does on a graceful shutdown), then is released (back to ``OFF``).

Every ``evaluation_interval_s`` the autoscaler reads its metric and follows the HPA's algorithm
(kubernetes.io, "Horizontal Pod Autoscaling"; autoscaling/v2 ``HPAScalingRules``):

1. a recommendation: ``ceil(waiting / target)`` for queue depth and ``ceil(in flight / target)``
   for concurrency (AverageValue targets), or ``ceil(serving x metric / target)`` for KV-cache use
   and latency; none while the metric is within ``tolerance`` of its target (the current count
   stands);
2. clamped to ``[min_replicas, max_replicas]``, and never 0 while the deployment holds a request;
3. stabilised: scale up to the *lowest* recommendation of the last ``scale_up_stabilization_s``,
   down only to the *highest* of the last ``scale_down_stabilization_s``;
4. at most ``max(2 x current, current + 4)`` per evaluation, the HPA's default scale-up policy
   (+100 % or +4 pods per 15 s, the larger); scale-down has no rate limit (default: 100 %).

Scale-down cancels replicas still provisioning first (a ReplicaSet deletes unready pods first),
then drains the serving replicas with the least work. A request that arrives when no replica
serves (scaled to zero, or all draining) is held and a replica is provisioned at once, the way
Knative's activator or KEDA's HTTP add-on wake a scaled-to-zero service: a cold start, never a
dropped request. Requests are failed at once only when every slot is down (faults).

Spend: a slot is billed from the moment provisioning starts until it is released, so the
provisioning and load time are charged. The step function of slots held and slots loaded over
time is the one record all of it (replica-hours, provisioning hours, the time series) comes from.
"""

from __future__ import annotations

import math
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from stacksim.metrics import COMPLETED, QUEUED

if TYPE_CHECKING:
    import simpy

    from stacksim.scenario.schema import Autoscaling
    from stacksim.serving.deployment import DeploymentRuntime

OFF, PROVISIONING, SERVING, DRAINING = 0, 1, 2, 3
GIB = 1024**3  # MemoryPlan's *_gb figures are GiB (serving/costmodel.py)
# The HPA's default behavior.scaleUp policies: add up to 4 pods or 100 % of the current count per
# 15 s, whichever is more (autoscaling/v2 API reference, HPAScalingRules). Applied per evaluation.
HPA_SCALE_UP_PODS = 4
HPA_SCALE_UP_FACTOR = 2.0
SERIES_POINTS = 240  # the summary's replica series: change points, or this many bin means


class Autoscaler:
    """One deployment's autoscaler: a SimPy process evaluating every interval, plus the slot
    state machine the deployment consults (``hold``, ``check_drained``, ``can_serve``)."""

    def __init__(self, dep: DeploymentRuntime, spec: Autoscaling):
        self.dep = dep
        self.env: simpy.Environment = dep.env
        self.spec = spec
        plan = dep.rd.plan
        self.gpus_per_replica = plan.gpus_per_replica
        weight_bytes = plan.weights_per_gpu_gb * GIB * plan.gpus_per_replica
        if spec.model_load_s is not None:
            self.load_s = spec.model_load_s
            self.load_basis = "given (autoscaling.model_load_s)"
        else:
            # One replica reads all its weights at the stated rate (one node's storage or network
            # path); engine start-up beyond the read (CUDA graphs, compilation) is in provisioning_s.
            self.load_s = weight_bytes / (spec.load_gb_per_s * 1e9)
            self.load_basis = f"{weight_bytes / 1e9:.2f} GB of weights / {spec.load_gb_per_s:g} GB/s (autoscaling.load_gb_per_s)"
        self.delay = spec.provisioning_s + self.load_s
        n = len(dep.replicas)
        start = dep.rd.spec.replicas
        self.state = [SERVING if i < start else OFF for i in range(n)]
        self.gen = [0] * n  # bumped when a provisioning slot is cancelled, so its timer is ignored
        self.started = [0.0] * n  # when the slot's current hold (and its billing) began
        for r in dep.replicas[start:]:
            r.active = False
            r.accepting = False
        self.pending: deque[int] = deque()  # requests waiting for a replica to serve (cold start)
        self.held_since: dict[int, float] = {}
        self.cold_waits: list[float] = []
        self.draining: list[int] = []
        # (time, recommendation), seeded with the starting count as the HPA controller does for a
        # new autoscaler (kubernetes pkg/controller/podautoscaler/horizontal.go,
        # recordInitialRecommendation): no scale-down within the first window.
        self.history: deque[tuple[float, int]] = deque([(0.0, start)])
        self.recommendations: list[tuple[float, int]] = []  # every evaluation's, for the record
        # (time, slots held (billed), slots loaded (serving or draining)): a step function.
        self.changes: list[tuple[float, int, int]] = [(0.0, start, start)]
        self.events: list[tuple[float, str, int]] = []  # (time, provision|ready|cancel|drain|release, slot)
        self.decisions: list[tuple[float, int]] = []  # (time, +added / -removed) per scaling decision
        self.cold_starts = 0
        self.proc = self.env.process(self._run())

    # ------------------------------------------------------------------ what the deployment asks

    def can_serve(self) -> bool:
        """Some slot is not failed: a request can be served now or after a cold start."""
        return any(r.up for r in self.dep.replicas)

    def hold(self, rid: int) -> bool:
        """Called for each request before routing. True when it was held: no replica serves now,
        so it waits for one (and a cold start begins if none is on its way)."""
        reps = self.dep.replicas
        if any(r.accepting for r in reps) or not self.can_serve():
            return False
        self.pending.append(rid)
        self.dep.reqs.status[rid] = QUEUED
        self.held_since[rid] = self.env.now
        if PROVISIONING not in self.state and self._add(1) > 0:
            self.cold_starts += 1
            self.decisions.append((self.env.now, 1))
        return True

    def cancel(self, rid: int) -> bool:
        """Drop a held request whose client gave up (a gateway timeout). True if it was held."""
        if rid not in self.held_since:
            return False
        self.pending.remove(rid)
        del self.held_since[rid]
        return True

    def check_drained(self) -> None:
        """Release draining replicas that have finished everything they held."""
        reps = self.dep.replicas
        for i in list(self.draining):
            if reps[i].load() == 0:
                self._release(i)

    # ------------------------------------------------------------------ the process

    def _run(self):  # type: ignore[no-untyped-def]
        while True:
            yield self.env.timeout(self.spec.evaluation_interval_s)
            self._evaluate()

    def _evaluate(self) -> None:
        now = self.env.now
        spec = self.spec
        self._flush()
        cur = self._count(PROVISIONING, SERVING)
        rec = self._recommend(now, cur)
        self.recommendations.append((now, rec))
        hist = self.history
        hist.append((now, rec))
        keep = max(spec.scale_up_stabilization_s, spec.scale_down_stabilization_s)
        while hist and hist[0][0] <= now - keep:
            hist.popleft()
        up = down = rec
        for t, r in hist:  # HPA stabilizeRecommendationWithBehaviors: entries after each cutoff
            if t > now - spec.scale_up_stabilization_s:
                up = min(up, r)
            if t > now - spec.scale_down_stabilization_s:
                down = max(down, r)
        desired = min(max(cur, up), down)
        desired = min(desired, max(math.ceil(HPA_SCALE_UP_FACTOR * cur), cur + HPA_SCALE_UP_PODS))
        if desired > cur:
            added = self._add(desired - cur)
            if added:
                self.decisions.append((now, added))
        elif desired < cur:
            self._remove(cur - desired)
            self.decisions.append((now, desired - cur))

    def _recommend(self, now: float, cur: int) -> int:
        spec = self.spec
        m = spec.metric
        reps = self.dep.replicas
        serving = [i for i, s in enumerate(self.state) if s == SERVING]
        raw: float | None = None  # the replicas the metric asks for, before rounding
        ratio: float | None = None  # metric / target, for the tolerance
        if m.kind == "queue_depth":
            # The levels' "waiting" of serving replicas, the shared queue, requests held for a cold start.
            waiting = len(self.pending) + len(self.dep.queue) + sum(reps[i].levels.value(0) for i in serving)
            raw = waiting / m.target_per_replica  # AverageValue target: ceil(total / target)
            ratio = raw / cur if cur else None
        elif m.kind == "concurrency":
            in_flight = len(self.pending) + len(self.dep.queue) + sum(reps[i].load() for i in serving)
            raw = in_flight / m.target_per_replica
            ratio = raw / cur if cur else None
        elif serving:
            if m.kind == "kv_cache":
                ratio = sum(reps[i].levels.value(2) for i in serving) / len(serving) / m.target_used
            else:
                p = self._latency_s(now)
                ratio = None if p is None else p / (m.target_ms / 1000.0)
            raw = None if ratio is None else ratio * len(serving)
        busy = bool(self.pending) or bool(self.dep.queue) or any(reps[i].load() for i in serving)
        if raw is None:  # no signal: hold steady while there is work, else fall to the minimum
            rec = cur if busy else spec.min_replicas
        elif ratio is not None and abs(ratio - 1.0) <= spec.tolerance:
            rec = cur
        else:
            rec = math.ceil(raw - 1e-9)
        rec = min(max(rec, spec.min_replicas), spec.max_replicas)
        return max(rec, 1) if busy else rec

    def _latency_s(self, now: float) -> float | None:
        """The metric's percentile over this deployment's requests whose first token (ttft) or
        finish (e2e) fell in the last window; None without any."""
        m = self.spec.metric
        reqs = self.dep.reqs
        n = reqs.n
        ref = (reqs.first_token_s if m.of == "ttft" else reqs.finish_s)[:n]
        sel = (ref > now - m.window_s) & (ref <= now) & (reqs.deployment[:n] == self.dep.index)
        if m.of == "e2e":
            sel &= reqs.status[:n] == COMPLETED
        if not sel.any():
            return None
        return float(np.percentile(ref[sel] - reqs.arrival_s[:n][sel], m.percentile))

    # ------------------------------------------------------------------ slot transitions

    def _count(self, *states: int) -> int:
        return sum(1 for s in self.state if s in states)

    def _log(self) -> None:
        now = self.env.now
        point = (now, self._count(PROVISIONING, SERVING, DRAINING), self._count(SERVING, DRAINING))
        if self.changes[-1][0] == now:
            self.changes[-1] = point
        elif self.changes[-1][1:] != point[1:]:
            self.changes.append(point)

    def _add(self, k: int) -> int:
        """Start provisioning up to ``k`` slots (healthy ones first, lowest index first)."""
        reps = self.dep.replicas
        free = sorted((i for i, s in enumerate(self.state) if s == OFF), key=lambda i: (not reps[i].up, i))[:k]
        for i in free:
            self.state[i] = PROVISIONING
            self.gen[i] += 1
            self.started[i] = self.env.now
            self.events.append((self.env.now, "provision", i))
            ev = self.env.timeout(self.delay)
            ev.callbacks.append(partial(self._ready, i, self.gen[i]))
        if free:
            self._log()
        return len(free)

    def _ready(self, i: int, gen: int, _ev: Any) -> None:
        if self.gen[i] != gen or self.state[i] != PROVISIONING:
            return  # cancelled while provisioning
        rep = self.dep.replicas[i]
        self.state[i] = SERVING
        rep.active = True
        rep.accepting = rep.up  # a slot that failed meanwhile comes into rotation at its repair
        self.events.append((self.env.now, "ready", i))
        self._log()
        self._flush()
        if self.dep.balancer.shared and rep.accepting:
            rep.poke()  # pull from the shared queue

    def _remove(self, k: int) -> None:
        reps = self.dep.replicas
        prov = [i for i, s in enumerate(self.state) if s == PROVISIONING]
        # Newest first: the one furthest from serving. Its timer fires later and is ignored.
        for i in sorted(prov, key=lambda i: (-self.started[i], -i))[:k]:
            self.state[i] = OFF
            self.gen[i] += 1
            self.events.append((self.env.now, "cancel", i))
            k -= 1
        serving = sorted((i for i, s in enumerate(self.state) if s == SERVING), key=lambda i: (reps[i].load(), -i))
        for i in serving[: max(k, 0)]:
            rep = reps[i]
            self.state[i] = DRAINING
            rep.active = False
            rep.accepting = False
            self.draining.append(i)
            self.events.append((self.env.now, "drain", i))
        self._log()
        self.check_drained()

    def _release(self, i: int) -> None:
        self.state[i] = OFF
        self.draining.remove(i)
        self.events.append((self.env.now, "release", i))
        self._log()

    def _flush(self) -> None:
        """Route the held requests once a replica serves."""
        if not self.pending or not any(r.accepting for r in self.dep.replicas):
            return
        held, self.pending = self.pending, deque()
        now = self.env.now
        for rid in held:
            self.cold_waits.append(now - self.held_since.pop(rid))
            self.dep.submit(rid)

    # ------------------------------------------------------------------ results

    def _steps(self, end: float) -> list[tuple[float, int, int]]:
        return [c for c in self.changes if c[0] <= end]

    def integral(self, end: float) -> tuple[float, float]:
        """(slot-seconds held, slot-seconds loaded) over [0, end]."""
        pts = self._steps(end)
        held = loaded = 0.0
        for (t0, h, ld), t1 in zip(pts, [p[0] for p in pts[1:]] + [end]):
            held += h * (t1 - t0)
            loaded += ld * (t1 - t0)
        return held, loaded

    def per_bin(self, width: float, n_bins: int, end: float, col: int = 2) -> np.ndarray:
        """Time-weighted slots held (col 1) or loaded (col 2) per bin of ``width``, divided by the
        width as :meth:`Levels.series` divides its sums (so a last partial bin compares alike)."""
        out = np.zeros(n_bins)
        pts = self._steps(end)
        for p, t1 in zip(pts, [q[0] for q in pts[1:]] + [end]):
            t0, v = p[0], p[col]
            if v == 0 or t1 <= t0:
                continue
            for b in range(int(t0 // width), min(math.ceil(t1 / width), n_bins)):
                out[b] += v * (min(t1, (b + 1) * width) - max(t0, b * width))
        return out / width

    def summary(self, end: float, usd_per_gpu_hour: float) -> dict[str, Any]:
        spec = self.spec
        held_s, loaded_s = self.integral(end)
        gpr = self.gpus_per_replica
        prov_s = held_s - loaded_s
        pts = self._steps(end)
        if len(pts) <= SERIES_POINTS:
            series = [[round(t, 6), h, ld] for t, h, ld in pts]
            kind = "changes: [time_s, replicas held (billed), replicas serving or draining] at each change"
        else:
            w = end / SERIES_POINTS
            held_b, loaded_b = self.per_bin(w, SERIES_POINTS, end, 1), self.per_bin(w, SERIES_POINTS, end, 2)
            series = [[round((b + 0.5) * w, 6), round(float(held_b[b]), 4), round(float(loaded_b[b]), 4)] for b in range(SERIES_POINTS)]
            kind = f"bin means over {SERIES_POINTS} bins: [bin centre_s, mean replicas held, mean replicas serving or draining]"
        dec = [d for t, d in self.decisions if t <= end]
        waits = self.cold_waits
        hours = end / 3600.0
        return {
            "metric": spec.metric.model_dump(mode="json"),
            "min_replicas": spec.min_replicas,
            "max_replicas": spec.max_replicas,
            "evaluation_interval_s": spec.evaluation_interval_s,
            "tolerance": spec.tolerance,
            "scale_up_stabilization_s": spec.scale_up_stabilization_s,
            "scale_down_stabilization_s": spec.scale_down_stabilization_s,
            "provisioning_s": spec.provisioning_s,
            "model_load_s": round(self.load_s, 6),
            "model_load_basis": self.load_basis,
            "mean_replicas": round(held_s / end, 6) if end > 0 else 0.0,
            "mean_serving_replicas": round(loaded_s / end, 6) if end > 0 else 0.0,
            "peak_replicas": max(h for _, h, _ in pts),
            "replica_hours": round(held_s / 3600.0, 6),
            "gpu_hours": round(held_s * gpr / 3600.0, 6),
            "mean_gpus": round(held_s * gpr / 3600.0 / hours, 6) if hours > 0 else 0.0,
            "provisioning_replica_hours": round(prov_s / 3600.0, 6),
            "provisioning_usd": round(prov_s * gpr / 3600.0 * usd_per_gpu_hour, 6),
            "spend_usd": round(held_s * gpr / 3600.0 * usd_per_gpu_hour, 6),
            "scale_up_events": sum(1 for d in dec if d > 0),
            "scale_down_events": sum(1 for d in dec if d < 0),
            "replicas_added": sum(d for d in dec if d > 0),
            "replicas_removed": -sum(d for d in dec if d < 0),
            "cold_starts": self.cold_starts,
            "cold_start_requests": len(waits) + len(self.pending),
            "cold_start_wait_s": {"mean": round(float(np.mean(waits)), 6) if waits else None,
                                  "max": round(float(np.max(waits)), 6) if waits else None},
            "still_waiting": len(self.pending),
            "replicas_over_time": series,
            "replicas_over_time_kind": kind,
        }
