"""Arrival processes: each turns its spec into sorted arrival times in [0, horizon).

Gaps are drawn exactly (no clipping), so a Poisson stream's realised rate is its nominal rate
within sampling error: a test checks this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stacksim.scenario import schema as S
from stacksim.workload.traces import load_trace

CHUNK = 65536


def _renewal(draw: Callable[[int], np.ndarray], mean_gap: float, horizon: float, limit: int | None) -> np.ndarray:
    parts: list[np.ndarray] = []
    t = 0.0
    n = 0
    while t < horizon and (limit is None or n < limit):
        size = int(min(max(16, (horizon - t) / mean_gap * 1.1 + 16), CHUNK * 16))
        gaps = draw(size)
        times = t + np.cumsum(gaps)
        parts.append(times)
        t = float(times[-1])
        n += size
    out = np.concatenate(parts) if parts else np.empty(0)
    out = out[out < horizon]
    if limit is not None:
        out = out[:limit]
    return out


def poisson(spec: S.Poisson, rng: np.random.Generator, horizon: float, limit: int | None, **_: object) -> np.ndarray:
    scale = 1.0 / spec.rate_per_s
    return _renewal(lambda n: rng.exponential(scale, n), scale, horizon, limit)


def gamma(spec: S.GammaArrivals, rng: np.random.Generator, horizon: float, limit: int | None, **_: object) -> np.ndarray:
    shape = 1.0 / spec.cv**2  # CV of a Gamma(k, theta) is 1/sqrt(k)
    scale = 1.0 / (spec.rate_per_s * shape)
    return _renewal(lambda n: rng.gamma(shape, scale, n), 1.0 / spec.rate_per_s, horizon, limit)


def deterministic(spec: S.Deterministic, rng: np.random.Generator, horizon: float, limit: int | None, **_: object) -> np.ndarray:
    gap = 1.0 / spec.rate_per_s
    n = int(np.ceil(horizon / gap)) + 1
    if limit is not None:  # the first `limit` arrivals are the same; never build the rest
        n = min(n, limit + 1)
    out = gap * np.arange(1, n + 1, dtype=np.float64)
    out = out[out < horizon]
    return out[:limit] if limit is not None else out


def trace(spec: S.TraceArrivals, rng: np.random.Generator, horizon: float, limit: int | None, *, path: str, **_: object) -> np.ndarray:
    tr = load_trace(path, spec.format)
    t = tr.arrival_s
    keep = t >= spec.start_s
    out = (t[keep] - spec.start_s) * spec.time_scale
    out = out[out < horizon]
    return out[:limit] if limit is not None else out


def trace_rows(spec: S.TraceArrivals, horizon: float, limit: int | None, path: str) -> np.ndarray:
    """Indices of the trace rows that :func:`trace` keeps (for pairing lengths with arrivals)."""
    tr = load_trace(path, spec.format)
    idx = np.flatnonzero(tr.arrival_s >= spec.start_s)
    t = (tr.arrival_s[idx] - spec.start_s) * spec.time_scale
    idx = idx[t < horizon]
    return idx[:limit] if limit is not None else idx


def offline(spec: S.Offline, rng: np.random.Generator, horizon: float, limit: int | None, **_: object) -> np.ndarray:
    return np.zeros(limit or 0)


def closed_loop(spec: S.ClosedLoop, rng: np.random.Generator, horizon: float, limit: int | None, **_: object) -> np.ndarray:
    """The first request of every client, at time zero; the rest are made as requests finish."""
    n = spec.clients if limit is None else min(spec.clients, limit)
    return np.zeros(n)


# --------------------------------------------------------------------------- load stages
#
# inference-perf's timers, read at kubernetes-sigs/inference-perf@3b6f82a03d75212b06c5e0bdef7710b04c033300
# (Nov 2025; its LoadConfig and SharedPrefix fields are exactly those of the blis-training runs'
# results/config.yaml) and unchanged at @7de5ef2 (Aug 2026), inference_perf/loadgen/load_timer.py:
# - ConstantLoadTimer(rate, duration): num_requests = int(rate * duration); intervals =
#   exponential(1 / rate, num_requests), rescaled by duration / sum(intervals); the request times
#   are the running sum from the stage start. Not evenly spaced: the count is exact and the last
#   request lands on the stage's end.
# - PoissonLoadTimer(rate): each second, req_count = poisson(rate); none: skip the second; else
#   ConstantLoadTimer(req_count, 1.0) spreads them over that second. load_generator.py run_stage
#   takes num_requests = int(rate * duration) times from it, whatever time they reach.
# - load_generator.py run_stage / mp_run: stages run in order; the next starts after every request
#   of this one has finished, a sleep of load.interval (1.0 s) and a 1 s head start.


def _ip_constant(rng: np.random.Generator, rate: float, duration: float) -> np.ndarray:
    n = int(rate * duration)  # as inference-perf counts (int() truncates)
    gaps = rng.exponential(1.0 / rate, n)
    t = np.cumsum(gaps * (duration / gaps.sum()))
    t[-1] = duration  # exactly, not off by rounding
    return t


def _ip_poisson(rng: np.random.Generator, rate: float, duration: float) -> np.ndarray:
    n = int(rate * duration)
    parts: list[np.ndarray] = []
    second = 0
    have = 0
    while have < n:
        counts = rng.poisson(rate, max(16, int(1.2 * (n - have) / rate) + 16))
        busy = np.flatnonzero(counts)
        c = counts[busy]
        gaps = rng.exponential(1.0, int(c.sum()))  # the scale cancels in the rescaling
        ends = np.cumsum(c)
        run = np.cumsum(gaps)
        before = np.concatenate(([0.0], run[ends[:-1] - 1])) if len(c) else np.empty(0)
        total = run[ends - 1] - before if len(c) else np.empty(0)
        seg = np.repeat(np.arange(len(c)), c)
        frac = (run - before[seg]) / total[seg]  # in (0, 1], the second's last request on its end
        parts.append(second + busy[seg] + frac)
        second += len(counts)
        have += len(frac)
    return np.concatenate(parts)[:n] if parts else np.empty(0)


def _deterministic_stage(rng: np.random.Generator, rate: float, duration: float) -> np.ndarray:
    n = int(rate * duration)
    return np.minimum(np.arange(1, n + 1, dtype=np.float64) / rate, duration)


def stage_arrivals(spec: S.MultiStage, rng: np.random.Generator, horizon: float,
                   limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times of a ``multi_stage`` process and the stage of each (0, 1, ...). A stage starts
    ``gap_s`` after the one before it ended: at its last request for the inference_perf
    processes, at the end of its window for the others. Raises ValueError when the stages, as
    written, would run past the horizon."""
    end = spec.nominal_end_s
    if end > horizon:
        raise ValueError(f"the stages run {end:g} s (durations plus gap_s) but horizon_s is {horizon:g}; raise "
                         f"horizon_s to at least {end:g} or shorten the stages")
    times: list[np.ndarray] = []
    stage: list[np.ndarray] = []
    start = 0.0
    for k, st in enumerate(spec.stages):
        rate, dur = st.rate_per_s, st.duration_s
        if spec.process == "inference_perf_constant":
            t = _ip_constant(rng, rate, dur)
        elif spec.process == "inference_perf_poisson":
            t = _ip_poisson(rng, rate, dur)
        elif spec.process == "deterministic":
            t = _deterministic_stage(rng, rate, dur)
        elif spec.process == "poisson":
            t = _renewal(lambda n, s=1.0 / rate: rng.exponential(s, n), 1.0 / rate, dur, None)
        else:  # gamma
            assert spec.cv is not None
            shape = 1.0 / spec.cv**2
            t = _renewal(lambda n, k=shape, s=1.0 / (rate * shape): rng.gamma(k, s, n), 1.0 / rate, dur, None)
        t = start + t
        times.append(t)
        stage.append(np.full(len(t), k, dtype=np.int64))
        # inference-perf moves on once a stage's requests are sent (and answered: not modelled);
        # the other processes fill a window of the stage's duration.
        ip = spec.process.startswith("inference_perf")
        start = (float(t[-1]) if ip else start + dur) + spec.gap_s
    out = np.concatenate(times)
    idx = np.concatenate(stage)
    # Only inference_perf_poisson can overrun the stages' nominal end; an arrival on the horizon
    # itself (the last stage's end) is kept.
    keep = out <= horizon
    out, idx = out[keep], idx[keep]
    if limit is not None:
        out, idx = out[:limit], idx[:limit]
    return out, idx


def multi_stage(spec: S.MultiStage, rng: np.random.Generator, horizon: float, limit: int | None, **_: object) -> np.ndarray:
    return stage_arrivals(spec, rng, horizon, limit)[0]


ARRIVALS: dict[str, Callable[..., np.ndarray]] = {
    "offline": offline,
    "closed_loop": closed_loop,
    "poisson": poisson,
    "gamma": gamma,
    "deterministic": deterministic,
    "trace": trace,
    "multi_stage": multi_stage,
}


# --------------------------------------------------------------------------- sizes


def _g(x: float) -> str:
    return f"{x:g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


@dataclass(frozen=True)
class Count:
    """How many arrivals a process makes, known before any is drawn (a run's size,
    scenario/size.py): ``n``, how it was counted, and the field (below the workload) that sets it."""

    n: float
    how: str
    field: tuple[str, ...]


def expected_count(spec: S.Arrival, horizon: float, limit: int | None, *, path: str = "",
                   limit_field: str = "max_requests", unit: str = "requests") -> Count:
    """The arrivals ``spec`` generates (or, for a closed loop, may make) over ``horizon`` seconds,
    as the functions above build them: a renewal process stops at ``limit``, a multi_stage
    process builds every stage before the horizon and ``limit`` cut it, a trace keeps its rows
    inside the horizon. ``path``: the trace file of a ``trace`` process; ``limit_field`` and
    ``unit`` name the limit and what arrives (a fleet's max_tasks and tasks)."""
    def capped(n: float, how: str, field: tuple[str, ...]) -> Count:
        if limit is not None and limit < n:
            return Count(float(limit), f"{limit_field} {limit:,}", (limit_field,))
        return Count(n, how, field)

    if isinstance(spec, (S.Poisson, S.GammaArrivals, S.Deterministic)):
        return capped(spec.rate_per_s * horizon, f"{_g(spec.rate_per_s)} {unit}/s x horizon_s {_g(horizon)}",
                      ("arrival", "rate_per_s"))
    if isinstance(spec, S.Offline):
        return Count(float(limit or 0), f"{limit_field} {limit or 0:,} at time zero", (limit_field,))
    if isinstance(spec, S.ClosedLoop):
        c = spec.clients
        if spec.think_time_s > 0:  # a client sends at most one request per think time
            return capped(c * (1.0 + horizon / spec.think_time_s),
                          f"at most {c:,} clients x (1 + horizon_s {_g(horizon)} / think_time_s {_g(spec.think_time_s)}) {unit}",
                          ("arrival", "clients"))
        # Without think time a client's next request waits only for the last one: how many that
        # makes is known by running; the clients' first requests are what is built up front.
        return capped(float(c), f"{c:,} clients' first requests (set {limit_field} to bound the rest)", ("arrival", "clients"))
    if isinstance(spec, S.TraceArrivals):
        if not path:
            return Count(0.0, "an unreadable trace", ("arrival", "path"))
        t = load_trace(path, spec.format).arrival_s
        t = (t[t >= spec.start_s] - spec.start_s) * spec.time_scale
        return capped(float(np.count_nonzero(t < horizon)), "the trace's rows inside the horizon", ("arrival", "path"))
    assert isinstance(spec, S.MultiStage)
    whole = spec.process in ("inference_perf_constant", "inference_perf_poisson", "deterministic")
    each = [st.rate_per_s * st.duration_s for st in spec.stages]
    n = sum(float(int(x)) if whole and np.isfinite(x) else x for x in each)
    # Every stage is built before max_requests cuts it (stage_arrivals), so the limit does not bound this.
    return Count(n, f"{len(spec.stages)} stage(s), the sum of rate_per_s x duration_s", ("arrival", "stages"))
