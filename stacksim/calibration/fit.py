"""Fit the cost kernel's efficiency parameters to measurements and report the error.

A small set of physically meaningful parameters, shared by every accelerator (so a held-out
GPU is predicted from its datasheet and measured matmul ceiling, not from its own rows):

- ``t_half``: tokens in a step at which matmuls reach half their ceiling (held at its
  first-principles value, see serving/costmodel.EFF_HALF_TOKENS);
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
from stacksim.scenario import schema as S
from stacksim.serving import engines
from stacksim.serving.costmodel import (
    LOW_PRECISION,
    apply_calibration,
    compute_precision,
    cost_params,
    link_class,
    memory_plan,
)

ENGINES = ("splitwise-2023", "vllm", "vllm-rocm", "trtllm", "sglang", "vllm-2023")
# SGLang shares vLLM's kernel efficiencies (serving/costmodel.KERNELS_OF); only its overhead is its own.
TIED = {"sglang": "vllm"}
SHARED = ("t_half", "eff_attn", "fp8_eff", "link_eff_scaleup", "link_eff_pcie")
PER_ENGINE = ("eff_scale", "eff_mem", "overhead")
NAMES = SHARED + tuple(f"{k}_{e}" for e in ENGINES for k in PER_ENGINE)
# The parameters a fit can move (a tied engine's efficiencies are its partner's).
FITTED_NAMES = tuple(n for n in NAMES if not any(n.endswith("_" + e) and not n.startswith("overhead") for e in TIED))
# Bounds keep the parameters physical: efficiencies in (0, 1], overheads from 0.1 ms to 50 ms.
# Link efficiency: a share of the datasheet link bandwidth. The all-reduce's fixed latency stays
# at its measured values (serving/costmodel.collective_latency_s, Vidur's NCCL profiles): left free,
# the fit pushed it to 75 us to absorb TP-8 inefficiencies of the large-batch throughput tables,
# which then spoiled batch-8 latencies (vLLM CI) by 12 ms per step.
_LO = {"t_half": 1.0, "eff_attn": 0.05, "fp8_eff": 0.3, "eff_scale": 0.2, "eff_mem": 0.3, "overhead": 1e-4,
       "link_eff_scaleup": 0.05, "link_eff_pcie": 0.05}
_HI = {"t_half": 2048.0, "eff_attn": 1.0, "fp8_eff": 1.0, "eff_scale": 1.3, "eff_mem": 1.0, "overhead": 0.05,
       "link_eff_scaleup": 1.0, "link_eff_pcie": 1.0}
# Start from the first-principles defaults of serving/costmodel.py (the datasheet link bandwidth
# as if fully achieved).
_START = {"t_half": 16.0, "eff_attn": 0.34, "fp8_eff": 1.0, "eff_scale": 1.0, "eff_mem": 0.84, "overhead": 0.002,
          "link_eff_scaleup": 1.0, "link_eff_pcie": 1.0}


def _key(name: str) -> str:
    for e in ENGINES:
        if name.endswith("_" + e):
            return name[: -len(e) - 1]
    return name


LOWER = np.array([_LO[_key(n)] for n in NAMES])
UPPER = np.array([_HI[_key(n)] for n in NAMES])
DEFAULT = np.array([_START[_key(n)] for n in NAMES])
I_T_HALF, I_ATTN, I_FP8, I_LINK_SCALEUP, I_LINK_PCIE = 0, 1, 2, 3, 4
# Weight of the prior: one point's worth of evidence per factor e^0.5 ~ 1.65 away from the
# first-principles value; dozens of measured points overrule it, a handful do not.
PRIOR_SIGMA = 0.5


def engine_slice(e: int) -> tuple[int, int, int]:
    base = len(SHARED) + e * len(PER_ENGINE)
    return base, base + 1, base + 2


@dataclass
class Prepared:
    """A point with its base parameter vector (catalog defaults), ready for fast evaluation.
    Offline points carry the engine's running batch (``batch``) and token budget (``budget``)."""

    point: Point
    base: np.ndarray
    fp8: bool
    engine_index: int
    link: str = "scaleup"
    batch: float = 0.0
    budget: float = 0.0


def offline_batch(pt: Point) -> tuple[float, float]:
    """(running sequences, token budget per step) of an engine under maximum load, from its
    memory plan and scheduler limits. TensorRT-LLM as trtllm-bench builds it (its tuning
    heuristic, KV share 0.95 of free memory as the perf overview runs it, GUARANTEED_NO_EVICT:
    every request reserves isl + osl); vLLM and SGLang with their profile defaults."""
    m, a = get_model(pt.model), get_accelerator(pt.accelerator)
    seq = pt.isl + pt.osl
    eng: S.VllmEngine
    if pt.engine == "trtllm":
        eng = S.TrtllmEngine(**engines.trtllm_bench_engine(m, a, pt.tp, pt.pp, pt.precision, pt.kv, pt.isl, pt.osl))
    elif pt.engine == "sglang":
        eng = engines.concrete(S.SglangEngine(), a, pt.tp)
    else:
        eng = S.VllmEngine()
    budget = int(eng.max_num_batched_tokens or 0)
    plan = memory_plan(m, a, pt.tp, pt.pp, pt.precision, pt.kv, eng.block_size, float(eng.gpu_memory_utilization or 0.0),
                       budget, eng.max_num_seqs, eng.runtime_overhead_gb, of_free_memory=engines.of_free_memory(eng))
    fits = plan.num_blocks // -(-seq // plan.block_size)
    return float(min(eng.max_num_seqs, fits)), float(budget)


def prepare(points: list[Point]) -> list[Prepared]:
    out = []
    for pt in points:
        m, a = get_model(pt.model), get_accelerator(pt.accelerator)
        base = cost_params(m, a, pt.tp, pt.pp, pt.precision, pt.kv, calibration="first_principles")
        pr = Prepared(pt, base, compute_precision(a, pt.precision) in LOW_PRECISION, ENGINES.index(pt.engine), link_class(a))
        if pt.kind == "offline_tok_s":
            pr.batch, pr.budget = offline_batch(pt)
        out.append(pr)
    return out


def offline_steady(p: np.ndarray, batch: float, budget: float, isl: float, osl: float) -> float:
    """Output tokens per second of a replica whose running batch is always full (maximum load).

    In the steady state each of the ``batch`` sequences decodes one token per step and a request
    finishes every ``osl - 1`` steps of its own, so ``batch / (osl - 1)`` new prompts are
    prefilled per step (chunked into the same steps); the token budget caps decodes plus prefill
    tokens. Each request yields ``osl`` tokens, the first from its prefill.
    """
    d = max(osl - 1.0, 1.0)
    b = min(batch, budget / (1.0 + isl / d))
    if b <= 0.0:
        return 0.0
    c = b / d
    t = K.step_time(p, c * isl, c * isl * (isl + 1.0) / 2.0, 0.0, b, b * (isl + 1.0 + d / 2.0), b + c)
    return c * osl / t


def as_params(theta: np.ndarray) -> dict[str, float]:
    return {k: float(v) for k, v in zip(NAMES, theta)}


def apply(theta: np.ndarray, pr: Prepared) -> np.ndarray:
    """The simulator's own calibration step (serving.costmodel.apply_calibration) at ``theta``."""
    return apply_calibration(pr.base, as_params(theta), ENGINES[pr.engine_index], pr.fp8, pr.link)


def predict_point(p: np.ndarray, pt: Point, batch: float = 0.0, budget: float = 0.0) -> float:
    """What the kernel says for this measurement (same units as ``pt.measured``); offline points
    need the engine's running batch and token budget (:func:`offline_batch`)."""
    if pt.kind == "offline_tok_s":
        return offline_steady(p, batch, budget, float(pt.isl), float(pt.osl))
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


def predict(theta: np.ndarray, pr: Prepared) -> float:
    return predict_point(apply(theta, pr), pr.point, pr.batch, pr.budget)


def residuals(theta: np.ndarray, prepared: list[Prepared]) -> np.ndarray:
    return np.array([math.log(max(predict(theta, pr), 1e-12) / pr.point.measured) for pr in prepared])


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
    # t_half stays at its first-principles value (serving/costmodel.EFF_HALF_TOKENS): left free it
    # turns the compute term into a floor above the memory term at small batch.
    free = [I_ATTN] + ([I_FP8] if has_fp8 else [])
    # A link class is free only where points run tensor parallel over it.
    for i, cls in ((I_LINK_SCALEUP, "scaleup"), (I_LINK_PCIE, "pcie")):
        if any(pr.link == cls and pr.point.tp > 1 for pr in prepared):
            free.append(i)
    for e in sorted(engines_present):
        # A tied engine's kernel efficiencies are its partner's: only its overhead is free.
        free += [engine_slice(e)[2]] if ENGINES[e] in TIED else list(engine_slice(e))

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
    return np.array([abs(predict(theta, pr) / pr.point.measured - 1.0) for pr in prepared])


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
