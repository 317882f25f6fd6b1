"""Request traces: the Azure LLM inference CSV (2023) and the Mooncake JSONL (FAST 2025) formats.

Both load into one :class:`Trace` (arrival seconds from the first request, input and output
token counts, and Mooncake's prefix-block hash ids when present). A user's own file in either
format loads the same way.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from stacksim.errors import clip

if TYPE_CHECKING:
    from stacksim.metrics import RequestTable
    from stacksim.scenario.schema import Workload

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length")
# Tokens per hash id in the Mooncake traces (FAST'25 release README: "The block size is 512
# tokens. Identical hash IDs indicate reusable prefix KV cache blocks.").
MOONCAKE_BLOCK_TOKENS = 512


class TraceFormatError(ValueError):
    """A trace file that cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Trace:
    path: str
    format: str
    arrival_s: np.ndarray  # float64, from the first request, non-decreasing
    input_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64
    hash_ids: tuple[tuple[int, ...], ...] | None = None

    def __len__(self) -> int:
        return len(self.arrival_s)


def guess_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "azure"
    if suffix in (".jsonl", ".json"):
        return "mooncake"
    raise TraceFormatError(
        f"cannot tell the format of '{path}' from its extension; set format: azure (CSV with columns "
        f"{', '.join(AZURE_COLUMNS)}) or format: mooncake (JSONL with keys {', '.join(MOONCAKE_KEYS)})"
    )


def _azure(path: str) -> Trace:
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the user's file
        raise TraceFormatError(f"cannot read '{path}' as CSV: {exc}") from None
    missing = [c for c in AZURE_COLUMNS if c not in df.columns]
    if missing:
        raise TraceFormatError(
            f"trace '{path}' has no column {', '.join(repr(m) for m in missing)}; an Azure-format trace "
            f"needs the columns {', '.join(AZURE_COLUMNS)} (found: {', '.join(map(str, df.columns))})"
        )
    if len(df) == 0:
        raise TraceFormatError(f"trace '{path}' has no rows")
    try:
        ts = pd.to_datetime(df["TIMESTAMP"], format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise TraceFormatError(f"trace '{path}': column TIMESTAMP is not a date-time ({exc})") from None
    t = (ts - ts.min()).dt.total_seconds().to_numpy(dtype=np.float64)
    inp = _counts(df["ContextTokens"], path, "ContextTokens")
    out = _counts(df["GeneratedTokens"], path, "GeneratedTokens")
    order = np.argsort(t, kind="stable")
    return Trace(path, "azure", t[order], inp[order], out[order])


def _counts(col: pd.Series, path: str, name: str) -> np.ndarray:
    vals = pd.to_numeric(col, errors="coerce")
    bad = vals.isna() | (vals < 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise TraceFormatError(
            f"trace '{path}': column {name} must hold non-negative token counts; row {row + 2} has "
            f"{col.iloc[row]!r}"
        )
    return vals.to_numpy().astype(np.int64)


def _mooncake(path: str) -> Trace:
    ts, inp, out, hashes = [], [], [], []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except OSError as exc:
        raise TraceFormatError(f"cannot open trace '{path}': {exc.strerror}") from None
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"trace '{path}', line {lineno}: not JSON ({exc.msg})") from None
        missing = [k for k in MOONCAKE_KEYS if k not in rec]
        if missing:
            raise TraceFormatError(
                f"trace '{path}', line {lineno}: missing key {', '.join(repr(m) for m in missing)}; "
                f"a Mooncake-format trace needs {', '.join(MOONCAKE_KEYS)} (and optionally hash_ids)"
            )
        try:
            ts.append(float(rec["timestamp"]) / 1000.0)  # Mooncake timestamps are milliseconds
            inp.append(int(rec["input_length"]))
            out.append(int(rec["output_length"]))
        except (TypeError, ValueError):
            raise TraceFormatError(f"trace '{path}', line {lineno}: non-numeric value") from None
        hashes.append(tuple(int(h) for h in rec.get("hash_ids", ())))
    if not ts:
        raise TraceFormatError(f"trace '{path}' has no records")
    t = np.asarray(ts)
    t -= t.min()
    order = np.argsort(t, kind="stable")
    return Trace(
        path,
        "mooncake",
        t[order],
        np.asarray(inp, dtype=np.int64)[order],
        np.asarray(out, dtype=np.int64)[order],
        tuple(hashes[i] for i in order),
    )


def load_trace(path: str, fmt: str | None = None) -> Trace:
    """Load a trace file (cached by path, format, size and modification time, so an edited file
    is read again)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TraceFormatError(f"trace file '{clip(path, 300)}' does not exist") from None
    except (OSError, ValueError) as exc:  # a path too long, or with a NUL in it
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a valid path"
        raise TraceFormatError(f"cannot open trace '{clip(path, 300)}': {why}") from None
    if not stat.S_ISREG(st.st_mode):  # a device or a named pipe would be read forever, or block
        raise TraceFormatError(f"trace '{clip(path, 300)}' is not a regular file (a device, a named pipe or a "
                               "directory); give an Azure CSV or a Mooncake JSONL file")
    return _load_trace(path, fmt, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _load_trace(path: str, fmt: str | None, size: int, mtime_ns: int) -> Trace:
    fmt = fmt or guess_format(path)
    if fmt == "azure":
        return _azure(path)
    if fmt == "mooncake":
        return _mooncake(path)
    raise TraceFormatError(f"unknown trace format '{fmt}'; valid: azure, mooncake")


def attach_trace_blocks(reqs: RequestTable, ids: np.ndarray, w: Workload, path: str, horizon_s: float) -> int:
    """Give the requests ``ids`` of workload ``w`` the prefix-block hash ids of their trace
    records, so prefix caching can reuse them (Mooncake: one id per 512 tokens). Only for a
    trace replay whose prompt lengths are the trace's own (``input_tokens: {kind: trace}``):
    the ids describe those prompts. Returns how many requests got blocks."""
    from stacksim.scenario import schema as S
    from stacksim.workload.arrivals import trace_rows

    if not isinstance(w.arrival, S.TraceArrivals) or not isinstance(w.input_tokens, S.TraceLength):
        return 0
    tr = load_trace(path, w.arrival.format)
    if tr.hash_ids is None:
        return 0
    rows = trace_rows(w.arrival, horizon_s, w.max_requests, path)
    n = 0
    for rid, row in zip(ids.tolist(), rows.tolist()):
        h = tr.hash_ids[row]
        if h:
            reqs.set_blocks(rid, np.array(h, dtype=np.int64), MOONCAKE_BLOCK_TOKENS)
            n += 1
    return n
