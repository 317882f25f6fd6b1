"""Metrics: per-request records (tallies) and time-weighted levels.

Requests live in a column store of numpy arrays (one slot per request id) that becomes one
DataFrame at the end. Levels (queue length, batch size, KV occupancy, busy) integrate their value
over time into fixed-width bins, so a plot over time costs one float per bin, not one per event.
"""

from __future__ import annotations

import numpy as np

from stacksim.kernels.cost import level_set as _level_set

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


class RequestTable:
    """Columns of per-request records, indexed by request id; grows by doubling."""

    FLOAT_COLS = ("arrival_s", "admitted_s", "first_token_s", "finish_s")
    INT_COLS = ("input_tokens", "output_tokens", "workload", "deployment", "replica", "preemptions", "status")

    def __init__(self, capacity: int = 1024):
        self.n = 0
        cap = max(16, capacity)
        for c in self.FLOAT_COLS:
            setattr(self, c, np.full(cap, np.nan))
        for c in self.INT_COLS:
            setattr(self, c, np.full(cap, -1 if c in ("deployment", "replica") else 0, dtype=np.int64))

    @property
    def capacity(self) -> int:
        return len(self.arrival_s)

    def _grow(self, need: int) -> None:
        cap = self.capacity
        while cap < need:
            cap *= 2
        for c in self.FLOAT_COLS + self.INT_COLS:
            old = getattr(self, c)
            new = np.full(cap, np.nan) if old.dtype.kind == "f" else np.full(cap, 0, dtype=old.dtype)
            if c in ("deployment", "replica"):
                new[:] = -1
            new[: len(old)] = old
            setattr(self, c, new)

    def add_many(self, arrival_s: np.ndarray, input_tokens: np.ndarray, output_tokens: np.ndarray, workload: int) -> np.ndarray:
        """Append requests; returns their ids."""
        k = len(arrival_s)
        if self.n + k > self.capacity:
            self._grow(self.n + k)
        ids = np.arange(self.n, self.n + k)
        self.arrival_s[ids] = arrival_s
        self.input_tokens[ids] = input_tokens
        self.output_tokens[ids] = output_tokens
        self.workload[ids] = workload
        self.status[ids] = PENDING
        self.n += k
        return ids

    def trimmed(self) -> dict[str, np.ndarray]:
        return {c: getattr(self, c)[: self.n] for c in self.FLOAT_COLS + self.INT_COLS}


class Levels:
    """Up to four time-weighted levels sharing one clock, integrated into bins of ``width_s``.

    The arithmetic is the Numba kernel :func:`stacksim.kernels.cost.level_set` (called at every
    state change, so it is hot); bins cover ``[0, max_time_s)`` and later time piles into the last.
    """

    def __init__(self, names: tuple[str, ...], width_s: float, max_time_s: float):
        if not 1 <= len(names) <= 4:
            raise ValueError("Levels holds one to four levels")
        self.names = names
        self.width = float(width_s)
        self.acc = np.zeros((int(np.ceil(max_time_s / width_s)) + 1, 4))
        self.state = np.zeros(9)

    def set(self, t: float, v0: float, v1: float = 0.0, v2: float = 0.0, v3: float = 0.0) -> None:
        """The levels change to the given values at time ``t`` (t never goes back)."""
        _level_set(self.acc, self.state, self.width, t, v0, v1, v2, v3)

    def close(self, t: float) -> None:
        s = self.state
        _level_set(self.acc, s, self.width, t, s[1], s[2], s[3], s[4])

    @property
    def t_last(self) -> float:
        return float(self.state[0])

    def peak(self, name: str) -> float:
        return float(self.state[5 + self.names.index(name)])

    def n_bins(self) -> int:
        return int(np.ceil(self.t_last / self.width)) if self.t_last > 0 else 0

    def series(self, name: str) -> np.ndarray:
        """Per-bin time-averaged value of ``name`` up to the last recorded time."""
        i = self.names.index(name)
        return self.acc[: self.n_bins(), i] / self.width

    def mean(self, name: str, t_start: float, t_end: float) -> float:
        """Time-average over [t_start, t_end]; edges are resolved to the bin width."""
        if t_end <= t_start:
            return 0.0
        i = self.names.index(name)
        col = self.acc[:, i]
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
