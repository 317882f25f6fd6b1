"""The cheapest mix of GPU types for a workload, by request size: Mélange's allocation.

Mélange (Griggs et al., 2024, arXiv 2404.14527; tyler-griggs/melange-release, ``melange/solver.py``)
frames GPU selection as cost-aware bin packing:

1. Requests are bucketed by (input length, output length) on a grid; the workload is the share of
   its requests in each bucket times the total rate (:func:`bucket_shares`).
2. Each GPU type is profiled offline: the highest rate of one bucket's requests one replica
   sustains within the latency SLO (``tput[type][bucket]``, requests/s; 0 where it cannot).
3. Each bucket's rate is cut into ``slice_factor`` equal slices; a slice goes to one GPU type and
   takes ``slice_rate / tput`` of a replica; a type's replicas are the integer ceiling of its
   load. The cheapest assignment is an integer linear program (:func:`cheapest_mix`, solved with
   SciPy's HiGHS MILP).

A single-type fleet (:func:`cheapest_single`) is the same packing with one type allowed: the
baseline Mélange compares against. Everything here is pure arithmetic on the profile; the
profiling and the check that a fleet meets its SLO are simulations (scenarios/papers/reproduce.py).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

Bucket = tuple[int, int]  # (input upper edge, output upper edge) in tokens


@dataclass(frozen=True)
class Allocation:
    """Replicas per GPU type, and which types serve each bucket (share of its rate per type)."""

    replicas: dict[str, int]
    assign: dict[Bucket, dict[str, float]]
    usd_per_h: float


def bucket_of(lengths: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    """Index of the smallest edge >= each length (lengths above the last edge take the last)."""
    idx = np.searchsorted(np.asarray(edges), lengths, side="left")
    return np.minimum(idx, len(edges) - 1)


def bucket_shares(inp: np.ndarray, out: np.ndarray, in_edges: Sequence[int],
                  out_edges: Sequence[int]) -> dict[Bucket, float]:
    """Share of requests per (input edge, output edge) bucket; a request belongs to the smallest
    bucket that holds both its lengths, so a bucket's profile (taken at its edges) bounds it."""
    if len(inp) != len(out) or len(inp) == 0:
        raise ValueError("need as many input as output lengths, at least one")
    i = bucket_of(inp, in_edges)
    o = bucket_of(out, out_edges)
    keys, counts = np.unique(np.stack([i, o], axis=1), axis=0, return_counts=True)
    n = float(len(inp))
    return {(int(in_edges[a]), int(out_edges[b])): c / n for (a, b), c in zip(keys, counts, strict=True)}


# A bucket's share of a replica is at least this, so that a slice's (at most 16 slices) stays
# above the MILP solver's integrality tolerance (1e-6): below it a type could carry a vanishing
# load on zero replicas.
MIN_LOAD = 1e-4


def _load(rate: float, tput: float) -> float:
    """Replicas of a type that a bucket's whole rate takes; a slice takes 1/slice_factor of it,
    so one type carrying every slice carries exactly what cheapest_single counts."""
    return max(rate / tput, MIN_LOAD)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1 for a solver call: HiGHS prints a stray debug line
    ("HighsMipSolverData::transformNewIntegerFeasibleSolution tmpSolver.run();") at random, whatever
    its output options (ERGO-Code/HiGHS issue #2783, fixed after the release SciPy bundles)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (captured, notebook): nothing to guard
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _replicas(load: float) -> int:
    return max(0, math.ceil(load - 1e-9))


def cheapest_single(rates: Mapping[Bucket, float], tput: Mapping[str, Mapping[Bucket, float]],
                    prices: Mapping[str, float]) -> Allocation | None:
    """The cheapest fleet of one GPU type serving every bucket (None if no type serves all)."""
    best: Allocation | None = None
    for g in tput:
        if any(rates[b] > 0 and tput[g].get(b, 0.0) <= 0 for b in rates):
            continue
        n = max(1, _replicas(sum(_load(r, tput[g][b]) for b, r in rates.items() if r > 0)))
        alloc = Allocation({g: n}, {b: {g: 1.0} for b in rates}, n * prices[g])
        if best is None or alloc.usd_per_h < best.usd_per_h:
            best = alloc
    return best


def cheapest_mix(rates: Mapping[Bucket, float], tput: Mapping[str, Mapping[Bucket, float]],
                 prices: Mapping[str, float], slice_factor: int = 4) -> Allocation:
    """Mélange's ILP: minimise sum(price_g * n_g) subject to every slice of every bucket on exactly
    one type, and each type's load (sum of slice_rate / tput) within its n_g replicas."""
    if slice_factor < 1:
        raise ValueError("slice_factor must be >= 1")
    types = list(tput)
    buckets = [b for b, r in rates.items() if r > 0]
    slices = [(b, s) for b in buckets for s in range(slice_factor)]
    # Variables: x[slice, type] (binary) then n[type] (integer).
    nx = len(slices) * len(types)
    nv = nx + len(types)

    def xi(k: int, t: int) -> int:
        return k * len(types) + t

    cost = np.zeros(nv)
    cost[nx:] = [prices[g] for g in types]
    upper = np.full(nv, np.inf)
    rows, lo, hi = [], [], []
    for k, (b, _s) in enumerate(slices):  # each slice on exactly one type that can serve it
        row = np.zeros(nv)
        for t, g in enumerate(types):
            if tput[g].get(b, 0.0) > 0:
                row[xi(k, t)] = 1.0
            else:
                upper[xi(k, t)] = 0.0
        if not row.any():
            raise ValueError(f"no GPU type serves requests of bucket {b} (input <= {b[0]}, output <= {b[1]})")
        rows.append(row)
        lo.append(1.0)
        hi.append(1.0)
    for t, g in enumerate(types):  # load on a type within its replicas
        row = np.zeros(nv)
        for k, (b, _s) in enumerate(slices):
            if tput[g].get(b, 0.0) > 0:
                row[xi(k, t)] = _load(rates[b], tput[g][b]) / slice_factor
        upper[nx + t] = math.ceil(row.sum() + 1e-9)  # no more replicas than carrying every slice it can
        row[nx + t] = -1.0
        rows.append(row)
        lo.append(-np.inf)
        hi.append(0.0)
    upper[:nx] = np.minimum(upper[:nx], 1.0)
    with _quiet_stdout():
        res = milp(cost, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=np.ones(nv),
                   bounds=Bounds(np.zeros(nv), upper))
    if res.x is None:
        raise ValueError(f"the allocation ILP has no solution: {res.message}")
    x = np.rint(res.x)
    assign: dict[Bucket, dict[str, float]] = {}
    load: dict[str, float] = {}
    for k, (b, _s) in enumerate(slices):
        for t, g in enumerate(types):
            if x[xi(k, t)] > 0:
                assign.setdefault(b, {})
                assign[b][g] = assign[b].get(g, 0.0) + 1.0 / slice_factor
                load[g] = load.get(g, 0.0) + _load(rates[b], tput[g][b]) / slice_factor
    # The solver's n is the ceiling of the load up to its tolerances: recount it exactly.
    replicas = {g: max(1, _replicas(x_)) for g, x_ in load.items()}
    return Allocation(replicas, assign, float(sum(n * prices[g] for g, n in replicas.items())))
