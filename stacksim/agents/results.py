"""The agents' part of a run's results: one row per task (``tasks.parquet``), the ``agents``
section of ``summary.json`` (task latency and its breakdown, tokens, calls and dollars per task,
token amplification, prompt-cache reuse, tools and vector stores, budgets and timeouts)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stacksim.agents.runtime import TASK_STATUSES

if TYPE_CHECKING:
    from stacksim.engine.simulation import Simulation


def tasks_frame(sim: Simulation) -> pd.DataFrame:
    ag = sim.agents
    assert ag is not None
    rs = ag.roots
    fleets = ag.fleet_names
    col = lambda f: np.array([f(r) for r in rs])
    max_depth = max((d for r in rs for d in r.tokens_by_depth), default=0)
    df = pd.DataFrame({
        "task_id": col(lambda r: r.tid).astype(np.int64),
        "fleet": pd.Categorical.from_codes(col(lambda r: r.fleet).astype(np.int64), categories=fleets) if rs else pd.Categorical([]),
        "arrival_s": col(lambda r: r.arrival).astype(float),
        "start_s": col(lambda r: r.begin).astype(float),
        "end_s": col(lambda r: r.end).astype(float),
        "status": pd.Categorical([r.status for r in rs], categories=TASK_STATUSES),
        "steps": col(lambda r: r.steps).astype(np.int64),
        "llm_calls": col(lambda r: r.llm_calls).astype(np.int64),
        "tool_calls": col(lambda r: r.tool_calls).astype(np.int64),
        "tool_failures": col(lambda r: r.tool_failures).astype(np.int64),
        "retrievals": col(lambda r: r.retrievals).astype(np.int64),
        "memory_ops": col(lambda r: r.memory_ops).astype(np.int64),
        "subagents": col(lambda r: r.subagents).astype(np.int64),
        "input_tokens": col(lambda r: r.input_tokens).astype(np.int64),
        "output_tokens": col(lambda r: r.output_tokens).astype(np.int64),
        "cached_input_tokens": col(lambda r: r.cached_tokens).astype(np.int64),
        "content_tokens": col(lambda r: r.content_tokens).astype(np.int64),
        "cost_usd": col(lambda r: r.usd).astype(float),
        "llm_s": col(lambda r: r.time["llm"]).astype(float),
        "tool_s": col(lambda r: r.time["tool"]).astype(float),
        "retrieval_s": col(lambda r: r.time["retrieval"]).astype(float),
        "subagent_s": col(lambda r: r.time["subagent"]).astype(float),
    })
    for d in range(max_depth + 1):
        df[f"tokens_depth_{d}"] = col(lambda r: r.tokens_by_depth.get(d, 0)).astype(np.int64)  # noqa: B023
        df[f"llm_calls_depth_{d}"] = col(lambda r: r.calls_by_depth.get(d, 0)).astype(np.int64)  # noqa: B023
    df["latency_s"] = df["end_s"] - df["arrival_s"]
    df["queue_s"] = df["start_s"] - df["arrival_s"]
    return df


def _stats_s(x: np.ndarray) -> dict[str, float | int | None]:
    x = x[~np.isnan(x)]
    if not x.size:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None}
    p = np.percentile(x, [50, 90, 99])
    return {"count": int(x.size), "mean": round(float(x.mean()), 4), "p50": round(float(p[0]), 4),
            "p90": round(float(p[1]), 4), "p99": round(float(p[2]), 4)}


def _mean(df: pd.DataFrame, col: str, nd: int = 4) -> float | None:
    return round(float(df[col].mean()), nd) if len(df) else None


def _by_agent(roots: list[Any], total_tokens: float) -> dict[str, Any]:
    """Tokens and LLM calls by agent (an orchestrator and its sub-agents apart)."""
    toks: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for r in roots:
        toks.update(r.tokens_by_agent)
        calls.update(r.calls_by_agent)
    n = max(len(roots), 1)
    return {a: {"tokens_per_task": round(toks[a] / n, 1), "llm_calls_per_task": round(calls[a] / n, 3),
                "token_share": round(toks[a] / total_tokens, 4) if total_tokens > 0 else None} for a in sorted(toks)}


def _fleet(sub: pd.DataFrame, warmup: float, roots: list[Any]) -> dict[str, Any]:
    done = sub[(sub["status"] == "completed") & (sub["arrival_s"] >= warmup)]
    tokens = sub["input_tokens"] + sub["output_tokens"]
    content = sub["content_tokens"].to_numpy()
    ended = sub[sub["status"] != "running"]
    depth_cols = sorted(c for c in sub.columns if c.startswith("tokens_depth_"))
    total_tokens = float(tokens.sum())
    return {
        "tasks": {"arrived": len(sub), **{s: int((sub["status"] == s).sum()) for s in sub["status"].cat.categories}},
        "latency_s": _stats_s(done["latency_s"].to_numpy()),
        "breakdown_s": {  # means over completed tasks; the top-level agent's own time per kind
            "queue": _mean(done, "queue_s"), "llm": _mean(done, "llm_s"), "tool": _mean(done, "tool_s"),
            "retrieval": _mean(done, "retrieval_s"), "subagents": _mean(done, "subagent_s"),
        },
        "per_task": {
            "llm_calls": _mean(ended, "llm_calls", 3), "tool_calls": _mean(ended, "tool_calls", 3),
            "subagents": _mean(ended, "subagents", 3), "input_tokens": _mean(ended, "input_tokens", 1),
            "output_tokens": _mean(ended, "output_tokens", 1), "cost_usd": _mean(ended, "cost_usd", 6),
        },
        "token_amplification": round(total_tokens / float(content.sum()), 4) if content.sum() > 0 else None,
        "by_agent": _by_agent(roots, total_tokens),
        "tokens_by_depth_share": {c.removeprefix("tokens_depth_"): round(float(sub[c].sum()) / total_tokens, 4)
                                  for c in depth_cols} if total_tokens > 0 else {},
        "cached_input_share": round(float(sub["cached_input_tokens"].sum()) / max(float(sub["input_tokens"].sum()), 1.0), 4),
        "tool_failures": int(sub["tool_failures"].sum()),
        "cost_usd": round(float(sub["cost_usd"].sum()), 6),
    }


def agents_summary(sim: Simulation, tasks: pd.DataFrame, end: float) -> dict[str, Any]:
    ag = sim.agents
    assert ag is not None
    warmup = sim.rs.scenario.warmup_s
    out: dict[str, Any] = {
        "basis": "token_amplification = input + output tokens sent to models / the same work as single-shot chat "
        "(system prompts, step inputs, outputs, tool results, retrieved chunks and sub-agent summaries, each counted once); "
        "breakdown_s is the top-level agent's own time; cached_input_share counts provider prompt-cache hits and "
        "replica prefix-cache hits",
        "all": _fleet(tasks, warmup, ag.roots),
        "fleets": {n: _fleet(tasks[tasks["fleet"] == n], warmup, [r for r in ag.roots if r.fleet == i])
                   for i, n in enumerate(ag.fleet_names)},
        "tools": {},
        "vector_stores": {n: s.summary(end) for n, s in ag.stores.items()},
        "spans": len(ag.spans),
    }
    for n, t in ag.tools.items():
        cap = t.spec.concurrency
        out["tools"][n] = {
            "calls": t.calls, "failures": t.failures, "rate_limited": t.rate_limited,
            "failure_share": round((t.failures + t.rate_limited) / max(t.calls, 1), 6),
            "utilisation": round(t.busy_s / (end * cap), 6) if cap and end > 0 else None,
            "mean_in_use": round(t.busy_s / end, 4) if end > 0 else None,
            "mean_wait_ms": round(t.wait_s / max(t.calls, 1) * 1000.0, 4),
        }
    statuses = Counter(str(s) for s in tasks["status"])
    out["stopped"] = {k: statuses.get(k, 0) for k in ("timeout", "budget_steps", "budget_tokens", "budget_usd", "failed")}
    return out
