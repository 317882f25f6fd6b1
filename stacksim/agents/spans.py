"""Spans: one row per step of an agent task (and per gateway call), in the shape OpenTelemetry
wants them (trace = task, parent span, name, kind, start, end, status, attributes)."""

from __future__ import annotations

import math
from typing import Any


class SpanLog:
    def __init__(self) -> None:
        self.trace: list[int] = []
        self.parent: list[int] = []
        self.name: list[str] = []
        self.kind: list[str] = []
        self.start: list[float] = []
        self.end: list[float] = []
        self.ok: list[bool] = []
        self.attrs: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self.name)

    def open(self, trace: int, parent: int, name: str, kind: str, start: float, attrs: dict[str, Any]) -> int:
        self.trace.append(trace)
        self.parent.append(parent)
        self.name.append(name)
        self.kind.append(kind)
        self.start.append(start)
        self.end.append(math.nan)
        self.ok.append(True)
        self.attrs.append(dict(attrs))
        return len(self.name) - 1

    def close(self, span: int, end: float, ok: bool, attrs: dict[str, Any]) -> None:
        self.end[span] = end
        self.ok[span] = ok
        self.attrs[span].update(attrs)


def spans_frame(sim: Any) -> Any:
    """Every span of the run as a table: agent task steps (trace = task) and gateway calls with
    their attempts (trace = the call, or the agent task that made it). Times are simulated
    seconds; ``attrs`` holds OpenTelemetry attributes (gen_ai.* semantic conventions)."""
    import pandas as pd

    trace: list[str] = []
    sid: list[int] = []
    parent: list[int] = []
    name: list[str] = []
    kind: list[str] = []
    start: list[float] = []
    end: list[float] = []
    ok: list[bool] = []
    attrs: list[dict[str, Any]] = []

    def add(t: str, s: int, p: int, n: str, k: str, a: float, b: float, good: bool, at: dict[str, Any]) -> None:
        trace.append(t), sid.append(s), parent.append(p), name.append(n), kind.append(k)
        start.append(a), end.append(b), ok.append(good), attrs.append(at)

    next_id = 0
    call_span: dict[int, tuple[str, int]] = {}
    ag = getattr(sim, "agents", None)
    if ag is not None:
        log = ag.spans
        for i in range(len(log)):
            t = f"task-{log.trace[i]}"
            e = log.end[i] if not math.isnan(log.end[i]) else sim.end_time
            add(t, i, log.parent[i], log.name[i], log.kind[i], log.start[i], e, log.ok[i], log.attrs[i])
            cid = log.attrs[i].get("stacksim.call_id")
            if cid is not None:
                call_span[int(cid)] = (t, i)
        next_id = len(log)
    gw = getattr(sim, "gateway", None)
    if gw is not None and sim.calls is not None:
        from stacksim.gateway.runtime import DONE_CALL, REASONS

        c = sim.calls
        gspan: dict[int, tuple[str, int]] = {}
        for cid in range(c.n):
            if c.arrival_s[cid] > sim.end_time:
                continue
            t, p = call_span.get(cid, (f"call-{cid}", -1))
            s = next_id
            next_id += 1
            gspan[cid] = (t, s)
            done = int(c.state[cid]) == DONE_CALL
            route = list(gw.plan.groups)[int(c.group[cid])] if c.group[cid] >= 0 else ""
            add(t, s, p, f"gateway {route}", "gateway", float(c.arrival_s[cid]), float(c.finish_s[cid]) if done else sim.end_time,
                done and int(c.http[cid]) == 200, {
                    "stacksim.route": route, "http.response.status_code": int(c.http[cid]),
                    "stacksim.outcome": REASONS[int(c.reason[cid])] if done and c.reason[cid] >= 0 else "running",
                    "gen_ai.usage.input_tokens": int(c.input_tokens[cid]), "gen_ai.usage.output_tokens": int(c.output_tokens[cid]),
                    "stacksim.cost_usd": round(float(c.cost_usd[cid]), 8), "stacksim.retries": int(c.retries[cid]),
                    "stacksim.fallbacks": int(c.fallbacks[cid])})
        for cid, tg, a, b, h, k in zip(gw.a_call, gw.a_target, gw.a_start, gw.a_end, gw.a_http, gw.a_kind):
            if cid not in gspan:
                continue
            t, p = gspan[cid]
            tp = gw.targets[tg]
            add(t, next_id, p, f"attempt {tp.label}", "attempt", a, b, h == 200,
                {"stacksim.target": tp.label, "http.response.status_code": int(h), "stacksim.outcome": k,
                 "server.region": tp.region})
            next_id += 1
    return pd.DataFrame({"trace": trace, "span_id": sid, "parent_id": parent, "name": name, "kind": kind,
                         "start_s": start, "end_s": end, "ok": ok, "attrs": attrs})
