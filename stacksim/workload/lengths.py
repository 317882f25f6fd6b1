"""Token-length distributions: each draws ``n`` positive integers."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from stacksim.scenario import schema as S
from stacksim.workload.traces import load_trace


def fixed(spec: S.FixedLength, rng: np.random.Generator, n: int, **_: object) -> np.ndarray:
    return np.full(n, spec.value, dtype=np.int64)


def lognormal(spec: S.LognormalLength, rng: np.random.Generator, n: int, **_: object) -> np.ndarray:
    """Rounded lognormal; values outside [min, max] are redrawn (a truncated distribution)."""
    mu = np.log(spec.median)
    hi = spec.max if spec.max is not None else np.iinfo(np.int64).max // 4
    out = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    for _attempt in range(64):
        if todo.size == 0:
            break
        x = np.rint(rng.lognormal(mu, spec.sigma, todo.size))
        ok = (x >= spec.min) & (x <= hi)
        out[todo[ok]] = x[ok].astype(np.int64)
        todo = todo[~ok]
    if todo.size and spec.sigma > 0:
        # Still outside after 64 redraws: the bounds hold a small share of the distribution
        # (validation refuses under 1%, schema.LognormalLength). Draw the rest from the same
        # truncated distribution by inverting its CDF, so a run never fails on what validation
        # accepted; runs that never get here consume the same random numbers as before. Imported
        # here, on this rare path only: scipy.special takes a while to import.
        from scipy.special import ndtr, ndtri

        a = (np.log(spec.min - 0.5) - mu) / spec.sigma
        b = (np.log(hi + 0.5) - mu) / spec.sigma
        flip = a > 0  # work in the lower tail, where ndtr keeps its precision
        lo_z, hi_z = (-b, -a) if flip else (a, b)
        z = ndtri(rng.uniform(ndtr(lo_z), ndtr(hi_z), todo.size))
        x = np.rint(np.exp(mu + spec.sigma * (-z if flip else z)))
        out[todo] = np.clip(x, spec.min, hi).astype(np.int64)
        todo = todo[:0]
    if todo.size:
        raise ValueError(
            f"lognormal(median={spec.median}, sigma={spec.sigma}) almost never falls in "
            f"[{spec.min}, {spec.max}]; widen the bounds"
        )
    return out


def exponential(spec: S.ExponentialLength, rng: np.random.Generator, n: int, **_: object) -> np.ndarray:
    return rng.geometric(1.0 / spec.mean, n).astype(np.int64)


def uniform(spec: S.UniformLength, rng: np.random.Generator, n: int, **_: object) -> np.ndarray:
    return rng.integers(spec.low, spec.high + 1, n, dtype=np.int64)


def empirical(spec: S.EmpiricalLength, rng: np.random.Generator, n: int, *, path: str, which: str, **_: object) -> np.ndarray:
    tr = load_trace(path, spec.format)
    col = tr.input_tokens if (spec.field or which) == "input" else tr.output_tokens
    col = col[col > 0]
    if col.size == 0:
        raise ValueError(f"trace '{path}' has no positive {spec.field or which} lengths")
    return rng.choice(col, size=n, replace=True).astype(np.int64)


LENGTHS: dict[str, Callable[..., np.ndarray]] = {
    "fixed": fixed,
    "lognormal": lognormal,
    "exponential": exponential,
    "uniform": uniform,
    "empirical": empirical,
}


def mean_length(spec: S.Length, *, path: str = "", which: str = "input", fmt: str | None = None) -> float:
    """The mean of a length distribution, known without drawing (a run's size, scenario/size.py).
    lognormal: exp(mu + sigma^2 / 2), within [min, max] (its truncation keeps the mean there);
    exponential: the geometric's mean, ``mean``; empirical and trace: the file's column (``path``;
    0 when it could not be read; ``fmt``: a trace spec's format, its arrival's). ``which``: the
    column a trace-backed spec describes."""
    if isinstance(spec, S.FixedLength):
        return float(spec.value)
    if isinstance(spec, S.LognormalLength):
        half_var = spec.sigma**2 / 2
        m = spec.median * math.exp(half_var) if half_var < 700 else math.inf  # exp(709) is float64's largest
        return max(float(spec.min), min(m, float(spec.max) if spec.max is not None else m))
    if isinstance(spec, S.ExponentialLength):
        return float(spec.mean)
    if isinstance(spec, S.UniformLength):
        return (spec.low + spec.high) / 2
    if not path:
        return 0.0
    tr = load_trace(path, spec.format if isinstance(spec, S.EmpiricalLength) else fmt)
    col = tr.input_tokens if ((getattr(spec, "field", None) or which) == "input") else tr.output_tokens
    col = col[col > 0] if isinstance(spec, S.EmpiricalLength) else np.maximum(col, 1)  # as the draws use them
    return float(col.mean()) if col.size else 0.0
