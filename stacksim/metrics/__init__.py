"""Metrics: per-request records (tallies) and time-weighted levels.

Requests live in a column store of numpy arrays (one column per request id) that becomes one
DataFrame at the end. Levels (queue length, batch size, KV occupancy, busy) integrate their value
over time into fixed-width bins, so a plot over time costs one float per bin, not one per event.
"""

from __future__ import annotations

import numpy as np

from stacksim.kernels.cost import LEVEL_STATE, level_set

# Request status codes (the `status` column).
PENDING, QUEUED, RUNNING, COMPLETED, REJECTED, FAILED = 0, 1, 2, 3, 4, 5
STATUS_NAMES = {
    PENDING: "pending",
    QUEUED: "queued",
    RUNNING: "running",
    COMPLETED: "completed",
    REJECTED: "rejected",
    FAILED: "failed",
}


# Rows of the request table's float block RF and int block RI (the Numba scheduler writes them).
RF_ARRIVAL, RF_ADMITTED, RF_FIRST, RF_FINISH, RF_LAST_TOKEN = range(5)
# KV-cache tiers (serving/kv_offload.py): seconds to load the last lookup's hit from host memory or
# SSD before its prefill (0 without engine.kv_offload).
RF_PFX_LOAD = 5
RF_ROWS = 6
RI_INPUT, RI_OUTPUT, RI_WORKLOAD, RI_DEPLOYMENT, RI_REPLICA, RI_PREEMPTIONS, RI_STATUS, RI_GEN_DONE, RI_CALL = range(9)
# Prefix caching (serving/prefix_cache.py): cached prompt tokens at the first admission
# (exported), the last lookup's hit, and the cache version that lookup saw (0: no blocks attached).
RI_CACHED, RI_PFX_HIT, RI_PFX_VER = 9, 10, 11
# Multi-LoRA (serving/lora.py): the request's adapter, 1..n of its deployment's adapters; 0 = base model.
RI_LORA = 12
RI_ROWS = 13
_F_ROWS = {"arrival_s": RF_ARRIVAL, "admitted_s": RF_ADMITTED, "first_token_s": RF_FIRST, "finish_s": RF_FINISH}
_I_ROWS = {
    "input_tokens": RI_INPUT,
    "output_tokens": RI_OUTPUT,
    "workload": RI_WORKLOAD,
    "deployment": RI_DEPLOYMENT,
    "replica": RI_REPLICA,
    "preemptions": RI_PREEMPTIONS,
    "status": RI_STATUS,
    "call": RI_CALL,  # the gateway call this serving request is an attempt of; -1: sent directly
    "cached_tokens": RI_CACHED,  # prompt tokens served from the prefix cache (first admission)
}


class RequestTable:
    """Per-request records in two blocks, ``RF`` (float64 rows) and ``RI`` (int64 rows), one
    column per request id; named columns (``arrival_s``, ``status``...) are row views.
    Grows by doubling before a run starts.

    A request may carry a prefix description for prefix caching (:meth:`set_blocks`): block hash
    ids kept in ``blocks`` by request id; requests without one never hit the cache."""

    def __init__(self, capacity: int = 1024):
        self.n = 0
        self.blocks: dict[int, tuple[np.ndarray, int]] = {}
        # Prompt tokens whose KV a request brings along (disaggregated decode legs, serving/disagg.py):
        # the prefix cache counts them as present at the request's first admission.
        self.kv_transferred: dict[int, int] = {}
        cap = max(16, capacity)
        self.RF = np.full((RF_ROWS, cap), np.nan)
        self.RF[RF_PFX_LOAD] = 0.0
        self.RI = np.zeros((RI_ROWS, cap), dtype=np.int64)
        self.RI[RI_DEPLOYMENT] = -1
        self.RI[RI_REPLICA] = -1
        self.RI[RI_CALL] = -1

    def __getattr__(self, name: str) -> np.ndarray:
        if name in _F_ROWS:
            return self.RF[_F_ROWS[name]]
        if name in _I_ROWS:
            return self.RI[_I_ROWS[name]]
        raise AttributeError(name)

    @property
    def capacity(self) -> int:
        return self.RF.shape[1]

    def _grow(self, need: int) -> None:
        cap = self.capacity
        while cap < need:
            cap *= 2
        rf = np.full((RF_ROWS, cap), np.nan)
        rf[RF_PFX_LOAD] = 0.0
        ri = np.zeros((RI_ROWS, cap), dtype=np.int64)
        ri[RI_DEPLOYMENT] = -1
        ri[RI_REPLICA] = -1
        ri[RI_CALL] = -1
        rf[:, : self.capacity] = self.RF
        ri[:, : self.capacity] = self.RI
        self.RF, self.RI = rf, ri

    def add_many(self, arrival_s: np.ndarray, input_tokens: np.ndarray, output_tokens: np.ndarray, workload: int) -> np.ndarray:
        """Append requests; returns their ids."""
        k = len(arrival_s)
        if self.n + k > self.capacity:
            self._grow(self.n + k)
        ids = np.arange(self.n, self.n + k)
        self.RF[RF_ARRIVAL, ids] = arrival_s
        self.RI[RI_INPUT, ids] = input_tokens
        self.RI[RI_OUTPUT, ids] = output_tokens
        self.RI[RI_WORKLOAD, ids] = workload
        self.RI[RI_STATUS, ids] = PENDING
        self.n += k
        return ids

    def set_blocks(self, rid: int, hashes: np.ndarray, block_tokens: int) -> None:
        """Describe request ``rid``'s prompt as KV blocks for prefix caching: ``hashes[i]`` names
        the prompt up to the end of its block ``i`` (chained with its parent's hash, as vLLM's
        block hashes and the Mooncake trace's ``hash_ids`` are), each block ``block_tokens``
        tokens long (the last may be partial). Equal ids mean reusable KV; ids share one
        namespace per replica. Call it before the request is submitted to a deployment (before
        the run for traffic generated up front)."""
        if not 0 <= rid < self.n:
            raise ValueError(f"request id {rid} is not in the table (0..{self.n - 1})")
        if block_tokens < 1:
            raise ValueError(f"block_tokens must be at least 1, not {block_tokens}")
        h = np.asarray(hashes, dtype=np.int64).ravel()
        if h.size == 0:
            self.blocks.pop(rid, None)
            self.RI[RI_PFX_VER, rid] = 0
            return
        self.blocks[rid] = (h, int(block_tokens))
        self.RI[RI_PFX_VER, rid] = -1  # no lookup yet (versions start at 1)

    def trimmed(self) -> dict[str, np.ndarray]:
        out = {c: self.RF[r, : self.n] for c, r in _F_ROWS.items()}
        out.update({c: self.RI[r, : self.n] for c, r in _I_ROWS.items()})
        return out


class Levels:
    """Up to four time-weighted levels sharing one clock, integrated into bins of ``width_s``
    by the Numba kernel :func:`level_set` (the fast scheduler calls it from compiled code; the
    reference scheduler through :meth:`set`). Bins cover ``[0, max_time_s)``; later time piles
    into the last bin."""

    def __init__(self, names: tuple[str, ...], width_s: float, max_time_s: float):
        if not 1 <= len(names) <= 4:
            raise ValueError("Levels holds one to four levels")
        self.names = names
        self.width = float(width_s)
        self.acc = np.zeros((int(np.ceil(max_time_s / width_s)) + 1, 4))
        self.state = np.zeros(LEVEL_STATE)
        self.state[9] = self.width

    def set(self, t: float, v0: float, v1: float = 0.0, v2: float = 0.0, v3: float = 0.0) -> None:
        """The levels change to the given values at time ``t`` (t never goes back)."""
        level_set(self.acc, self.state, t, float(v0), float(v1), float(v2), float(v3))

    def value(self, i: int) -> float:
        return float(self.state[1 + i])

    def close(self, t: float) -> None:
        s = self.state
        level_set(self.acc, s, t, s[1], s[2], s[3], s[4])

    @property
    def t_last(self) -> float:
        return float(self.state[0])

    def peak(self, name: str) -> float:
        return float(self.state[5 + self.names.index(name)])

    def n_bins(self) -> int:
        return int(np.ceil(self.t_last / self.width)) if self.t_last > 0 else 0

    def series(self, name: str) -> np.ndarray:
        """Per-bin time-averaged value of ``name`` up to the last recorded time."""
        col = self.acc[:, self.names.index(name)] / self.width
        out = np.zeros(self.n_bins())
        m = min(len(out), len(col))
        out[:m] = col[:m]
        return out

    def mean(self, name: str, t_start: float, t_end: float) -> float:
        """Time-average over [t_start, t_end]; edges are resolved to the bin width."""
        if t_end <= t_start:
            return 0.0
        col = self.acc[:, self.names.index(name)]
        w = self.width
        b0, b1 = int(t_start // w), int(np.ceil(t_end / w))
        total = float(col[b0:b1].sum())
        if b0 < len(col):
            total -= col[b0] * (t_start - b0 * w) / w
        if 0 < b1 <= len(col) and b1 * w > t_end:
            total -= col[b1 - 1] * (b1 * w - t_end) / w
        return total / (t_end - t_start)


def hist_percentiles(hist: np.ndarray, qs: tuple[float, ...], lo: float, ratio: float) -> list[float]:
    """Percentiles (0-100) of a log-binned histogram; each bin reports its geometric midpoint."""
    total = hist.sum()
    if total <= 0:
        return [float("nan")] * len(qs)
    cdf = np.cumsum(hist) / total
    out = []
    for q in qs:
        i = int(np.searchsorted(cdf, q / 100.0, side="left"))
        i = min(i, len(hist) - 1)
        if i == 0:
            out.append(lo)
        else:
            out.append(lo * ratio ** (i - 1) * np.sqrt(ratio))
    return out


def hist_mean(hist: np.ndarray, lo: float, ratio: float) -> float:
    total = hist.sum()
    if total <= 0:
        return float("nan")
    idx = np.arange(len(hist))
    mids = np.where(idx == 0, lo, lo * ratio ** (idx - 1) * np.sqrt(ratio))
    return float((hist * mids).sum() / total)
