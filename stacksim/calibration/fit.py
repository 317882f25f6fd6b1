"""Fit the cost kernel's efficiency parameters to measurements and report the error.

A small set of physically meaningful parameters, shared by every accelerator (so a held-out
GPU is predicted from its datasheet and measured matmul ceiling, not from its own rows):

- ``t_half``: tokens in a step at which matmuls reach half their ceiling;
- ``eff_attn``: attention kernels' share of dense peak;
- ``fp8_eff``: the real FP8 speed-up relative to the datasheet's 2x;
and per engine family (kernels and schedulers differ between engines and years):
- ``eff_scale_<engine>``: multiplies each accelerator's matmul ceiling (measured max / peak);
- ``eff_mem_<engine>``: achieved share of HBM bandwidth;
- ``overhead_<engine>``: per-step overhead (scheduling, sampling, launches).

Residuals are log(predicted / measured) with a robust (soft-L1) loss, so one bad row cannot pull
the fit, plus a weak prior per parameter (log-normal around its first-principles value, sigma
``PRIOR_SIGMA``): a parameter the data cannot see (the compute ceiling of an engine measured only
at batch 8) stays physical instead of wandering. Cross-validation leaves one accelerator, one
model or one engine out at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from stacksim.calibration.data import Point
from stacksim.catalog import get_accelerator, get_model
from stacksim.kernels import cost as K
from stacksim.serving.costmodel import apply_calibration, compute_precision, cost_params

ENGINES = ("splitwise-2023", "vllm", "vllm-rocm", "trtllm")
SHARED = ("t_half", "eff_attn", "fp8_eff")
PER_ENGINE = ("eff_scale", "eff_mem", "overhead")
NAMES = SHARED + tuple(f"{k}_{e}" for e in ENGINES for k in PER_ENGINE)
# Bounds keep the parameters physical: efficiencies in (0, 1], overheads from 0.1 ms to 50 ms.
_LO = {"t_half": 1.0, "eff_attn": 0.05, "fp8_eff": 0.3, "eff_scale": 0.2, "eff_mem": 0.3, "overhead": 1e-4}
_HI = {"t_half": 2048.0, "eff_attn": 1.0, "fp8_eff": 1.0, "eff_scale": 1.3, "eff_mem": 1.0, "overhead": 0.05}
# Start from the first-principles defaults of serving/costmodel.py.
_START = {"t_half": 128.0, "eff_attn": 0.34, "fp8_eff": 1.0, "eff_scale": 1.0, "eff_mem": 0.84, "overhead": 0.002}


def _key(name: str) -> str:
    for e in ENGINES:
        if name.endswith("_" + e):
            return name[: -len(e) - 1]
    return name


LOWER = np.array([_LO[_key(n)] for n in NAMES])
UPPER = np.array([_HI[_key(n)] for n in NAMES])
DEFAULT = np.array([_START[_key(n)] for n in NAMES])
I_T_HALF, I_ATTN, I_FP8 = 0, 1, 2
# Weight of the prior: one point's worth of evidence per factor e^0.5 ~ 1.65 away from the
# first-principles value; dozens of measured points overrule it, a handful do not.
PRIOR_SIGMA = 0.5


def engine_slice(e: int) -> tuple[int, int, int]:
    base = len(SHARED) + e * len(PER_ENGINE)
    return base, base + 1, base + 2


@dataclass
class Prepared:
    """A point with its base parameter vector (catalog defaults), ready for fast evaluation."""

    point: Point
    base: np.ndarray
    fp8: bool
    engine_index: int


def prepare(points: list[Point]) -> list[Prepared]:
    out = []
    for pt in points:
        m, a = get_model(pt.model), get_accelerator(pt.accelerator)
        base = cost_params(m, a, pt.tp, 1, pt.precision, "auto", calibration="first_principles")
        out.append(Prepared(pt, base, compute_precision(a, pt.precision) == "fp8", ENGINES.index(pt.engine)))
    return out


def as_params(theta: np.ndarray) -> dict[str, float]:
    return {k: float(v) for k, v in zip(NAMES, theta)}


def apply(theta: np.ndarray, pr: Prepared) -> np.ndarray:
    """The simulator's own calibration step (serving.costmodel.apply_calibration) at ``theta``."""
    return apply_calibration(pr.base, as_params(theta), ENGINES[pr.engine_index], pr.fp8)


def predict_point(p: np.ndarray, pt: Point) -> float:
    """What the kernel says for this measurement (same units as ``pt.measured``)."""
    b, s, o = float(pt.batch), float(pt.isl), float(pt.osl)
    if pt.kind == "prefill_ms":
        return K.step_time(p, b * s, b * s * (s + 1) / 2.0, 0.0, 0.0, 0.0, b) * 1000.0
    if pt.kind == "decode_ms":
        return K.step_time(p, 0.0, 0.0, 0.0, b, b * pt.ctx, b) * 1000.0
    prefill = K.step_time(p, b * s, b * s * (s + 1) / 2.0, 0.0, 0.0, 0.0, b)
    # osl - 1 decode steps; the summed context grows linearly, so the midpoint step times the
    # count is exact wherever the roofline does not switch regime within the run.
    steps = max(o - 1.0, 0.0)
    decode = steps * K.step_time(p, 0.0, 0.0, 0.0, b, b * (s + 1.0 + steps / 2.0), b) if steps else 0.0
    if pt.kind == "e2e_ms":
        return (prefill + decode) * 1000.0
    if pt.kind == "static_tok_s_gpu":
        return b * o / (prefill + decode) / pt.tp
    raise ValueError(pt.kind)


def residuals(theta: np.ndarray, prepared: list[Prepared]) -> np.ndarray:
    return np.array([math.log(predict_point(apply(theta, pr), pr.point) / pr.point.measured) for pr in prepared])


@dataclass
class Fit:
    theta: np.ndarray
    cost: float
    n: int
    names: tuple[str, ...] = NAMES
    free: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, float]:
        return as_params(self.theta)


def fit(prepared: list[Prepared], start: np.ndarray | None = None, prior_sigma: float | None = PRIOR_SIGMA) -> Fit:
    """Robust least squares in log space; engines with no points keep their start value."""
    theta0 = (DEFAULT if start is None else start).copy()
    engines_present = {pr.engine_index for pr in prepared}
    has_fp8 = any(pr.fp8 for pr in prepared)
    free = [I_T_HALF, I_ATTN] + ([I_FP8] if has_fp8 else []) + [i for e in sorted(engines_present) for i in engine_slice(e)]

    def res(x: np.ndarray) -> np.ndarray:
        th = theta0.copy()
        th[free] = x
        data = residuals(th, prepared)
        if prior_sigma is None:
            return data
        prior = np.log(th[free] / DEFAULT[free]) / prior_sigma * 0.1  # scaled like a 0.1 data residual
        return np.concatenate([data, prior])

    sol = least_squares(res, theta0[free], bounds=(LOWER[free], UPPER[free]), loss="soft_l1", f_scale=0.1,
                        x_scale="jac", max_nfev=400)
    theta = theta0.copy()
    theta[free] = sol.x
    return Fit(theta, float(sol.cost), len(prepared), free=free)


def ape(theta: np.ndarray, prepared: list[Prepared]) -> np.ndarray:
    """Absolute percentage errors of each point."""
    return np.array([abs(predict_point(apply(theta, pr), pr.point) / pr.point.measured - 1.0) for pr in prepared])


def cross_validate(prepared: list[Prepared], by: str, start: np.ndarray | None = None) -> list[tuple[str, np.ndarray, list[Prepared]]]:
    """Leave one value of ``by`` (accelerator, model or engine) out: fit on the rest, return the
    held-out errors per fold. A held-out engine keeps the starting overhead (it has no rows)."""
    folds = []
    for value in sorted({getattr(pr.point, by) for pr in prepared}):
        train = [pr for pr in prepared if getattr(pr.point, by) != value]
        test = [pr for pr in prepared if getattr(pr.point, by) == value]
        if not train or not test:
            continue
        f = fit(train, start)
        folds.append((value, ape(f.theta, test), test))
    return folds
