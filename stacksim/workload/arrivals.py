"""Arrival processes: each turns its spec into sorted arrival times in [0, horizon).

Gaps are drawn exactly (no clipping), so a Poisson stream's realised rate is its nominal rate
within sampling error: a test checks this.
"""

from __future__ import annotations

from collections.abc import Callable

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


ARRIVALS: dict[str, Callable[..., np.ndarray]] = {
    "offline": offline,
    "closed_loop": closed_loop,
    "poisson": poisson,
    "gamma": gamma,
    "deterministic": deterministic,
    "trace": trace,
}
