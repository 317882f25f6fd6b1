"""Metrics: per-request records (tallies) and time-weighted levels.

Requests live in a column store of numpy arrays (one slot per request id) that becomes one
DataFrame at the end. Levels (queue length, batch size, KV occupancy, busy) integrate their value
over time into fixed-width bins, so a plot over time costs one float per bin, not one per event.
"""

from __future__ import annotations

import numpy as np

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
    """Several time-weighted levels sharing one clock, integrated into bins of ``width_s``."""

    def __init__(self, names: tuple[str, ...], width_s: float, t0: float = 0.0):
        self.names = names
        self.width = float(width_s)
        self.t_last = t0
        self.values = [0.0] * len(names)
        self.bins: list[list[float]] = [[0.0] * len(names)]
        self.area = [0.0] * len(names)
        self.peak = [0.0] * len(names)

    def set(self, t: float, *values: float) -> None:
        """The levels change to ``values`` at time ``t`` (t never goes back)."""
        self._advance(t)
        self.values = list(values)
        pk = self.peak
        for i, v in enumerate(values):
            if v > pk[i]:
                pk[i] = v

    def _advance(self, t: float) -> None:
        t0 = self.t_last
        if t <= t0:
            return
        w = self.width
        vals = self.values
        b = int(t0 // w)
        while True:
            while b >= len(self.bins):
                self.bins.append([0.0] * len(vals))
            edge = (b + 1) * w
            seg_end = t if t < edge else edge
            dt = seg_end - t0
            row = self.bins[b]
            for i, v in enumerate(vals):
                if v:
                    row[i] += v * dt
                    self.area[i] += v * dt
            if seg_end >= t:
                break
            t0 = seg_end
            b += 1
        self.t_last = t

    def close(self, t: float) -> None:
        self._advance(t)

    def mean(self, name: str, t_start: float, t_end: float) -> float:
        """Time-average of a level over [t_start, t_end] (bin resolution at the edges)."""
        i = self.names.index(name)
        arr = self.series(name)
        if t_end <= t_start:
            return 0.0
        b0, b1 = int(t_start // self.width), int(np.ceil(t_end / self.width))
        seg = arr[b0:b1] * self.width
        # Partial edge bins: scale by the covered fraction.
        total = float(seg.sum())
        if b0 < len(arr):
            total -= arr[b0] * (t_start - b0 * self.width)
        if b1 - 1 < len(arr) and b1 * self.width > t_end:
            total -= arr[b1 - 1] * (b1 * self.width - t_end)
        del i
        return total / (t_end - t_start)

    def series(self, name: str) -> np.ndarray:
        """Per-bin time-averaged value of ``name``."""
        i = self.names.index(name)
        return np.array([row[i] for row in self.bins]) / self.width


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
