"""Token-length distributions: each draws ``n`` positive integers."""

from __future__ import annotations

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
