"""A deployment's batch iterations as a Chrome trace (the JSON trace-event format that
ui.perfetto.dev and chrome://tracing open): one track per replica, one slice per step or decode
stretch (its iterations, decodes and prefills as arguments), and counter tracks for running and
waiting sequences and free KV blocks. Timestamps are simulated microseconds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

KINDS = {1: "step", 2: "decode stretch", 3: "cut by failure"}
COLUMNS = ["start_s", "end_s", "kind", "iterations", "decodes", "prefills", "running", "waiting", "free_kv_blocks"]


def iterations_frame(sim: Any, deployment: str) -> pd.DataFrame:
    dep = sim.deployments[deployment]
    frames = []
    for r in dep.replicas:
        rows = getattr(r, "trace", None) or []
        f = pd.DataFrame(rows, columns=COLUMNS)
        f.insert(0, "replica", r.index)
        frames.append(f)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["replica", *COLUMNS])
    out["kind"] = out["kind"].map(lambda k: KINDS.get(int(k), "step"))
    for c in ("iterations", "decodes", "prefills", "running", "waiting", "free_kv_blocks"):
        out[c] = out[c].astype("int64")
    return out.sort_values(["replica", "start_s"], kind="stable").reset_index(drop=True)


def chrome_trace(frame: pd.DataFrame, deployment: str) -> dict[str, Any]:
    ev: list[dict[str, Any]] = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": f"deployment {deployment}"}}]
    for rep in sorted(frame["replica"].unique().tolist()):
        ev.append({"name": "thread_name", "ph": "M", "pid": 1, "tid": int(rep), "args": {"name": f"replica {rep}"}})
    for r in frame.itertuples(index=False):
        us, end = r.start_s * 1e6, r.end_s * 1e6
        name = f"{r.kind}: {r.decodes} decode + {r.prefills} prefill" if r.kind == "step" else f"{r.kind} x{r.iterations}: {r.decodes} decode"
        ev.append({"name": name, "cat": r.kind, "ph": "X", "pid": 1, "tid": int(r.replica), "ts": us, "dur": max(end - us, 0.0),
                   "args": {"iterations": int(r.iterations), "decodes": int(r.decodes), "prefills": int(r.prefills)}})
        ev.append({"name": f"replica {r.replica}", "ph": "C", "pid": 1, "ts": us,
                   "args": {"running": int(r.running), "waiting": int(r.waiting), "free KV blocks": int(r.free_kv_blocks)}})
    return {"traceEvents": ev, "displayTimeUnit": "ms", "otherData": {"deployment": deployment, "clock": "simulated"}}


def write_chrome_trace(frame: pd.DataFrame, deployment: str, path: Path) -> Path:
    path.write_text(json.dumps(chrome_trace(frame, deployment)) + "\n", encoding="utf-8")
    return path
