"""Sustainable capacity of a deployment, and whether the offered load exceeds it.

An open-loop load above capacity has no steady state: the queue grows for as long as requests
keep arriving, so every latency a run reports depends on how long it ran. This module says so.

**Capacity.** One replica at its largest feasible running batch ``b`` for the workload's mean
prompt ``I`` and output ``O`` (tokens), in the steady state of continuous batching (vLLM's
scheduler, :mod:`stacksim.serving.reference`). Each running sequence decodes ``E`` tokens per
step (1; with speculative decoding the expected count of Leviathan et al.'s eq. 1), so a request
decodes for ``d = max((O - 1) / E, 1)`` steps and ``c = b / d`` prompts start per step. With a
prefix-cache hit rate ``h`` a prompt computes ``P = I (1 - h)`` tokens. The batch is the smallest
of three limits:

    b_seqs   = max_num_seqs
    b_kv     = usable KV tokens / (I + O + block / 2)
    b_budget = max_num_batched_tokens / (k + 1 + P / d)     (chunked prefill; k speculative tokens)

``usable`` is the blocks above vLLM's 1% admission watermark times the block size; the half block
is the mean rounding waste of paged KV. A sequence's whole final context counts, not its mean
(I + O / 2): vLLM admits while blocks are free and preempts when decodes run out of them, so a
batch sized by the mean context spends its time recomputing preempted prompts (against a
max-load run of 3,000 requests, the mean context overstated an A10G's 1000/1000 capacity by 32%,
the final one by 10%). ``b_budget``: every step carries ``b`` decodes of ``k + 1`` tokens and ``c`` prompts.

With chunked prefill a prompt is prefilled in chunks of ``s = min(P, budget - b (k + 1))``
tokens, so a fraction ``f = c P / s`` of the steps carry one (all of them once ``f >= 1``, each
then with ``c P`` prompt tokens):

    t_mix = step_time(s, w A, w (I - P), b, b R, b + w)     w = s / P, A = P (P + 1) / 2 + P (I - P)
    t_dec = step_time(0, 0, 0, b, b R, b)                   R = I + (O + 1) / 2, the mean context
    requests/s per replica = c / (f t_mix + (1 - f) t_dec)

Averaging the prompt into every step instead would hide it under the decodes' weight reads (the
roofline is a max) and overstate a slow GPU. Without chunked prefill, decode steps (all ``b``)
and prefill steps (whole prompts, ``n = min(max(c, 1), floor(budget / P))`` per step) alternate:
``requests/s = b / (d t_dec + (b / n) t_prefill)``.
A deployment sustains ``replicas`` (an autoscaled one: ``max_replicas``) times that; attention
data-parallel ranks are already in the replica's limits and parameter vector
(scenario/resolve.py). ``step_time`` is the kernel the simulation itself uses
(:mod:`stacksim.kernels.cost`), so capacity and simulation share one cost model; what the steady
state leaves out (LoRA adapter loads, KV offload loads, preemption recompute, the spread of
lengths around their mean) is why it is "about" the capacity: tests hold it to a max-load
simulation within 15%.

**Offered load.** The arrival rate of open-loop traffic at the deployment: the nominal
``rate_per_s`` of Poisson, Gamma and deterministic workloads aimed at it, plus the measured rate
of every other open arrival (trace replays, gateway attempts, agent calls, disaggregated legs).
An offline workload (everything at time zero) is a maximum-load run and a closed loop limits
itself; neither is "overloaded", but both report the capacity.

**Overload.** Offered above capacity: the queue grows about ``offered - capacity`` requests per
second for the whole arrival window (the *transient*, ``transient_s``), and the run's latencies
describe that transient, not a steady state. The run's own queue (requests arrived and not yet
admitted) is fitted with a line over the second half of that window, once the batch has filled:
a clearly growing queue flags overload too, whatever the estimate says, so an error of a few
percent in capacity never hides saturation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stacksim.kernels import cost as K
from stacksim.serving.core_state import ADMIT_WATERMARK

if TYPE_CHECKING:
    from stacksim.scenario.resolve import ResolvedDeployment

NEAR_CAPACITY = 0.9  # offered / capacity from here up: within the estimate's error of saturation
# A run's queue counts as growing when its slope over the second half of the arrival window is
# at least this share of the arrival rate and adds at least MIN_GROWTH requests over that half
# (so the noise of a stable queue, and a batch filling up at the start, do not count).
GROWTH_SHARE = 0.05
MIN_GROWTH = 10.0
OPEN_KINDS = ("poisson", "gamma", "deterministic")  # nominal rate_per_s
STAGED = "stages"  # nominal stage rates


@dataclass(frozen=True)
class SteadyState:
    """One replica's steady state at its largest feasible batch."""

    requests_per_s: float
    batch: float  # running sequences
    limit: str  # what sets the batch: max_num_seqs, kv_cache or token_budget
    step_s: float  # mean step time


def steady_state(
    p: np.ndarray,
    max_seqs: float,
    budget: float,
    kv_tokens: float,
    block_size: float,
    isl: float,
    osl: float,
    cached: float = 0.0,
    chunked: bool = True,
) -> SteadyState:
    """Requests per second one replica keeps up with (equations in the module docstring).

    ``p``: the replica's parameter vector (serving.costmodel.cost_params); ``kv_tokens``: KV
    tokens a replica may fill (above the admission watermark); ``cached``: prefix-cache hit rate.
    """
    spec = p[K.SPEC_K] > 0.0
    e = float(p[K.SPEC_TOKENS]) if spec else 1.0
    q = float(p[K.SPEC_K]) + 1.0 if spec else 1.0
    d = max((osl - 1.0) / e, 1.0)
    pre = max(isl * (1.0 - min(max(cached, 0.0), 1.0)), 1.0)
    resident = isl + (osl + 1.0) / 2.0
    limits = {
        "max_num_seqs": float(max_seqs),
        "kv_cache": kv_tokens / (isl + osl + block_size / 2.0),
        "token_budget": budget / (q + pre / d) if chunked else math.inf,
    }
    limit = min(limits, key=lambda k: limits[k])
    b = limits[limit]
    if b <= 0.0:
        return SteadyState(0.0, 0.0, limit, 0.0)
    step = K.spec_step_time if spec else K.step_time
    pairs = pre * (pre + 1.0) / 2.0 + pre * (isl - pre)  # a prompt's chunks attend to its cached prefix too
    c = b / d
    if chunked:
        # A prompt is prefilled in chunks of what the budget leaves beside the decodes; a
        # fraction f of the steps carry one (all of them once f reaches 1). Averaging the work
        # into one step instead would hide the prefill under the decode's weight reads (the
        # roofline is a max), which overstates a slow GPU's capacity.
        chunk = min(pre, budget - b * q)
        f = c * pre / chunk
        if f >= 1.0:
            t = step(p, c * pre, c * pairs, c * (isl - pre), b, b * resident, b + c)
        else:
            w = chunk / pre
            t = f * step(p, chunk, w * pairs, w * (isl - pre), b, b * resident, b + w) + (1.0 - f) * step(
                p, 0.0, 0.0, 0.0, b, b * resident, b)
        return SteadyState(c / t, b, limit, t)
    n = max(min(max(c, 1.0), math.floor(budget / pre)), 1.0)
    t_pre = step(p, n * pre, n * pairs, n * (isl - pre), 0.0, 0.0, n)
    t_dec = step(p, 0.0, 0.0, 0.0, b, b * resident, b)
    total = d * t_dec + b / n * t_pre
    return SteadyState(b / total, b, limit, total / (d + b / n))


def replica_steady_state(rd: ResolvedDeployment, isl: float, osl: float, cached: float = 0.0) -> SteadyState:
    """:func:`steady_state` of one replica of a resolved deployment."""
    eng = rd.spec.engine
    plan = rd.plan
    usable = (plan.num_blocks - int(ADMIT_WATERMARK * plan.num_blocks)) * plan.block_size
    return steady_state(rd.params, float(eng.max_num_seqs), float(eng.max_num_batched_tokens), float(usable),
                        float(plan.block_size), isl, osl, cached, bool(eng.enable_chunked_prefill))


def sustainable_capacity(rd: ResolvedDeployment, isl: float, osl: float, cached: float = 0.0) -> float:
    """Requests per second the deployment keeps up with: replicas (an autoscaled one at
    ``max_replicas``) x one replica's steady state."""
    return rd.slots * replica_steady_state(rd, isl, osl, cached).requests_per_s


def waiting_growth(arrival: np.ndarray, wait_end: np.ndarray, t0: float, t1: float, n: int = 256) -> tuple[float, float]:
    """(slope in requests/s, count at ``t1``) of the number of requests arrived and not yet
    admitted, a least-squares line over [t0, t1] (``wait_end``: admission, or the time a request
    left without one; inf while still waiting)."""
    if t1 <= t0 or arrival.size == 0:
        return 0.0, 0.0
    a = np.sort(arrival)
    w = np.sort(wait_end)
    ts = np.linspace(t0, t1, n)
    count = np.searchsorted(a, ts, side="right") - np.searchsorted(w, ts, side="right")
    slope = float(np.polyfit(ts, count.astype(float), 1)[0])
    return slope, float(count[-1])


def assess(
    rd: ResolvedDeployment,
    kinds: list[str],
    nominal_rps: float,
    stages: Sequence[tuple[float, float]],
    arrival: np.ndarray,
    open_rows: np.ndarray,
    wait_end: np.ndarray,
    finish: np.ndarray,
    isl: float,
    osl: float,
    cached: float,
    end: float,
) -> dict[str, Any]:
    """The ``capacity`` entry of a deployment in ``summary.json``.

    ``kinds``: the arrival kinds of the traffic it received (``poisson``, ``trace``, ``gateway``,
    ``offline``, ``closed_loop``...); ``nominal_rps``: the summed ``rate_per_s`` of the
    Poisson/Gamma/deterministic workloads aimed at it; ``stages``: (rate_per_s, duration_s) of
    the stages of staged workloads aimed at it (offered is then their peak, and the transient the
    stages above capacity); per request it received: ``arrival``,
    ``open_rows`` (open-loop traffic whose rate is measured, not nominal), ``wait_end`` (see
    :func:`waiting_growth`), ``finish`` (NaN if none).
    """
    ss = replica_steady_state(rd, isl, osl, cached) if arrival.size else None
    cap = rd.slots * ss.requests_per_s if ss is not None else None
    if "offline" in kinds:
        load = "offline"
    elif any(k != "closed_loop" for k in kinds):
        load = "open"
    else:
        load = "closed_loop" if kinds else "none"
    base = nominal_rps
    measured_open = arrival[open_rows]
    if measured_open.size >= 2:
        span = float(measured_open.max() - measured_open.min())
        base += (measured_open.size - 1) / span if span > 0 else 0.0
    offered = base + max((r for r, _ in stages), default=0.0)  # a staged load: its peak stage
    t0 = float(arrival.min()) if arrival.size else 0.0
    t1 = float(arrival.max()) if arrival.size else 0.0
    window = t1 - t0
    # The second half of the arrival window: by then a replica's batch has filled, so the
    # queue's growth is the steady one (the first half would mix in the fill).
    slope, waiting_last = waiting_growth(arrival, wait_end, t0 + window / 2.0, t1)
    waited = np.minimum(np.where(np.isfinite(wait_end), wait_end, end), end) - arrival
    done = np.isfinite(finish) & (finish >= t0) & (finish <= t1)
    arrival_rps = (arrival.size - 1) / window if window > 0 else None
    measured = {
        "window_s": round(window, 4),
        "arrival_rps": round(arrival_rps, 4) if arrival_rps is not None else None,
        "completion_rps": round(float(done.sum()) / window, 4) if window > 0 else None,
        "queue_growth_rps": round(slope, 4),
        "waiting_at_last_arrival": int(waiting_last),
        "max_wait_s": round(float(waited.max()), 4) if waited.size else 0.0,
    }
    util: float | None = None
    analytic = seen = False
    growth = 0.0
    transient: float | None = None
    if load == "open":
        util = offered / cap if cap else None
        analytic = offered > (cap or 0.0)
        seen = window > 0 and slope >= GROWTH_SHARE * (arrival_rps or 0.0) and slope * window / 2.0 >= MIN_GROWTH
        growth = offered - (cap or 0.0) if analytic else slope if seen else 0.0
        over = [d for r, d in stages if base + r > (cap or 0.0)]
        transient = float(sum(over)) if analytic and over else window
    elif load == "offline" and finish.size:  # the time to work off the backlog (the run's end if some is left)
        transient = end if np.isnan(finish).any() else float(finish.max())
    return {
        "load": load,
        "capacity_rps": round(cap, 4) if cap is not None else None,
        "offered_rps": round(offered, 4) if load == "open" else None,
        "offered_basis": ("peak stage" if stages else "nominal rate" if not measured_open.size else
                          "measured rate" if not nominal_rps else "nominal and measured rates") if load == "open" else None,
        "utilization_of_capacity": round(util, 4) if util is not None else None,
        "overloaded": bool(analytic or seen),
        "overload_basis": "estimate and run" if analytic and seen else "estimate" if analytic else "run" if seen else None,
        "queue_growth_rps": round(growth, 4),
        "transient_s": round(transient, 4) if transient is not None else None,
        "replicas": rd.slots,
        "replica_capacity_rps": round(ss.requests_per_s, 4) if ss is not None else None,
        "steady_batch": round(ss.batch, 2) if ss is not None else None,
        "batch_limit": ss.limit if ss is not None else None,
        "mean_input_tokens": round(isl, 2),
        "mean_output_tokens": round(osl, 2),
        "prefix_hit_rate": round(cached, 6),
        "measured": measured,
    }


def _rate(x: float) -> str:
    """A rate to three significant figures (0.0412, 4.12, 41.2, 4,120)."""
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.{max(0, 2 - math.floor(math.log10(x)))}f}" if x > 0 else "0"


def overload_message(name: str, c: dict[str, Any]) -> str | None:
    """The warning printed for an overloaded deployment (its ``capacity`` entry), else None."""
    if not c.get("overloaded"):
        return None
    m = c["measured"]
    cap, offered, run = c["capacity_rps"] or 0.0, c["offered_rps"], m["queue_growth_rps"]
    if c["overload_basis"] == "run":
        head = (f"offered {_rate(offered)} req/s is {c['utilization_of_capacity']:.0%} of the estimated sustainable "
                f"~{_rate(cap)} req/s, but the run's queue grew ~{_rate(m['queue_growth_rps'])} req/s")
    else:
        peak = " at its peak stage" if c.get("offered_basis") == "peak stage" else ""
        head = (f"offered {_rate(offered)} req/s{peak} > sustainable ~{_rate(cap)} req/s ({c['replicas']} x "
                f"{_rate(c['replica_capacity_rps'] or 0.0)}, batch {c['steady_batch']:,.0f} set by {c['batch_limit']}); "
                f"the queue grows ~{_rate(c['queue_growth_rps'])} req/s (run: {_rate(run) if run >= 0.01 else 'none seen'})")
    return (f"OVERLOADED {name}: {head}, so these latencies describe a {c['transient_s']:,.0f} s transient, not a "
            f"steady state: requests waited up to {m['max_wait_s']:,.0f} s, and a longer run would show longer waits")


def capacity_message(name: str, c: dict[str, Any]) -> str:
    """One line on a deployment's capacity and load: the overload warning, a near-capacity
    caution, or the headroom."""
    over = overload_message(name, c)
    if over is not None:
        return over
    if c["capacity_rps"] is None:
        return f"capacity {name}: no traffic"
    cap = (f"~{_rate(c['capacity_rps'])} req/s sustainable ({c['replicas']} x {_rate(c['replica_capacity_rps'])}, "
           f"batch {c['steady_batch']:,.0f} set by {c['batch_limit']})")
    if c["load"] == "offline":
        return (f"capacity {name}: {cap}; a max-load run (every request at time zero), so the latencies describe "
                f"working off that backlog in {c['transient_s']:,.0f} s, not a steady state")
    if c["load"] == "closed_loop":
        return f"capacity {name}: {cap}; closed-loop clients limit their own load"
    util = c["utilization_of_capacity"] or 0.0
    if util >= NEAR_CAPACITY:
        return (f"NEAR CAPACITY {name}: offered {_rate(c['offered_rps'])} req/s is {util:.0%} of {cap}; within the "
                f"estimate's error of saturation, where latency rises steeply with load")
    return f"capacity {name}: {cap}; offered {_rate(c['offered_rps'])} req/s ({util:.0%})"
